"""`telecrm demo --source database`: the simulated platform written into PostgreSQL, read back
through the shipped models file, and checked against the same world sent as webhooks.

The check is what issue 11 promises: for what the platform's tables record, the stage and funnel
numbers come out the same as through webhooks. The webhook side is computed independently: the
simulator's own events (not the database's rows), restricted to what the tables record, are
posted as signed webhooks to a second, separate SQLite store and folded there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from telecrm.bootstrap import Runtime
from telecrm.cli_support import fail
from telecrm.profiles.views import Stats
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.to_postgres import TABLES, PlatformDatabase, PlatformDatabaseError
from telecrm.sources.config import load_sources
from telecrm.sources.errors import SourceError, SourceUnavailable
from telecrm.sources.platform_db import platform_engine
from telecrm.sources.reader import RunReport, SourceReader

DEMO_URL_ENV = "TELECRM_DEMO_PLATFORM_URL"
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEMO_DATABASE = "telecrm_demo_platform"
EXAMPLE_MODELS = Path(__file__).resolve().parent / "examples" / "sources.yaml"
WEBHOOK_BATCH = 500  # events per signed request, as the webhook demo sends them

# What the platform's tables record and the example models turn into events on a first read:
# event type -> the statuses kept (None: all). Not here: what the tables keep no row of
# (sessions, questionnaires, referrals, reviews), what they keep only as a counter or a status
# the models emit nothing for (renewals, failed payments, refill dates, plan progress), and
# patient.updated: a first read sees each patient's current row, not the history of its edits.
RECORDED: Mapping[str, frozenset[str] | None] = {
    "patient.registered": None,
    "consultation.submitted": None,
    "consultation.assigned": None,
    "consultation.accepted": None,
    "prescription.approved": None,
    "order.paid": None,
    "subscription.started": None,
    "subscription.cancelled": None,
    "treatment_plan.updated": frozenset({"created", "completed"}),
    "support_ticket.created": None,
}


def recorded(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The simulator's events that the platform's tables record (see RECORDED)."""
    for e in events:
        if e["type"] not in RECORDED or not (e.get("patient") or {}).get("id"):
            continue
        statuses = RECORDED[e["type"]]
        if statuses is None or (e.get("data") or {}).get("status") in statuses:
            yield e


def demo_platform_url(environ: Mapping[str, str] = os.environ) -> str:
    """TELECRM_DEMO_PLATFORM_URL, else a fresh `telecrm_demo_platform` on the local server."""
    configured = environ.get(DEMO_URL_ENV)
    if configured:
        return configured
    try:
        with psycopg.connect(LOCAL_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    except psycopg.Error:
        raise SourceUnavailable(
            "--source database needs PostgreSQL and none answers on 127.0.0.1:5432 as user "
            f"postgres: set {DEMO_URL_ENV}=postgresql://user@host:port/db (a database whose "
            "simulator tables the demo may replace)"
        ) from None
    return LOCAL_ADMIN_URL.rsplit("/", 1)[0] + f"/{DEMO_DATABASE}"


def demo_from_database(rt: Runtime, config: SimulationConfig, console: Console) -> PlatformLoad:
    """The demo's entry: the platform database loaded and read, or one red line saying what to
    set (exit 1); never the URL, never a server message (they can quote row values)."""
    try:
        return load_from_platform_database(rt, config, console, demo_platform_url())
    except SourceError as exc:
        raise fail(str(exc)) from None
    except (PlatformDatabaseError, psycopg.Error) as exc:
        where = DEMO_URL_ENV if os.environ.get(DEMO_URL_ENV) else f"{DEMO_DATABASE} on 127.0.0.1"
        problem = (
            "cannot connect"
            if isinstance(exc, PlatformDatabaseError)
            else f"failed writing or reading ({type(exc).__name__})"
        )
        raise fail(
            f"--source database: {problem} to the platform database ({where})",
            hint=f"set {DEMO_URL_ENV}=postgresql://user@host:port/db, a database the demo may "
            "write its simulator tables into",
        ) from None


@dataclass
class PlatformLoad:
    events_written: int
    rows: dict[str, int]
    report: RunReport
    write_seconds: float
    read_seconds: float


def load_from_platform_database(
    rt: Runtime, config: SimulationConfig, console: Console, url: str
) -> PlatformLoad:
    """Write the simulated world into the platform database (its tables replaced), then read it
    into `rt` with the example models file, and print the source's counts."""
    began = time.perf_counter()
    db = PlatformDatabase(url, config)
    db.create(reset=True)
    with console.status("writing the simulated platform into PostgreSQL") as status:
        written = db.advance(
            on_batch=lambda r: status.update(f"platform database: {r.events_applied:,} events")
        )
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        rows = {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]  # noqa: S608 (our table names)
            for t in reversed(TABLES)
            if t != "simulation_state"
        }
    wrote = time.perf_counter() - began
    source = load_sources(EXAMPLE_MODELS).source("platform")
    engine = platform_engine(source, {source.url_env: url})
    began = time.perf_counter()
    try:
        reader = SourceReader(source, engine, rt.engine, rt.intake(), rt.blind_index(), rt.clock)
        with console.status("reading the platform database") as status:
            report = reader.run(
                on_page=lambda m: status.update(
                    f"reading {m.model}: {m.rows:,} rows, {m.events:,} events"
                )
            )
    finally:
        engine.dispose()
    load = PlatformLoad(written.events_applied, rows, report, wrote, time.perf_counter() - began)
    _print_load(console, load)
    return load


def _print_load(console: Console, load: PlatformLoad) -> None:
    console.print(
        f"wrote {load.events_written:,} simulated events as {sum(load.rows.values()):,} rows of "
        f"{len(load.rows)} platform tables in {load.write_seconds:.1f} s; read them with "
        f"{EXAMPLE_MODELS.name} (read-only transactions, keyset pages) in {load.read_seconds:.1f} s",
        highlight=False,
    )
    table = Table(
        "model",
        "rows scanned",
        "events emitted",
        "duplicates",
        "held",
        "rejected",
        "state",
        title="the database source: platform",
    )
    for m in load.report.models:
        table.add_row(
            m.model,
            f"{m.rows:,}",
            f"{m.events:,}",
            f"{m.duplicates:,}",
            f"{m.held:,}",
            f"{len(m.rejected):,}",
            "[red]stopped[/]" if m.stopped else "ok",
        )
    r = load.report
    table.add_row(
        "[bold]total",
        f"{sum(m.rows for m in r.models):,}",
        f"{r.events:,}",
        f"{sum(m.duplicates for m in r.models):,}",
        f"{sum(m.held for m in r.models):,}",
        f"{sum(len(m.rejected) for m in r.models):,}",
        "",
    )
    console.print(table)


# -- the webhook path, for the comparison -----------------------------------------------------


@dataclass
class StoreNumbers:
    profiles: int
    stats: Stats


def store_numbers(engine: Engine) -> StoreNumbers:
    from telecrm.profiles.tables import profiles
    from telecrm.profiles.views import stats

    live = profiles.c.merged_into.is_(None) & profiles.c.deleted.is_(False)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(profiles).where(live)).scalar_one()
        return StoreNumbers(int(count), stats(conn))


def webhook_reference(rt: Runtime, config: SimulationConfig, path: Path) -> StoreNumbers:
    """The simulator's events the tables record, as signed webhooks into a second, separate
    SQLite store at `path`, folded and swept at `rt`'s clock."""
    from fastapi.testclient import TestClient

    from telecrm.api.app import create_app
    from telecrm.bootstrap import bootstrap
    from telecrm.ingest.signatures import generate_secret
    from telecrm.settings import Settings
    from telecrm.simulate.generator import generate
    from telecrm.simulate.sender import WebhookSender

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    secret = generate_secret()
    settings = Settings(
        home=path.parent,
        database_url=f"sqlite:///{path.as_posix()}",
        master_key=rt.settings.master_key,
        webhook_secrets=[secret],
        log_level="WARNING",
        messaging=False,
        embedded_worker=False,
    )
    ref = bootstrap(settings, clock=rt.clock)
    try:
        with TestClient(create_app(ref, embedded_worker=False)) as client:
            sender = WebhookSender(
                client,
                "/v1/events",
                secret,
                rate=1e9,
                batch=WEBHOOK_BATCH,
                wall=lambda: rt.clock.now().timestamp(),
            )
            sent = sender.send(recorded(generate(config)))
        if sent.failed:
            status, title = sent.failed[0]
            raise SourceUnavailable(
                f"the reference intake refused {len(sent.failed)} batch(es): {status} {title}"
            )
        ref.worker().drain()
        ref.sweep().run()
        return store_numbers(ref.engine)
    finally:
        ref.engine.dispose()


def compare_with_webhooks(
    rt: Runtime, config: SimulationConfig, console: Console, reference_path: Path
) -> bool:
    """Print the database path's profiles, stages and funnels next to the webhook path's; True
    when every number is the same. `rt` must be folded and swept."""
    began = time.perf_counter()
    db = store_numbers(rt.engine)
    wh = webhook_reference(rt, config, reference_path)
    rows: list[tuple[str, int, int]] = [("profiles", db.profiles, wh.profiles)]
    rows += [
        (f"stage {stage}", n, wh.stats.patients_by_stage.get(stage, 0))
        for stage, n in db.stats.patients_by_stage.items()
    ]
    for f_db, f_wh in zip(db.stats.funnels, wh.stats.funnels, strict=True):
        rows.append((f"funnel {f_db.funnel.name}: entered", f_db.entered, f_wh.entered))
        rows.append((f"funnel {f_db.funnel.name}: converted", f_db.converted, f_wh.converted))
    table = Table(
        "",
        "from the database",
        "through webhooks",
        "",
        title="for what the database records: the same numbers as through webhooks?",
    )
    for label, a, b in rows:
        table.add_row(
            label, f"{a:,}", f"{b:,}", "[green]same[/]" if a == b else "[red]DIFFERENT[/]"
        )
    console.print(table)
    agrees = all(a == b for _, a, b in rows)
    console.print(
        f"[green]same[/]: all {len(rows)} numbers agree (webhook path: the simulator's events "
        f"of the {len(RECORDED)} types the tables record, signed, into a separate SQLite store, "
        f"in {time.perf_counter() - began:.1f} s)"
        if agrees
        else f"[red]DIFFERENT[/]: {sum(a != b for _, a, b in rows)} of {len(rows)} numbers differ",
        highlight=False,
        soft_wrap=True,
    )
    return agrees
