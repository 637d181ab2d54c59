"""CLI for analytics: `telecrm analytics ...`. Each part registers its own commands."""

from __future__ import annotations

import typer

analytics_app = typer.Typer(
    help="Scores, lifetime value, churn risk, adherence, funnels, cohorts and forecasts.",
    no_args_is_help=True,
)
