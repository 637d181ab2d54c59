"""CLI: `telecrm analytics run`, every patient scored and the changed scores stored beside profiles."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.model_store import MAX_MODEL_AGE
from telecrm.analytics.score_run import RunReport, ScoreRun, headline
from telecrm.analytics.scoring_config import ScoringConfig, load_scoring_config
from telecrm.cli_support import console, friendly_errors, runtime


@friendly_errors
def run_command(
    config: Path = typer.Option(None, help="A scoring.yaml to use instead of the built-in one"),
    chunk: int = typer.Option(5_000, min=100, max=50_000, help="Patients per transaction"),
    project: bool = typer.Option(
        True,
        help="Fold the stage changes (at-risk crossings) now (else the running service does)",
    ),
    refit: bool = typer.Option(
        False, "--refit", help="Fit the value and churn models again even if a recent fit exists"
    ),
    max_model_age_days: int = typer.Option(
        7, min=1, max=90, help="Reuse the newest stored fit while it is younger than this"
    ),
    full_read: bool = typer.Option(
        False,
        "--full-read",
        help="Read every patient from the store, not only those whose history changed",
    ),
) -> None:
    """Score every patient: lead, engagement, churn risk, 12-month value, adherence (PDC).

    The lifetime value and churn models are fitted on the whole event log when the newest stored
    fit is a week old (--max-model-age-days) or --refit asks; otherwise that fit predicts. The
    inputs (events, fills, the rules' profile fields) are kept sealed between runs, so a run
    reads from the store only the patients whose history changed since the last one
    (--full-read reads everyone). Every patient is scored, and those whose rounded scores changed are stored
    beside their profiles in bulk (adherence sealed) and marked for the CRMs' score fields. A
    churn risk that crosses TELECRM_CHURN_RISK_CUTOFF also becomes an `analytics.scored` event,
    which moves the customer into (or out of) at_risk when folded. Prints aggregates only.

    Examples: telecrm analytics run; telecrm analytics run --refit --chunk 10000
    """
    scoring = load_scoring_config(config)
    rt = runtime()
    now = rt.clock.now()
    report = score_everyone(
        rt,
        console,
        scoring,
        actor="cli",
        chunk=chunk,
        refit=refit,
        max_model_age=timedelta(days=max_model_age_days),
        full_read=full_read,
    )
    for note in report.notes:
        console.print(f"[yellow]{note}[/]: that score is left empty")
    table = Table("", "", title=f"scores as of {now:%Y-%m-%d %H:%M} UTC", show_header=False)
    for label, value in headline(report):
        table.add_row(label, value)
    console.print(table)
    timing = ", ".join(f"{name} {s:.1f} s" for name, s in report.seconds.items())
    console.print(f"[dim]{timing}[/]")
    console.print(f"profiles updated: {report.written:,} patients' scores stored")
    if project and report.stage_events:
        with console.status("folding the at-risk crossings into stages"):
            done = rt.worker().drain()
        console.print(f"stages: {done.events:,} events folded, {done.transitions:,} stage moves")


def score_everyone(
    rt: Any,
    out: Console,
    scoring: ScoringConfig,
    *,
    actor: str,
    chunk: int = 5_000,
    log: ea.EventArrays | None = None,
    refit: bool = False,
    max_model_age: timedelta = MAX_MODEL_AGE,
    full_read: bool = False,
) -> RunReport:
    """One `ScoreRun` over every patient, with a progress bar (the command and the demo)."""
    run = ScoreRun(
        rt.engine,
        rt.cipher(),
        rt.intake(),
        scoring,
        churn_risk_cutoff=rt.settings.churn_risk_cutoff,
        actor=actor,
        on_written=rt.profiles_written,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task("reading what changed since the last run", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        return run.run(
            rt.clock.now(),
            chunk=chunk,
            log=log,
            refit=refit,
            max_model_age=max_model_age,
            full_read=full_read,
            on_progress=progress,
        )


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
