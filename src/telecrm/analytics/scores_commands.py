"""CLI: `telecrm analytics scores --patient ID`, one patient's scores and why (audited)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from telecrm.analytics.adherence import MeasurementPeriod
from telecrm.analytics.patient_scores import score_patients
from telecrm.analytics.scoring_config import ScoringConfigError, load_scoring_config
from telecrm.cli_support import console, fail, friendly_errors, runtime
from telecrm.profiles.views import PatientNotFound, find_patient_key


@friendly_errors
def scores_command(
    patient: str = typer.Option(..., "--patient", help="The platform's patient id"),
    config: Path = typer.Option(None, help="A scoring.yaml to use instead of the built-in one"),
    days: int = typer.Option(365, min=91, max=3650, help="Adherence period: days ending today"),
    actor: str = typer.Option("cli", help="Who is looking (recorded in the audit log)"),
) -> None:
    """One patient's lead score with its reasons, engagement score and PDC per medication.

    Medication names are PHI: this view shows them and records the read in the audit log.
    """
    try:
        scoring = load_scoring_config(config)
    except ScoringConfigError as exc:
        raise fail(str(exc), code=2) from None
    rt = runtime()
    cipher, index, now = rt.cipher(), rt.blind_index(), rt.clock.now()
    try:
        with rt.engine.begin() as conn:
            key = find_patient_key(conn, index, patient_id=patient, email=None, phone=None)
            (scores,) = score_patients(
                conn,
                cipher,
                [key],
                now,
                scoring,
                actor=actor,
                purpose="analytics scores view (medication names shown)",
                period=MeasurementPeriod.trailing(now.date(), days),
            )
    except PatientNotFound as exc:
        raise fail(str(exc)) from None
    lead = scores.lead
    console.print(
        f"[bold]{scores.patient_key}[/]  lead score [cyan]{lead.score:.1f}[/] "
        f"(fit {lead.fit:.1f} + behaviour {lead.behaviour:.1f})"
    )
    reasons = Table("rule", "points now", title="why")
    for reason in lead.reasons:
        if abs(reason.points) < 0.05:  # decayed to nothing; still part of the sum
            continue
        reasons.add_row(reason.rule, f"{reason.points:.1f}")
    console.print(reasons)
    parts = ", ".join(
        f"{name} {'-' if v is None else f'{v:.2f}'}" for name, v in scores.engagement_parts.items()
    )
    console.print(f"engagement score [cyan]{scores.engagement:.1f}[/] / 100  ({parts})")
    table = Table(
        "medication", "fills", "first fill", "days", "covered", "PDC", "adherent",
        title=f"adherence, {days} days to {now.date().isoformat()} (audited)",
    )  # fmt: skip
    for pdc in scores.adherence:
        table.add_row(
            pdc.medication,
            str(pdc.fills),
            pdc.index_date.isoformat() if pdc.index_date else "-",
            str(pdc.days_in_period or "-"),
            str(pdc.days_covered if pdc.pdc is not None else "-"),
            f"{pdc.pdc:.1%}" if pdc.pdc is not None else (pdc.excluded or "-"),
            {True: "yes", False: "no", None: "-"}[pdc.adherent],
        )
    if scores.adherence:
        console.print(table)
    else:
        console.print("adherence: no fills")


def register(app: typer.Typer) -> None:
    app.command("scores")(scores_command)
