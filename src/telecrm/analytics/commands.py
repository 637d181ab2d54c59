"""CLI for analytics: `telecrm analytics ...`. Each part registers its own commands."""

from __future__ import annotations

import typer

analytics_app = typer.Typer(
    help="Scores, lifetime value, churn risk, adherence, funnels, cohorts and forecasts.",
    no_args_is_help=True,
)

# Each part's commands (scores, lifetime value and churn, reports), registered here.
from telecrm.analytics import (  # noqa: E402
    clv_commands,
    model_commands,
    report_commands,
    run_commands,
    scores_commands,
)

for _part in (run_commands, model_commands, scores_commands, clv_commands, report_commands):
    _part.register(analytics_app)
