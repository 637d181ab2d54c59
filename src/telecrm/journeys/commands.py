"""CLI for journeys: `telecrm journeys list | validate | simulate | stats`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.journeys.definition import JourneyError, LoadedJourney
from telecrm.journeys.runner import patient_views
from telecrm.journeys.simulate import simulate
from telecrm.journeys.stats import all_journey_names, journey_stats
from telecrm.journeys.validate import load_all, load_journey
from telecrm.messaging.templates import TemplateCatalog

journeys_app = typer.Typer(
    help="Journeys: multi-step automations on the platform's events and lifecycle stages. "
    "Built-ins live in the package; TELECRM_JOURNEYS_DIR adds or replaces them (copy one to start).",
    no_args_is_help=True,
)
SIMULATE_PURPOSE = "journey simulation"


def _templates() -> set[tuple[str, str]]:
    rt = runtime()
    catalog = TemplateCatalog.load(
        sms_baa=rt.settings.twilio_baa, override_dir=rt.settings.templates_dir
    )
    return {(t.name, t.channel) for t in catalog.all()}


def _loaded() -> dict[str, LoadedJourney]:
    rt = runtime()
    return {lj.name: lj for lj in load_all(rt.settings.journeys_dir, _templates())}


def _entry_text(lj: LoadedJourney) -> str:
    e = lj.journey.entry
    if e.event:
        when = "".join(f" {k}={v}" for k, v in e.when.items())
        return f"event {e.event}{when}"
    if e.stage:
        return f"stage → {e.stage.value}"
    assert e.schedule is not None
    return f"every {e.schedule.every}"


@journeys_app.command("list")
@friendly_errors
def list_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every journey that runs: entry, goal, holdout, steps, and the file it comes from."""
    loaded = _loaded()
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {"name": n, "path": lj.path, "digest": lj.digest[:12],
                     "entry": _entry_text(lj), "steps": len(lj.journey.steps)}
                    for n, lj in loaded.items()
                ]
            )
        )  # fmt: skip
        return
    table = Table("journey", "entry", "goal", "holdout", "steps", "sends", title="journeys")
    for name, lj in sorted(loaded.items()):
        j = lj.journey
        goal = "-"
        if j.goal is not None:
            goal = f"{j.goal.event or j.goal.stage} within {j.goal.within.days}d"
        sends = sum(1 for s in j.steps if s.send_email or s.send_sms)
        table.add_row(
            name, _entry_text(lj), goal, f"{j.holdout:g} %", str(len(j.steps)), str(sends)
        )
    console.print(table)


@journeys_app.command("validate")
@friendly_errors
def validate_command(
    files: list[Path] = typer.Argument(
        None, help="Journey files to check; default: every journey that would run"
    ),
) -> None:
    """Check journey files: shape, events, stages, templates, fields, reachability, loops."""
    from telecrm.journeys.segments import load_segments

    templates = _templates()
    try:
        segments = load_segments(runtime().settings.journeys_dir)
    except JourneyError as exc:
        console.print(f"[red]✗[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    problems = 0
    targets = files or [Path(lj.path) for lj in _loaded().values()]
    for path in targets:
        try:
            lj = load_journey(path, templates, segments)
        except JourneyError as exc:
            problems += 1
            console.print(f"[red]✗[/] {exc}", highlight=False)
            continue
        console.print(
            f"[green]✓[/] {path}: {lj.name}, {len(lj.journey.steps)} steps", highlight=False
        )
    if problems:
        raise typer.Exit(1)


@journeys_app.command("simulate")
@friendly_errors
def simulate_command(
    name: str = typer.Argument(..., help="The journey (telecrm journeys list)"),
    patient: str = typer.Option(..., "--patient", help="The patient id"),
) -> None:
    """The path a patient would take through a journey from now, sending nothing.

    Waits for an event are assumed to time out; branches read the profile as it is now. The
    profile read is recorded in the audit log (purpose "journey simulation").
    """
    from telecrm.security.audit import AuditEntry, append_audit

    rt = runtime()
    loaded = _loaded()
    if name not in loaded:
        raise fail(f"no journey is called {name!r}", hint="telecrm journeys list")
    catalog = TemplateCatalog.load(
        sms_baa=rt.settings.twilio_baa, override_dir=rt.settings.templates_dir
    )
    from telecrm.messaging.config import load_messaging_config

    config = load_messaging_config(rt.settings.messaging_config)
    cipher = rt.cipher()
    at_us = now_us(rt)
    with rt.engine.begin() as conn:
        view = patient_views(conn, cipher, [patient], at_us).get(patient)
        if view is not None:
            append_audit(
                conn,
                [AuditEntry(actor="cli", action="read", record_type="profile",
                            record_ids=[patient], fields=["consent", "timezone", "stage"],
                            purpose=SIMULATE_PURPOSE)],
                at_us=at_us,
            )  # fmt: skip
    if view is None:
        raise fail(f"no patient {patient!r}", hint="telecrm patients show ID checks an id")
    result = simulate(
        loaded[name].journey, patient, view, rt.clock.now(), catalog, config.default_timezone
    )
    if not result.enters:
        console.print(f"{patient} would not enter {name}: {result.why_not}", highlight=False)
        return
    console.print(f"{patient} enters {name} (group: {result.group})", highlight=False)
    table = Table("when (UTC)", "step", "action", "outcome", title=f"simulated path: {name}")
    for s in result.path:
        table.add_row(s.at.strftime("%Y-%m-%d %H:%M"), s.step, s.action, s.outcome)
    console.print(table)
    console.print(f"ends: {result.ends}", highlight=False)


@journeys_app.command("stats")
@friendly_errors
def stats_command(
    name: str = typer.Argument(None, help="One journey; default: every journey that has run"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Entered, active, completed, exited and converted by group; lift over the holdout;
    messages per step by status."""
    rt = runtime()
    with rt.engine.connect() as conn:
        names = [name] if name else all_journey_names(conn)
        stats = [journey_stats(conn, n) for n in names]
    if as_json:
        console.print_json(json.dumps([s.as_json() for s in stats]))
        return
    if not stats:
        console.print("no journey has run yet")
    for s in stats:
        print_stats(s)


def print_stats(s: object) -> None:
    from telecrm.journeys.stats import JourneyStats

    assert isinstance(s, JourneyStats)
    table = Table(
        "group", "entered", "active", "completed", "exited", "converted", "conversion",
        title=f"journey {s.journey}",
    )  # fmt: skip
    for grp, g in sorted(s.groups.items(), reverse=True):
        rate = "-" if g.rate is None else f"{g.rate:.1%}"
        table.add_row(
            grp,
            *(f"{v:,}" for v in (g.entered, g.active, g.completed, g.exited, g.converted)),
            rate,
        )
    console.print(table)
    if s.lift is not None:
        p = s.p_value
        console.print(
            f"lift over holdout: {s.lift:+.1%}" + (f" (p = {p:.3f})" if p is not None else ""),
            highlight=False,
        )
    elif "holdout" not in s.groups:
        console.print("no holdout group: lift not measured", highlight=False)
    if s.steps:
        steps = Table("step", "messages", "by status", title="messages per step")
        for step, counts in sorted(s.steps.items()):
            detail = ", ".join(f"{k} {v}" for k, v in counts.most_common())
            steps.add_row(step, f"{sum(counts.values()):,}", detail)
        console.print(steps)
    if s.exits:
        console.print(
            "exits: " + ", ".join(f"{k} {v}" for k, v in s.exits.most_common()), highlight=False
        )


@journeys_app.command("run")
@friendly_errors
def run_command() -> None:
    """One round by hand (what `telecrm serve` does every second): match new activity, start and
    end journeys, fire due timers, plan their messages, deliver due webhook steps."""
    rt = runtime()
    parts = rt.journeys()
    report = parts.runner.drain()
    hooks = parts.webhooks.drain()
    console.print(
        f"{report.activity:,} activity read ({report.stale:,} too old to start anything); "
        f"{report.entered:,} entered ({report.held_out:,} held out, {report.filtered:,} filtered "
        f"out), {report.exited:,} exited, {report.converted:,} converted, {report.resumed:,} "
        f"resumed; {report.fired:,} timers fired, {report.steps:,} steps, {report.sends:,} "
        f"messages planned; webhooks: {hooks.delivered:,} delivered, {hooks.retried:,} retrying, "
        f"{hooks.failed + hooks.gave_up:,} failed",
        highlight=False,
    )
