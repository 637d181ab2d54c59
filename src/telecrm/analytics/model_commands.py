"""CLI: `telecrm analytics models`, the stored value and churn model fits and which one is used."""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from telecrm.analytics.model_store import MAX_MODEL_AGE, list_models, why_not_reused
from telecrm.cli_support import console, friendly_errors, runtime


@friendly_errors
def models_command(
    max_model_age_days: int = typer.Option(
        MAX_MODEL_AGE.days, min=1, max=90, help="As `analytics run --max-model-age-days`"
    ),
) -> None:
    """The stored fits of the lifetime value and churn models, newest first, and whether the next
    `telecrm analytics run` would use the newest or fit again (and why). Counts only; the sealed
    models are not opened.

    Example: telecrm analytics models
    """
    rt = runtime()
    now = rt.clock.now()
    with rt.engine.connect() as conn:
        fits = list_models(conn)
    if not fits:
        console.print("no fit stored yet: the next `telecrm analytics run` fits the models")
        return
    table = Table("fit", "fitted (UTC)", "buyers", "churn training rows", "fit s", "notes")
    for model_id, fitted_at, summary in fits:
        notes = "; ".join(n for n in (summary.get("ltv_note"), summary.get("churn_note")) if n)
        table.add_row(
            model_id,
            f"{fitted_at:%Y-%m-%d %H:%M}",
            "-" if summary.get("buyers") is None else f"{summary['buyers']:,}",
            "-"
            if summary.get("churn_training_rows") is None
            else f"{summary['churn_training_rows']:,}",
            f"{summary.get('fit_seconds', 0):.1f}",
            notes or "-",
        )
    console.print(table)
    newest_id, fitted_at, summary = fits[0]
    why = why_not_reused(summary, fitted_at, now, timedelta(days=max_model_age_days))
    if why is None:
        console.print(f"the next run uses {newest_id}")
    else:
        console.print(f"the next run fits again: {why}")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
