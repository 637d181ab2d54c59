"""`telecrm demo`: the whole spine on embedded defaults, end to end, in about a minute.

Synthetic patients from the simulator go through the signed HTTP intake of an in-process server
on loopback, the worker folds them into encrypted profiles and lifecycle stages, and the demo
prints the stage distribution, the 4 funnels, what bad input gets back, then keeps HubSpot and
Salesforce sandboxes in sync (under injected faults), runs the agreement and audit checks, and
ends by writing the live integration report (HTML and PDF) to `.telecrm/demo/report/`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors
from telecrm.ingest.signatures import generate_secret, signed_headers
from telecrm.security.keyring import generate_master_key
from telecrm.security.secret_files import resolve_secret

BATCH = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_master_key(home: Path) -> str:
    """The demo's own key-encryption key; real deployments must bring theirs (TELECRM_MASTER_KEY)."""
    configured = resolve_secret("TELECRM_MASTER_KEY")  # or TELECRM_MASTER_KEY_FILE
    if configured:
        return configured
    path = home / "demo-master.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_master_key() + "\n")
        path.chmod(0o600)
        console.print(
            f"[yellow]generated a demo master key at {path}[/] — for the demo only; "
            "production keys come from TELECRM_MASTER_KEY (see docs/operations.md)"
        )
    return path.read_text().strip()


LOST_EVERY = 10  # every 10th consultation event is "lost" on its way, for the pull to find


class _Lossy:
    """Drops every n-th consultation event, as a flaky network between platform and intake would."""

    def __init__(self, *, lost_every: int) -> None:
        self.lost_every = lost_every
        self.lost = 0

    def __call__(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        seen = 0
        for e in events:
            if e["type"].startswith("consultation."):
                seen += 1
                if seen % self.lost_every == 0:
                    self.lost += 1
                    continue
            yield e


def _fill_gap(rt: Any, config: Any) -> Any:
    """Serve the simulated platform's API in-process and pull its consultations."""
    import secrets

    from fastapi.testclient import TestClient

    from telecrm.ingest.puller import PlatformPuller
    from telecrm.simulate.generator import generate
    from telecrm.simulate.platform_api import create_platform_app, mint_token
    from telecrm.simulate.platform_data import PlatformData

    jwt_secret = secrets.token_hex(32)
    app = create_platform_app(
        PlatformData.from_events(generate(config)),
        jwt_secret=jwt_secret,
        now=lambda: datetime.now(UTC),
    )
    with TestClient(app) as platform:
        platform.headers["Authorization"] = "Bearer " + mint_token(
            jwt_secret, sub="telecrm", role="admin", ttl_seconds=600
        )
        return PlatformPuller(platform, rt.intake(), rt.engine, rt.clock).pull(("consultations",))


def _start_for(months: int) -> date:
    """The first of the month `months` months ago: the simulated period ends this month's first day."""
    today = datetime.now(UTC).date()
    m = today.month - 1 - months
    return date(today.year + m // 12, m % 12 + 1, 1)


def _post(client: httpx.Client, secret: str, payload: Any) -> httpx.Response:
    """One signed request, for the bad-input table (the stream goes through WebhookSender)."""
    body = orjson.dumps(payload)
    headers = signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
    headers["content-type"] = "application/json"
    return client.post("/v1/events", content=body, headers=headers)


@friendly_errors
def demo_command(
    patients: int = typer.Option(3000, min=10, max=200_000, help="Synthetic patients to simulate"),
    months: int = typer.Option(12, min=1, max=60, help="Months of platform history"),
    seed: int = typer.Option(7, help="Simulation seed (same seed, same patients)"),
    keep: bool = typer.Option(
        False, help="Keep the previous demo database instead of starting fresh"
    ),
    source: str = typer.Option(
        "webhooks",
        "--source",
        help="Where patients come from: 'webhooks' (signed, to the intake) or 'database' (the "
        "platform's PostgreSQL, read by the sources reader; TELECRM_DEMO_PLATFORM_URL)",
    ),
) -> None:
    """Run the spine end to end on embedded defaults (SQLite, synthetic patients, loopback intake)."""
    import uvicorn

    from telecrm.api.app import create_app
    from telecrm.bootstrap import bootstrap
    from telecrm.observability.logs import configure_logging
    from telecrm.profiles.commands import print_stages_and_funnels
    from telecrm.profiles.views import find_patient_key, patient_view, stats
    from telecrm.security.audit import verify_audit
    from telecrm.settings import Settings
    from telecrm.simulate.config import SimulationConfig
    from telecrm.simulate.generator import generate
    from telecrm.simulate.sender import WebhookSender

    if source not in ("webhooks", "database"):
        raise fail("--source is 'webhooks' or 'database'", code=2)
    home = Path(os.environ.get("TELECRM_HOME", ".telecrm"))
    db_dir = home / "demo"
    if db_dir.exists() and not keep:
        shutil.rmtree(db_dir)
    secret = generate_secret()
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{(db_dir / 'telecrm.db').as_posix()}",
        master_key=demo_master_key(home),
        webhook_secrets=[secret],
        log_level="WARNING",
        messaging=False,  # the simulated history is not news; the messaging part posts today's
    )
    configure_logging("WARNING")
    rt = bootstrap(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(rt), host="127.0.0.1", port=port, log_level="error", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise fail("the demo's intake server did not start")
        time.sleep(0.05)

    config = SimulationConfig(patients=patients, months=months, seed=seed, start=_start_for(months))
    console.rule("[bold]telecrm demo")
    console.print(
        f"simulating {patients:,} patients over {months} months (seed {seed}); "
        f"intake on http://127.0.0.1:{port}, database {db_dir / 'telecrm.db'}"
    )
    platform = None
    if source == "database":
        from telecrm.sources import demo_source

        console.rule("the platform's own PostgreSQL, read by a database source")
        platform = demo_source.demo_from_database(rt, config, console)
    started = time.perf_counter()
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
        Progress(
            TextColumn("[bold]signed webhooks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task("send", total=None, visible=platform is None)
        lossy = _Lossy(lost_every=LOST_EVERY)
        sender = WebhookSender(client, "/v1/events", secret, rate=1e9, batch=BATCH)
        sent = sender.send(
            lossy(generate(config)) if platform is None else iter(()),
            on_batch=lambda r: bar.update(task, completed=r.events),
        )
        if sent.failed:
            status, title = sent.failed[0]
            raise fail(f"intake refused {len(sent.failed)} batch(es): {status} {title}")
        elapsed = time.perf_counter() - started
        lost = lossy.lost
        console.print(
            "no webhooks sent: the patients came from the platform database"
            if platform is not None
            else f"sent {sent.events:,} events in {elapsed:.1f} s "
            f"({sent.events / elapsed:,.0f} events/s); {sent.accepted:,} stored"
        )
        console.rule("what bad input gets back (problem+json, nothing stored)")
        _show_bad_input(client, secret)

    if platform is None:  # the database source lost nothing in transit: no gap to fill
        console.rule("a webhook gap, filled by pulling the platform's API")
        recovered = _fill_gap(rt, config)
        console.print(
            f"{lost:,} consultation events were lost in transit on purpose; `telecrm pull` read "
            f"{recovered.records:,} consultations from the platform's API and stored "
            f"{recovered.accepted:,} events ({recovered.duplicates:,} were already known)"
        )
    with console.status("folding events into encrypted profiles"):
        while rt.queue_stats()[0]:
            time.sleep(0.1)
        rt.sweep().run()
    server.should_exit = True
    thread.join(timeout=10)

    cipher, index = rt.cipher(), rt.blind_index()
    with rt.engine.begin() as conn:
        s = stats(conn)
        sample = find_patient_key(conn, index, patient_id="pat_000001", email=None, phone=None)
        view = patient_view(conn, cipher, sample, actor="demo", reveal_reason=None, now_us=0)
        verified = verify_audit(conn)
    print_stages_and_funnels(s)
    same_as_webhooks = platform is None or demo_source.compare_with_webhooks(
        rt, config, console, db_dir / "webhook-reference.db"
    )
    console.rule("analytics: lead, engagement, churn risk, lifetime value, adherence, forecast")
    from telecrm.analytics.demo_analytics import demo_analytics

    scored = demo_analytics(rt, console, db_dir / "charts", config.end)
    console.rule(
        "the CRMs: HubSpot, Salesforce, Pipedrive and Dynamics 365 sandboxes, kept in sync"
    )
    from telecrm.sync.demo_sync import demo_crm_sync

    configure_logging("ERROR")  # the injected faults' warnings: the table counts them instead
    try:
        synced = demo_crm_sync(rt, console)
    finally:
        configure_logging("WARNING")
    console.rule("patient messages: SendGrid and Twilio sandboxes, consent, quiet hours, tracking")
    from telecrm.messaging.demo_messaging import demo_messaging

    phi_clean = demo_messaging(
        rt, console, secret=secret, port=_free_port(), patients=max(50, min(500, patients // 8))
    )
    console.rule("journeys: the eight built-ins over simulated months")
    from telecrm.journeys.demo_journeys import demo_journeys

    journeyed = demo_journeys(
        home,
        settings.master_key.get_secret_value() if settings.master_key else "",
        console,
        patients=max(100, min(800, patients // 6)),
        months=min(months, 4),
        seed=seed,
    )
    if not journeyed["entered"] or not journeyed["messages"]:
        raise fail("no patient entered a journey, or no journey planned a message")
    console.rule("access control: OAuth clients, roles, the read API, disclosures, export")
    from telecrm.api.demo_access import demo_access

    accessed = demo_access(rt, console, out_dir=db_dir / "compliance")
    masked = Table(
        "field", "value", title=f"{view.patient_key}: {view.stage} — masked view (audited)"
    )
    for name in (
        "first_name",
        "last_name",
        "email",
        "phone",
        "date_of_birth",
        "conditions",
        "medications",
        "orders_count",
    ):
        if name in view.fields:
            masked.add_row(name, str(view.fields[name]))
    console.print(masked)
    with rt.engine.begin() as conn:
        verified = verify_audit(conn)
    console.print(
        f"audit chain: [green]intact[/], {verified.rows_checked:,} entries"
        if verified.ok
        else f"audit chain: [red]broken[/] at {verified.first_broken_seq}: {verified.problem}"
    )
    db = (db_dir / "telecrm.db").as_posix()
    console.print(
        Panel(
            f"export TELECRM_DATABASE_URL=sqlite:///{db}\n"
            f"export TELECRM_MASTER_KEY=$(cat {home / 'demo-master.key'})\n"
            ".venv/bin/telecrm stats\n"
            ".venv/bin/telecrm patients show pat_000001\n"
            ".venv/bin/telecrm audit verify\n"
            ".venv/bin/telecrm clients list\n"
            ".venv/bin/telecrm disclosures pat_000001 --reason 'looking around'\n"
            ".venv/bin/telecrm lifecycle rebuild\n"
            ".venv/bin/telecrm sync plan hubspot --all   # the dry run, PHI redacted\n"
            ".venv/bin/telecrm dlq list\n"
            ".venv/bin/telecrm messages stats\n"
            ".venv/bin/telecrm messages list --status suppressed\n"
            ".venv/bin/telecrm consent show live_00001\n"
            ".venv/bin/telecrm templates list\n"
            ".venv/bin/telecrm analytics scores --patient pat_000001\n"
            ".venv/bin/telecrm analytics funnels --by channel\n"
            ".venv/bin/telecrm analytics churn\n"
            ".venv/bin/telecrm report --out report --format md,html,pdf",
            title="look around",
        )
    )
    console.rule("the live integration report (HTML and PDF), every count linked to its query")
    from telecrm.reports.demo_report import demo_report

    reported = demo_report(rt, console, db_dir / "report")
    if not same_as_webhooks:
        raise fail("the database source's stage or funnel numbers differ from the webhook path's")
    if not scored["patients"] or scored["written"] != scored["patients"]:
        raise fail("analytics run did not score every patient")
    if not synced:
        raise fail("a CRM does not hold what telecrm says it should (see the agreement column)")
    if not phi_clean:
        raise fail("a planted PHI value reached a messaging provider without a BAA")
    if not (accessed["roles_ok"] and accessed["phi_hidden_from_marketing"]):
        raise fail("an API client's role saw a patient field it must not (see the access table)")
    if not accessed["erasure"]["erased"] or accessed["erasure"]["still_open"]:
        raise fail("an erased patient's event payload can still be read (see the erasure line)")
    if not reported["audit_ok"]:
        raise fail("the live report found the audit chain broken (see its Compliance section)")
    if not (accessed["refusals_ok"] and accessed["rate_limited"]):
        raise fail("the read API let through a request it must refuse (see the refusals table)")


def _show_bad_input(client: httpx.Client, secret: str) -> None:
    now = datetime.now(UTC).isoformat()
    table = Table("request", "status", "problem")
    good = {
        "id": "evt_demo_bad_1",
        "type": "patient.updated",
        "occurred_at": now,
        "patient": {"id": "pat_unknown"},
        "data": {"language": "en"},
    }
    body = orjson.dumps(good)
    cases: list[tuple[str, httpx.Response]] = [
        (
            "unsigned",
            client.post("/v1/events", content=body, headers={"content-type": "application/json"}),
        ),
        (
            "bad signature",
            client.post(
                "/v1/events",
                content=body,
                headers={**signed_headers(generate_secret(), "msg_x", int(time.time()), body)},
            ),
        ),
        (
            "stale timestamp",
            client.post(
                "/v1/events",
                content=body,
                headers=signed_headers(secret, "msg_y", int(time.time()) - 3600, body),
            ),
        ),
        ("unknown patient", _post(client, secret, good)),
        (
            "invalid email",
            _post(
                client,
                secret,
                {
                    **good,
                    "id": "evt_demo_bad_2",
                    "type": "patient.registered",
                    "patient": {"id": "pat_x"},
                    "data": {"first_name": "A", "last_name": "B", "email": "not-an-email"},
                },
            ),
        ),
        (
            "malformed JSON",
            client.post(
                "/v1/events",
                content=b"{oops",
                headers=signed_headers(secret, "msg_z", int(time.time()), b"{oops"),
            ),
        ),
    ]
    for label, response in cases:
        problem = response.json()
        table.add_row(
            label, str(response.status_code), f"{problem.get('title')}: {problem.get('detail')}"
        )
    console.print(table)
