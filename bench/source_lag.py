"""Database source lag: from a row's commit on the platform to its event stored by telecrm.

For each mode (polling; logical replication on a private `wal_level=logical` cluster started
here, as tests/sources/test_cdc.py does):
1. a platform database with a small simulated world (patients to attach the new rows to);
2. `telecrm sources run platform --follow [--cdc] --interval S --no-process` as a child
   process, telecrm's store on a fresh SQLite file; we wait for its first round (the initial
   load) to finish;
3. a writer commits --rate new support tickets per second (one row per transaction, `updated_at`
   from the database's now()) for --seconds, noting each commit's wall-clock time;
4. a few seconds later the follower is stopped and each ticket's lag is its event's
   `received_us` (stamped at intake, in the storing transaction) minus its commit time.
Prints JSON: p50, p99 and max lag per mode, events missing, and the load average.

    .venv/bin/python bench/source_lag.py --rate 100 --seconds 45 --interval 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import logical_cluster

from telecrm.security.keyring import generate_master_key
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.demo_source import EXAMPLE_MODELS

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "telecrm_bench_lag"
WORLD = SimulationConfig(patients=2000, months=3, seed=5, start=date(2025, 1, 1))
TELECRM = str(Path(sys.executable).parent / "telecrm")


def fresh_platform(admin: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    url = admin.rsplit("/", 1)[0] + f"/{DATABASE}"
    db = PlatformDatabase(url, WORLD)
    db.create(reset=True)
    db.advance()
    return url


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(url: str, *, cdc: bool, rate: float, seconds: float, interval: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix="telecrm-bench-lag-"))
    store = home / "telecrm.db"
    env = {
        **os.environ,
        "TELECRM_HOME": str(home),
        "TELECRM_DATABASE_URL": f"sqlite:///{store}",
        "TELECRM_MASTER_KEY": generate_master_key(),
        "TELECRM_SOURCES_FILE": str(EXAMPLE_MODELS),
        "TELECRM_PLATFORM_DATABASE_URL": url,
        "TELECRM_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    out = home / "follow.out"
    args = [TELECRM, "sources", "run", "platform", "--follow", "--interval", str(interval)]
    args += ["--no-process", *(["--cdc"] if cdc else [])]
    with out.open("w") as sink:
        follower = subprocess.Popen(
            args,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while "new events in" not in out.read_text():  # the first round: the initial load
            if follower.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the follower stopped or hung: {out.read_text()[-500:]}")
            time.sleep(0.2)
        with psycopg.connect(url, autocommit=True) as conn:
            patients = [r[0] for r in conn.execute("SELECT id FROM patients ORDER BY id LIMIT 500")]
            committed: dict[str, float] = {}
            load_before = os.getloadavg()
            began = time.perf_counter()
            n = 0
            while time.perf_counter() - began < seconds:
                due = began + n / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                ticket = f"tkt_lag_{n:06d}"
                conn.execute(
                    "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
                    " created_at, updated_at) VALUES (%s, %s, 'billing', 'normal', 'open',"
                    " now(), now())",
                    (ticket, patients[n % len(patients)]),
                )
                committed[ticket] = time.time()
                n += 1
            wrote_seconds = time.perf_counter() - began
        time.sleep(max(5.0, 3 * interval))
        load_after = os.getloadavg()
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    with sqlite3.connect(store) as db:
        received = dict(
            db.execute(
                "SELECT event_id, received_us FROM events"
                " WHERE event_id LIKE 'db:platform:support_tickets:tkt_lag_%'"
            ).fetchall()
        )
    lags = []
    for ticket, at in committed.items():
        us = received.get(f"db:platform:support_tickets:{ticket}:created")
        if us is not None:
            lags.append(us / 1e6 - at)
    log = out.read_text()
    shutil.rmtree(home, ignore_errors=True)
    return {
        "mode": "logical replication" if cdc else "polling",
        "interval_seconds": interval,
        "slot_used": ("changes from replication slot" in log) if cdc else None,
        "rows_committed": len(committed),
        "achieved_rate_per_second": round(len(committed) / wrote_seconds, 1),
        "events_stored": len(lags),
        "missing": len(committed) - len(lags),
        "lag_p50_seconds": round(percentile(lags, 50), 3) if lags else None,
        "lag_p99_seconds": round(percentile(lags, 99), 3) if lags else None,
        "lag_max_seconds": round(max(lags), 3) if lags else None,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--interval", type=float, default=1.0, help="--follow's --interval")
    parser.add_argument("--modes", default="polling,cdc")
    args = parser.parse_args()
    results = []
    modes = args.modes.split(",")
    if "polling" in modes:
        url = fresh_platform(LOCAL_ADMIN_URL)
        results.append(
            measure(url, cdc=False, rate=args.rate, seconds=args.seconds, interval=args.interval)
        )
    if "cdc" in modes:
        with logical_cluster(fsync=True) as admin:
            if admin is None:
                results.append({"mode": "logical replication", "skipped": "no PostgreSQL binaries"})
            else:
                url = fresh_platform(admin)
                results.append(
                    measure(
                        url, cdc=True, rate=args.rate, seconds=args.seconds, interval=args.interval
                    )
                )
    print(
        json.dumps(
            {"benchmark": "source_lag", "cpus": os.cpu_count(), "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
