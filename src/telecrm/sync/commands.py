"""`telecrm sync ...`, `telecrm dlq ...`, `telecrm crm provision` and `telecrm mapping check`."""

from __future__ import annotations

import time
from datetime import UTC

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import from_micros
from telecrm.profiles.tables import profiles
from telecrm.store.engine import read_only
from telecrm.sync.credentials import CredentialStore
from telecrm.sync.dead_letters import get_letter, list_letters, purge_letters, retry_letters
from telecrm.sync.destinations import open_connector, sync_worker
from telecrm.sync.mapping import Mapping, load_mapping
from telecrm.sync.plan import dry_run, status_of
from telecrm.sync.planner import mark_dirty
from telecrm.sync.worker import SyncReport

sync_app = typer.Typer(
    help="Keep CRMs in sync: status, dry-run plan, backfill, and the outbox worker.",
    no_args_is_help=True,
)
dlq_app = typer.Typer(help="Records a CRM refused or telecrm gave up on.", no_args_is_help=True)
crm_app = typer.Typer(help="Set up a CRM for telecrm.", no_args_is_help=True)
mapping_app = typer.Typer(
    help="Mapping files (catalog fields → CRM properties).", no_args_is_help=True
)

DESTINATION = typer.Argument(
    ...,
    help="A destination of TELECRM_DESTINATIONS, a built-in mapping (hubspot, salesforce) or a file",
)


def resolve(rt: Runtime, name: str) -> Mapping:
    for m in rt.mappings():
        if m.destination == name:
            return m
    return load_mapping(name)


def _when(us: int) -> str:
    return from_micros(us).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if us else "-"


@sync_app.command("status")
@friendly_errors
def status_command(
    destination: list[str] = typer.Argument(None, help="Destinations (default: all configured)"),
) -> None:
    """Where each destination stands: dirty patients, records by state, dead letters, API use."""
    rt = runtime()
    mappings = [resolve(rt, d) for d in destination] if destination else rt.mappings()
    if not mappings:
        raise fail("no destination configured", hint="set TELECRM_DESTINATIONS=hubspot,salesforce")
    for m in mappings:
        s = status_of(rt.engine, m, now_us(rt))
        table = Table(
            title=f"{m.destination} ({m.connector}, mode {m.mode}, baa {str(m.baa).lower()})"
        )
        table.add_column("object")
        for state in ("accepted", "rejected", "missing", "archived", "converted"):
            table.add_column(state, justify="right")
        for o in m.objects:
            counts = s.records.get(o.name, {})
            table.add_row(
                o.name,
                *(
                    str(counts.get(k, 0))
                    for k in ("accepted", "rejected", "missing", "archived", "converted")
                ),
            )
        console.print(table)
        usage = f", CRM reports {s.crm_usage[0]:,}/{s.crm_usage[1]:,}" if s.crm_usage else ""
        console.print(
            f"dirty patients {s.dirty:,} (due {s.due:,}, in flight {s.leased:,}) · open dead letters "
            f"{s.dead_letters:,} · API calls {s.calls:,}, limit refusals {s.refusals:,}{usage}"
            + (
                f" · paused until {_when(s.paused_until_us)}"
                if s.paused_until_us > now_us(rt)
                else ""
            ),
            highlight=False,
        )


@sync_app.command("plan")
@friendly_errors
def plan_command(
    destination: str = DESTINATION,
    everyone: bool = typer.Option(
        False, "--all", help="Plan every patient, not only the dirty ones"
    ),
    samples: int = typer.Option(
        3, min=0, max=100, help="Payloads to show (identifying values redacted)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Dry run: what a sync would send now, and the calls it would cost. Sends nothing."""
    rt = runtime()
    m = resolve(rt, destination)
    result = dry_run(rt.engine, rt.cipher(), m, everyone=everyone, samples=samples)
    summary = {
        "destination": m.destination,
        "patients": result.patients,
        "new": dict(result.new),
        "changed": dict(result.changed),
        "unchanged": dict(result.unchanged),
        "refused_before": dict(result.refused),
        "lead_conversions": result.conversions,
        "estimated_calls": result.calls(m),
        "samples": result.samples,
    }
    if as_json:
        console.print_json(orjson.dumps(summary).decode())
        return
    table = Table(title=f"sync plan for {m.destination} ({result.patients:,} patients)")
    for col in ("object", "CRM object", "new", "changed", "unchanged", "refused before"):
        table.add_column(col, justify="left" if "object" in col else "right")
    for o in m.objects:
        table.add_row(
            o.name,
            o.crm_object,
            *(
                f"{c[o.name]:,}"
                for c in (result.new, result.changed, result.unchanged, result.refused)
            ),
        )
    console.print(table)
    console.print(
        f"estimated API calls: {result.calls(m):,} (lead conversions {result.conversions:,})"
    )
    for sample in result.samples:
        console.print_json(orjson.dumps(sample).decode())


def _drain(rt: Runtime, m: Mapping, total: int, lease: float, per_round: int = 5000) -> SyncReport:
    import structlog

    from telecrm.observability.logs import configure_logging

    configure_logging("WARNING")
    log = structlog.get_logger("telecrm.sync")
    worker = sync_worker(
        m,
        rt.engine,
        rt.cipher,
        rt.clock,
        time.sleep,
        lease_seconds=lease,
        patients_per_round=per_round,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients · {task.fields[calls]} calls"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"sync → {m.destination}", total=total or None, calls=0)
        done = SyncReport()

        def advance(report: SyncReport) -> None:
            done.add(report)
            progress.update(task, advance=report.patients, calls=done.calls)

        try:
            worker.drain(on_round=advance)
        finally:
            worker.connector.close()
            log.info("sync.drained", destination=m.destination, calls=done.calls)
    return done


def _print_report(m: Mapping, r: SyncReport) -> None:
    console.print(
        f"[green]{m.destination}[/]: {r.patients:,} patients, {r.records:,} records: "
        f"{r.written:,} written, {r.unchanged:,} unchanged (no call), {r.rejected:,} refused → "
        f"dead letters, {r.deferred:,} deferred, {r.converted:,} leads converted, "
        f"{r.archived:,} archived; {r.calls:,} API calls",
        highlight=False,
    )


@sync_app.command("backfill")
@friendly_errors
def backfill_command(
    destination: str = DESTINATION,
    lease: float = typer.Option(300.0, min=1, help="Seconds a claimed patient stays ours"),
    per_round: int = typer.Option(
        10_000,
        min=1,
        max=100_000,
        help="Patients per round: bigger rounds leave fewer half-full batches",
    ),
) -> None:
    """Send every patient to a destination (the same path as live sync; unchanged records cost nothing)."""
    rt = runtime()
    m = resolve(rt, destination)
    with rt.engine.begin() as conn:
        keys = [
            k
            for (k,) in conn.execute(
                select(profiles.c.patient_key).where(profiles.c.patient_id.is_not(None))
            )
        ]
        mark_dirty(conn, [m.destination], keys, now_us(rt))
    if m.destination not in {x.destination for x in rt.mappings()}:
        console.print(
            f"[yellow]note:[/] {m.destination} is not in TELECRM_DESTINATIONS, so later changes "
            "will not be synced to it until it is",
            highlight=False,
        )
    _print_report(m, _drain(rt, m, len(keys), lease, per_round))


@sync_app.command("run")
@friendly_errors
def run_command(
    destination: str = DESTINATION,
    follow: bool = typer.Option(False, "--follow", help="Keep running; poll for new changes"),
    every: float = typer.Option(2.0, min=0.1, help="Seconds between polls with --follow"),
    lease: float = typer.Option(300.0, min=1, help="Seconds a claimed patient stays ours"),
) -> None:
    """The outbox worker: sync the dirty patients (run any number of these on PostgreSQL)."""
    rt = runtime()
    m = resolve(rt, destination)
    while True:
        with read_only(rt.engine).connect() as conn:
            from telecrm.sync.tables import sync_dirty

            due = conn.execute(
                select(func.count()).where(sync_dirty.c.destination == m.destination)
            ).scalar_one()
        report = _drain(rt, m, int(due), lease)
        _print_report(m, report)
        if not follow:
            return
        time.sleep(every)


@sync_app.command("disclosures")
@friendly_errors
def disclosures_command(
    patient_id: str = typer.Argument(..., help="The patient whose disclosures to list"),
    limit: int = typer.Option(200, min=1, max=100_000),
) -> None:
    """The accounting of disclosures for one patient: what went to which CRM, when, and whether
    any of it was PHI (field names only)."""
    from telecrm.sync.tables import disclosures

    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        rows = conn.execute(
            select(disclosures)
            .where(disclosures.c.patient_key == patient_id)
            .order_by(disclosures.c.at_us, disclosures.c.id)
            .limit(limit)
        ).all()
    table = Table(title=f"disclosures of {patient_id} ({len(rows)})")
    for col in ("when", "destination", "object", "record", "fields", "PHI", "purpose"):
        table.add_column(col)
    for r in rows:
        fields = ", ".join(orjson.loads(r.fields)) or "-"
        table.add_row(
            _when(r.at_us), r.destination, r.object, r.record_key, fields,
            "yes" if r.phi else "no", r.purpose,
        )  # fmt: skip
    console.print(table)


# -- dead letters -------------------------------------------------------------------------------
@dlq_app.command("list")
@friendly_errors
def dlq_list(
    destination: str | None = typer.Option(None, help="Only this destination"),
    status: str = typer.Option("open", help="open | retried | resolved | all"),
    limit: int = typer.Option(50, min=1, max=10_000),
) -> None:
    """Dead letters with their reason (codes and field names only, never values)."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        rows = list_letters(
            conn, destination=destination, status=None if status == "all" else status, limit=limit
        )
    table = Table(title=f"dead letters ({status})")
    for col in (
        "id",
        "destination",
        "object",
        "record",
        "code",
        "attempts",
        "last failed",
        "status",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.id),
            r.destination,
            r.object,
            r.record_key,
            r.code,
            str(r.attempts),
            _when(r.last_failed_us),
            r.status,
        )
    console.print(table)


@dlq_app.command("show")
@friendly_errors
def dlq_show(letter_id: int = typer.Argument(..., help="The id from `telecrm dlq list`")) -> None:
    """One dead letter in full."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        r = get_letter(conn, letter_id)
    for name in (
        "id",
        "destination",
        "object",
        "record_key",
        "patient_key",
        "code",
        "detail",
        "attempts",
        "status",
    ):
        console.print(f"[bold]{name}[/]: {getattr(r, name)}", highlight=False)
    console.print(
        f"[bold]first failed[/]: {_when(r.first_failed_us)}  [bold]last[/]: {_when(r.last_failed_us)}"
    )


@dlq_app.command("retry")
@friendly_errors
def dlq_retry(
    letter_ids: list[int] = typer.Argument(None, help="Ids to retry"),
    destination: str | None = typer.Option(None, help="With --all: only this destination"),
    every: bool = typer.Option(False, "--all", help="Retry every open dead letter"),
) -> None:
    """Send these records again on the next sync round."""
    if not letter_ids and not every:
        raise fail("name dead letter ids, or pass --all", code=2)
    rt = runtime()
    with rt.engine.begin() as conn:
        n = retry_letters(conn, letter_ids or [], destination=destination, now_us=now_us(rt))
    console.print(f"{n} dead letter(s) queued for retry; run `telecrm sync run DESTINATION`")


@dlq_app.command("purge")
@friendly_errors
def dlq_purge(
    letter_ids: list[int] = typer.Argument(None, help="Ids to delete"),
    destination: str | None = typer.Option(None, help="With --all: only this destination"),
    every: bool = typer.Option(False, "--all", help="Delete every dead letter"),
) -> None:
    """Delete dead letters you have dealt with."""
    if not letter_ids and not every:
        raise fail("name dead letter ids, or pass --all", code=2)
    rt = runtime()
    with rt.engine.begin() as conn:
        n = purge_letters(conn, letter_ids or [], destination=destination)
    console.print(f"{n} dead letter(s) purged")


# -- provisioning and mappings ---------------------------------------------------------------
@crm_app.command("provision")
@friendly_errors
def provision_command(destination: str = DESTINATION) -> None:
    """Create the mapping's custom properties / fields in the CRM (idempotent: safe to re-run)."""
    rt = runtime()
    m = resolve(rt, destination)
    connector, _ = open_connector(
        m, rt.engine, rt.clock, time.sleep, credentials=CredentialStore(rt.engine, rt.cipher)
    )
    try:
        properties = [c.to_custom_property() for c in m.custom_properties]
        tables = [t.to_custom_table() for t in m.custom_tables]  # Dataverse only
        steps = connector.provision(properties, **({"tables": tables} if tables else {}))  # type: ignore[attr-defined]
    finally:
        connector.close()
    for s in steps:
        colour = {"created": "green", "exists": "dim", "failed": "red"}[s.action]
        console.print(f"[{colour}]{s.action:8}[/] {s.target} {s.detail}", highlight=False)
    if any(s.action == "failed" for s in steps):
        raise typer.Exit(1)


@mapping_app.command("check")
@friendly_errors
def mapping_check(
    path: str = typer.Argument(..., help="A mapping file, or a built-in name"),
) -> None:
    """Validate a mapping file: fields, types, and PHI against the destination's BAA flag."""
    m = load_mapping(path)
    phi = sorted(m.phi_fields())
    console.print(
        f"[green]ok[/] {m.path}: destination {m.destination} ({m.connector}), "
        f"{len(m.objects)} objects, {sum(len(o.properties) for o in m.objects)} properties, "
        f"PHI fields: {', '.join(phi) if phi else 'none'}",
        highlight=False,
    )
