"""CLI for analytics: `telecrm analytics ...`. Each part registers its own commands."""

from __future__ import annotations

import typer

analytics_app = typer.Typer(
    help="Scores, lifetime value, churn risk, adherence, funnels, cohorts and forecasts.",
    no_args_is_help=True,
)

# Each part's commands (scores, lifetime value and churn, reports), registered here.
from telecrm.analytics import clv_commands, report_commands, scores_commands  # noqa: E402

for _part in (scores_commands, clv_commands, report_commands):
    _part.register(analytics_app)
