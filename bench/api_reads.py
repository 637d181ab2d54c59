"""Read API benchmark (issue 9): authorised patient reads over HTTP, and what the audit chain and
JWT validation cost per read. Prints JSON.

1. Set-up (timed, reported apart): the simulator's events for --patients patients bulk-imported
   through the intake and folded by the projection worker into a fresh database (SQLite by
   default; --database-url, or --postgres for a throwaway database on 127.0.0.1:5432), then a
   `care_coordinator` and a `marketing` API client.
2. `telecrm serve` (one uvicorn worker, its own process, loopback) with the rate limits off
   (TELECRM_RATE_LIMIT_API_RATE=0, TELECRM_RATE_LIMIT_TOKEN_RATE=0: this measures the read path,
   not the limiter). Each role gets a token from `POST /oauth/token`, then `GET /v1/patients/{id}`
   with `X-Telecrm-Reason` on --concurrency keep-alive connections for --seconds, random patients:
   reads/s, p50, p99, errors. Every read is audited; the audit rows written are counted.
3. The naive baseline in the same run: a client that fetches a token (client credentials) for
   every read, against the reused token.
4. Diagnostic: the same server with the read's audit entry monkeypatched away (not a telecrm
   setting; telecrm cannot run like this).
5. In-process, on the same database, no HTTP: the read route's handler with and without its audit
   entry, one thread and --concurrency threads; `append_audit` of one read entry in its own
   transaction against the empty transaction; JWT validation alone (the ES256 check, and the
   whole `TokenService.verify` with its client lookup); then `verify_audit` over the chain.
6. With --py-spy PATH: the server under the care_coordinator load sampled by py-spy, summarised.

    .venv/bin/python bench/api_reads.py
    .venv/bin/python bench/api_reads.py --postgres --py-spy /tmp/pyspy/bin/py-spy
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from fastapi.routing import APIRoute
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_intake import free_port
from bench.read_driver import ReadClient, Reads, profile_summary, run_reads
from bench.sync_support import load_platform, patient_keys
from telecrm.api.access import AccessControl, PatientAccess, build_token_service
from telecrm.api.routes_patients import build_patients_router
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import SystemClock, to_micros
from telecrm.security.audit import AuditEntry, append_audit, verify_audit
from telecrm.security.clients import authenticate_client, create_client, get_client
from telecrm.security.keyring import generate_master_key
from telecrm.security.roles import Role, visible_fields
from telecrm.security.tables import audit_log
from telecrm.security.tokens import Principal
from telecrm.settings import Settings
from telecrm.store.engine import read_only

REASON = "follow-up call"
ROLES = (Role.CARE_COORDINATOR, Role.MARKETING)
PROFILE_RATE = 200  # py-spy samples per second
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
RATE_LIMITS_OFF = {"TELECRM_RATE_LIMIT_API_RATE": "0", "TELECRM_RATE_LIMIT_TOKEN_RATE": "0"}
# The diagnostic server: telecrm's CLI with the read audit entry replaced by a no-op.
NO_AUDIT_SERVER = (
    "import sys; from telecrm.api.access import AccessControl; "
    "AccessControl.record_read = lambda self, *a, **k: None; "
    "from telecrm.cli import app; sys.argv[0] = 'telecrm'; app()"
)


# -- set-up -----------------------------------------------------------------------------------
def fresh_postgres(admin: str) -> tuple[str, Callable[[], None]]:
    """A new database on the admin URL's server (as tests/conftest.py makes them), and its drop."""
    name = f"telecrm_bench_reads_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin)
    url = (
        f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
        f"{info.get('port', '5432')}/{name}"
    )

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def new_runtime(work: Path, url: str, master_key: str) -> Runtime:
    settings = Settings(
        home=work,
        database_url=url,
        master_key=master_key,
        embedded_worker=False,
        messaging=False,  # the projection would plan welcome messages: not what this measures
    )
    return bootstrap(settings, clock=SystemClock())


def add_clients(rt: Runtime) -> dict[Role, tuple[str, str]]:
    made = {}
    with rt.engine.begin() as conn:
        for role in ROLES:
            new = create_client(conn, f"bench-{role.value}", role, now_us=to_micros(rt.clock.now()))
            made[role] = (new.client.client_id, new.secret)
    return made


# -- the server -------------------------------------------------------------------------------
def start_server(work: Path, url: str, master_key: str, port: int, *, audited: bool = True) -> Any:
    env = {
        **os.environ,
        **RATE_LIMITS_OFF,
        "TELECRM_HOME": str(work),
        "TELECRM_DATABASE_URL": url,
        "TELECRM_MASTER_KEY": master_key,
        "TELECRM_EMBEDDED_WORKER": "false",
        "TELECRM_MESSAGING": "false",
        "TELECRM_LOG_LEVEL": "WARNING",
    }
    program = ["-m", "telecrm.cli"] if audited else ["-c", NO_AUDIT_SERVER]
    proc = subprocess.Popen(
        [sys.executable, *program, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)  # waiting for a process to start, not a timer under test
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def stop(proc: Any) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def fetch_token(port: int, client_id: str, secret: str) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def sample_read(port: int, token: str, pid: str) -> dict[str, Any]:
    """One read by hand: what the role's responses hold (checked, not assumed)."""
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/patients/{pid}",
        headers={"Authorization": f"Bearer {token}", "X-Telecrm-Reason": REASON},
        timeout=30,
    )
    response.raise_for_status()
    fields = response.json()["fields"]
    return {
        "fields_returned": len(fields),
        "has_name_and_email": "last_name" in fields and "email" in fields,
        "response_bytes": len(response.content),
    }


def audit_reads(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        query = select(func.count()).select_from(audit_log).where(audit_log.c.action == "read")
        return int(conn.execute(query).scalar_one())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (/proc/<pid>/stat fields 14 and 15)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def http_phase(
    rt: Runtime,
    client: ReadClient,
    *,
    server_pid: int,
    naive: bool,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """Warm-up, then the measured run; the audit rows written against the reads answered 200,
    and the CPU the server and the load generator used (2 cores: is either saturated?)."""
    before = audit_reads(rt)
    warm = run_reads(client, naive=naive, concurrency=concurrency, seconds=min(3.0, seconds))
    server_cpu, own_cpu = cpu_seconds(server_pid), own_cpu_seconds()
    measured = run_reads(client, naive=naive, concurrency=concurrency, seconds=seconds)
    server_cpu, own_cpu = cpu_seconds(server_pid) - server_cpu, own_cpu_seconds() - own_cpu
    ok = warm.statuses.get(200, 0) + measured.statuses.get(200, 0)
    out = measured.summary(concurrency)
    out["server_cpu_cores_busy"] = round(server_cpu / measured.seconds, 2)
    out["server_cpu_ms_per_read"] = round(server_cpu * 1000 / max(1, measured.requests), 3)
    out["loadgen_cpu_cores_busy"] = round(own_cpu / measured.seconds, 2)
    out["read_audit_rows_written"] = audit_reads(rt) - before
    out["reads_answered_200_incl_warmup"] = ok
    return out


# -- in process -------------------------------------------------------------------------------
def timed_us(call: Callable[[], object], seconds: float) -> dict[str, float]:
    """Calls ``call`` for ``seconds``: mean, p50 and p99 in microseconds."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    return {
        "calls": len(samples),
        "mean_us": round(statistics.fmean(samples), 1),
        "p50_us": round(samples[len(samples) // 2], 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1),
    }


def threaded_rate(call: Callable[[], object], threads: int, seconds: float) -> float:
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            call()
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return round(sum(counts) / (time.perf_counter() - started))


def in_process(
    rt: Runtime,
    keys: list[str],
    clients: dict[Role, tuple[str, str]],
    *,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    tokens = build_token_service(rt)
    access = AccessControl(rt, tokens)
    router = build_patients_router(rt, access)
    handler = next(
        r.endpoint
        for r in router.routes
        if isinstance(r, APIRoute)
        and r.path == "/v1/patients/{patient_id}"
        and "GET" in (r.methods or ())
    )
    rng = random.Random(11)
    out: dict[str, Any] = {"database": rt.engine.dialect.name}

    # The read route's handler, as `GET /v1/patients/{id}` runs it after the token check.
    cc_id = clients[Role.CARE_COORDINATOR][0]
    for role in ROLES:
        principal = Principal(clients[role][0], role, tokens.issuer, external=False)
        who = PatientAccess(principal, visible_fields(role), REASON, break_glass=False)

        def read(who: PatientAccess = who) -> object:
            return handler(patient_id=rng.choice(keys), who=who)

        audited = timed_us(read, seconds)
        audited_rate = threaded_rate(read, threads, seconds)
        access.record_read = lambda *a, **k: None  # the diagnostic: no audit entry
        try:
            bare = timed_us(read, seconds)
            bare_rate = threaded_rate(read, threads, seconds)
        finally:
            del access.record_read
        out[f"read_handler_{role.value}"] = {
            "with_audit": audited,
            "without_audit_diagnostic": bare,
            "audit_cost_us_per_read": round(audited["mean_us"] - bare["mean_us"], 1),
            "audit_share_of_handler": round(1 - bare["mean_us"] / audited["mean_us"], 3),
            f"reads_per_s_{threads}_threads_with_audit": audited_rate,
            f"reads_per_s_{threads}_threads_without_audit_diagnostic": bare_rate,
        }

    # append_audit of one read entry in its own transaction, against the empty transaction.
    entry = AuditEntry(
        actor=f"client:{cc_id}",
        action="read",
        record_type="profile",
        record_ids=["pat_placeholder"],
        fields=["first_name", "last_name", "email", "phone", "conditions"],
        purpose=REASON,
    )

    def appended() -> None:
        with rt.engine.begin() as conn:
            append_audit(conn, [entry], at_us=to_micros(rt.clock.now()))

    def empty() -> None:
        with rt.engine.begin():
            pass

    with_entry, without = timed_us(appended, seconds), timed_us(empty, seconds)
    out["append_audit_own_transaction"] = {
        "with_entry": with_entry,
        "empty_transaction": without,
        "append_audit_us": round(with_entry["mean_us"] - without["mean_us"], 1),
        f"appends_per_s_{threads}_threads": threaded_rate(appended, threads, seconds),
    }

    # JWT validation alone.
    with rt.engine.connect() as conn:
        client = get_client(conn, cc_id)
    assert client is not None
    token = tokens.issue(client).access_token
    key = tokens.keys.key(jwt.get_unverified_header(token)["kid"])
    assert key is not None

    def signature_and_claims() -> object:
        return jwt.decode(
            token,
            key.key,
            algorithms=["ES256"],
            audience=tokens.audience,
            issuer=tokens.issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )

    secret = clients[Role.CARE_COORDINATOR][1]

    def client_credentials() -> object:
        with rt.engine.connect() as conn:
            return authenticate_client(conn, cc_id, secret)

    def client_lookup(engine: Any) -> object:
        with engine.connect() as conn:
            return get_client(conn, cc_id)

    out["jwt"] = {
        "es256_decode_and_claims": timed_us(signature_and_claims, seconds),
        "token_service_verify_incl_client_lookup": timed_us(lambda: tokens.verify(token), seconds),
        # What the lookup in verify does (engine.connect(): BEGIN IMMEDIATE on SQLite, the write
        # lock), against the same query on a read-only connection (a diagnostic, not telecrm's).
        "client_lookup_as_verify_does": timed_us(lambda: client_lookup(rt.engine), seconds),
        "client_lookup_read_only_diagnostic": timed_us(
            lambda: client_lookup(read_only(rt.engine)), seconds
        ),
        f"client_lookups_per_s_{threads}_threads_as_verify_does": threaded_rate(
            lambda: client_lookup(rt.engine), threads, seconds
        ),
        f"client_lookups_per_s_{threads}_threads_read_only_diagnostic": threaded_rate(
            lambda: client_lookup(read_only(rt.engine)), threads, seconds
        ),
        f"verifies_per_s_{threads}_threads": threaded_rate(
            lambda: tokens.verify(token), threads, seconds
        ),
        "issue_token": timed_us(lambda: tokens.issue(client), seconds),
        "client_secret_check_scrypt": timed_us(client_credentials, seconds),
    }

    started = time.perf_counter()
    with rt.engine.connect() as conn:
        verified = verify_audit(conn)
    elapsed = time.perf_counter() - started
    out["verify_audit"] = {
        "ok": verified.ok,
        "rows": verified.rows_checked,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(verified.rows_checked / elapsed),
    }
    return out


def basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each HTTP phase")
    parser.add_argument("--concurrency", type=int, default=4, help="connections (and threads)")
    parser.add_argument("--in-process-seconds", type=float, default=3.0)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="an empty database (default: a fresh SQLite file)")
    where.add_argument(
        "--postgres", action="store_true", help=f"a throwaway database on {POSTGRES_ADMIN}"
    )
    parser.add_argument("--py-spy", help="path to py-spy: sample the server under load")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    args = parser.parse_args()

    master_key = generate_master_key()
    drop: Callable[[], None] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = args.database_url or f"sqlite:///{work / 'bench.db'}"
        if args.postgres:
            url, drop = fresh_postgres(POSTGRES_ADMIN)
        try:
            results = run(args, work, url, master_key)
        finally:
            if drop is not None:
                drop()
    print(json.dumps(results, indent=2))


def run(args: argparse.Namespace, work: Path, url: str, master_key: str) -> dict[str, Any]:
    rt = new_runtime(work, url, master_key)
    results: dict[str, Any] = {
        "benchmark": "api_reads",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": rt.engine.dialect.name
        + (" (WAL)" if rt.engine.dialect.name == "sqlite" else ""),
        "server": "telecrm serve --workers 1 (loopback, separate process)",
        "rate_limits": "off for the run: TELECRM_RATE_LIMIT_API_RATE=0 and "
        "TELECRM_RATE_LIMIT_TOKEN_RATE=0 (this measures the read path, not the limiter)",
        "request": "GET /v1/patients/{random id} with Authorization: Bearer and "
        f"X-Telecrm-Reason: {REASON}",
    }
    results["setup"] = load_platform(rt, work, args.patients, args.months, args.seed)
    keys = patient_keys(rt)
    results["setup"]["patients_with_an_id"] = len(keys)
    clients = add_clients(rt)

    port = free_port()
    server = start_server(work, url, master_key, port)
    http: dict[str, Any] = {}
    try:
        for role in ROLES:
            client_id, secret = clients[role]
            token = fetch_token(port, client_id, secret)
            reader = ReadClient(port, keys, REASON, token=token, basic=basic(client_id, secret))
            http[role.value] = {
                **sample_read(port, token, keys[0]),
                **http_phase(
                    rt,
                    reader,
                    server_pid=server.pid,
                    naive=False,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                ),
            }
        cc_id, cc_secret = clients[Role.CARE_COORDINATOR]
        naive = ReadClient(port, keys, REASON, token=None, basic=basic(cc_id, cc_secret))
        http["naive_token_per_read_care_coordinator"] = http_phase(
            rt,
            naive,
            server_pid=server.pid,
            naive=True,
            concurrency=args.concurrency,
            seconds=args.seconds,
        )
        if args.py_spy:
            token = fetch_token(port, cc_id, cc_secret)
            reader = ReadClient(port, keys, REASON, token=token, basic=basic(cc_id, cc_secret))
            results["profile"] = profile_server(args, server.pid, reader, work)
    finally:
        stop(server)

    port = free_port()
    server = start_server(work, url, master_key, port, audited=False)
    try:
        token = fetch_token(port, cc_id, cc_secret)
        reader = ReadClient(port, keys, REASON, token=token, basic=basic(cc_id, cc_secret))
        diagnostic = http_phase(
            rt,
            reader,
            server_pid=server.pid,
            naive=False,
            concurrency=args.concurrency,
            seconds=args.seconds,
        )
        http["diagnostic_care_coordinator_read_audit_patched_out"] = diagnostic
    finally:
        stop(server)
    results["http"] = http

    cc = http[Role.CARE_COORDINATOR.value]["reads_per_s"]
    results["comparison"] = {
        "reused_token_vs_token_per_read": round(
            cc / max(1, http["naive_token_per_read_care_coordinator"]["reads_per_s"]), 1
        ),
        "care_coordinator_vs_marketing_reads_per_s": round(
            cc / max(1, http[Role.MARKETING.value]["reads_per_s"]), 2
        ),
        "audit_patched_out_vs_audited_care_coordinator": round(diagnostic["reads_per_s"] / cc, 2),
    }
    results["in_process"] = in_process(
        rt, keys, clients, threads=args.concurrency, seconds=args.in_process_seconds
    )
    rt.engine.dispose()
    return results


def profile_server(
    args: argparse.Namespace, pid: int, reader: ReadClient, work: Path
) -> dict[str, Any]:
    """py-spy samples the server while care_coordinator reads run: `--gil`, so each sample is the
    one thread then holding the interpreter (one process, one GIL: what its CPU goes to).
    SQLite, psycopg and OpenSSL work with the GIL released does not show (the CPU accounting of
    the HTTP phases counts it)."""
    out_file = work / "profile.txt"
    command = [
        args.py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(args.profile_seconds)),
        "--format",
        "raw",
        "--output",
        str(out_file),
        "--rate",
        str(PROFILE_RATE),
        "--gil",
    ]
    spies: list[subprocess.Popen[bytes]] = []
    # py-spy starts once the load is under way and stops before it ends: every sample is at load.
    starter = threading.Timer(
        1.5,
        lambda: spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ),
    )
    starter.start()
    reads: Reads = run_reads(
        reader, naive=False, concurrency=args.concurrency, seconds=int(args.profile_seconds) + 4
    )
    starter.join()
    spies[0].wait(timeout=120)
    summary = profile_summary(out_file.read_text()) if out_file.exists() else {}
    summary["reads_per_s_while_sampled"] = reads.summary(args.concurrency)["reads_per_s"]
    return summary


if __name__ == "__main__":
    main()
