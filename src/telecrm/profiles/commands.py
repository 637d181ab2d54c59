"""CLI for the projection: `worker`, `lifecycle rebuild|sweep`, `patients show`, `stats`."""

from __future__ import annotations

import threading

import typer
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.lifecycle import CRM_STATUS, Stage
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.views import PatientNotFound, Stats, find_patient_key, patient_view, stats
from telecrm.store.engine import read_only

lifecycle_app = typer.Typer(
    help="Lifecycle stages: rebuild from the event log, run the time sweep.", no_args_is_help=True
)
patients_app = typer.Typer(help="Look at one patient (audited).", no_args_is_help=True)


@friendly_errors
def worker_command(
    once: bool = typer.Option(False, help="Process what is pending, sweep once, and exit"),
    batch: int = typer.Option(500, min=1, max=10_000, help="Patients per transaction"),
) -> None:
    """Run the projection worker: fold new events into profiles; sweep time-driven stage moves."""
    from telecrm.bootstrap import EmbeddedWorker

    rt = runtime()
    if once:
        report = rt.worker().drain(batch)
        swept = rt.sweep().run()
        console.print(
            f"{report.patients:,} patients, {report.events:,} events folded; "
            f"{swept.moved:,} moved by the sweep"
        )
        return
    console.print("worker running; Ctrl-C to stop")
    w = EmbeddedWorker(rt)
    w.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        w.stop()
        w.join(timeout=10)


@lifecycle_app.command("rebuild")
@friendly_errors
def rebuild(
    verify: bool = typer.Option(True, help="Prove the rebuilt projection equals the one before"),
) -> None:
    """Replay the whole event log into fresh profiles and stage histories.

    Stop other workers first. With --verify (the default) the projection's digest before and
    after is compared: identical means the log alone reproduces every profile and stage.
    """
    rt = runtime()
    before = projection_digest(rt.engine, rt.cipher()) if verify else None
    with console.status("replaying the event log") as status:
        report = rebuild_projection(
            rt.engine,
            rt.worker(),
            rt.clock,
            on_batch=lambda b: status.update(f"replaying the event log ({b.patients} patients)"),
        )
    console.print(f"rebuilt {report.patients:,} profiles from {report.events:,} events")
    if verify:
        after = projection_digest(rt.engine, rt.cipher())
        if before == after:
            console.print(
                f"[green]identical[/] to the projection before the rebuild (sha256 {after[:16]}…)"
            )
        else:
            raise fail(
                "the rebuilt projection differs from the one before",
                hint="if workers or the sweep ran on a later clock this is expected; otherwise report it",
            )


@lifecycle_app.command("sweep")
@friendly_errors
def sweep() -> None:
    """Move customers whose inactivity or lapsed subscription crossed a threshold."""
    rt = runtime()
    report = rt.sweep().run()
    console.print(
        f"examined {report.examined:,}; moved {report.moved:,} ({report.transitions:,} transitions)"
    )


@patients_app.command("show")
@friendly_errors
def show(
    patient_id: str = typer.Argument(None, help="The platform's patient id"),
    email: str = typer.Option(None, help="Find by email (blind index; exact match)"),
    phone: str = typer.Option(None, help="Find by phone (E.164 or national format)"),
    reveal: bool = typer.Option(False, help="Show identifying and medical values unmasked"),
    reason: str = typer.Option(
        None, help="Why you need the values (required with --reveal; audited)"
    ),
    actor: str = typer.Option("cli", help="Who is looking (recorded in the audit log)"),
) -> None:
    """Show a patient's profile and stage history. Identifying values are masked unless --reveal."""
    from telecrm.domain.identity import InvalidIdentity, normalise_email, normalise_phone

    if reveal and not reason:
        raise fail(
            "--reveal needs --reason: every unmasked view is audited with its purpose", code=2
        )
    try:
        email_n = normalise_email(email) if email else None
        phone_n = normalise_phone(phone) if phone else None
    except InvalidIdentity as exc:
        raise fail(str(exc), code=2) from None
    rt = runtime()
    cipher, index = rt.cipher(), rt.blind_index()
    try:
        with rt.engine.begin() as conn:
            key = find_patient_key(conn, index, patient_id=patient_id, email=email_n, phone=phone_n)
            view = patient_view(
                conn,
                cipher,
                key,
                actor=actor,
                reveal_reason=reason if reveal else None,
                now_us=now_us(rt),
            )
    except PatientNotFound as exc:
        raise fail(str(exc)) from None
    console.print(
        f"[bold]{view.patient_key}[/]  stage [cyan]{view.stage}[/] ({view.crm_status}) since {view.stage_since}"
    )
    table = Table(
        "field",
        "value",
        title="profile" + (" (revealed; audited)" if view.revealed else " (masked)"),
    )
    for name, value in view.fields.items():
        table.add_row(name, str(value))
    console.print(table)
    history = Table("at", "from", "to", "reason", title="stage history")
    for h in view.history:
        history.add_row(h["at"], str(h["from"] or "—"), h["to"], h["reason"])
    console.print(history)


def print_stages_and_funnels(s: Stats) -> None:
    """The stage distribution and the 4 funnels as tables (`telecrm stats` and the demo)."""
    total = sum(s.patients_by_stage.values()) or 1
    stages = Table("stage", "CRM status", "patients", "share", title="lifecycle stages")
    for stage, n in s.patients_by_stage.items():
        stages.add_row(stage, CRM_STATUS[Stage(stage)], f"{n:,}", f"{n / total:.1%}")
    console.print(stages)
    funnels = Table("funnel", "from → to", "entered", "converted", "rate", title="funnels")
    for f in s.funnels:
        funnels.add_row(
            f.funnel.name,
            f"{f.funnel.start} → {f.funnel.end}",
            f"{f.entered:,}",
            f"{f.converted:,}",
            "—" if f.rate is None else f"{f.rate:.1%}",
        )
    console.print(funnels)


@friendly_errors
def stats_command() -> None:
    """Patients per lifecycle stage, events per type, and the 4 funnels."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        s = stats(conn)
    print_stages_and_funnels(s)
    types = Table("event type", "count", title="events by type")
    for t, n in s.events_by_type.items():
        types.add_row(t, f"{n:,}")
    console.print(types)
    if s.pending_events:
        console.print(
            f"[yellow]{s.pending_events:,} events not yet folded[/] (run `telecrm worker --once`)"
        )
