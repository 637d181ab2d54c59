"""The demo's analytics part: every patient scored and stored, then the headline numbers, the churn
model's held-out evaluation, the forecast's backtest, and charts written next to the database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.churn import DEFAULT_HORIZON_DAYS, evaluate_churn, train_churn_model
from telecrm.analytics.clv import ModelNotFitted
from telecrm.analytics.run_commands import score_everyone
from telecrm.analytics.score_run import headline
from telecrm.analytics.scoring_config import load_scoring_config
from telecrm.domain.clock import to_micros


def demo_analytics(
    rt: Any, console: Console, charts: Path, history_end: datetime
) -> dict[str, Any]:
    """Score, store and summarise; returns the numbers the demo checks. Scores are as of now;
    the forecast starts where the simulated history ends (`history_end`)."""
    now = rt.clock.now()
    log = ea.from_store(rt.engine, rt.cipher())
    report = score_everyone(rt, console, load_scoring_config(None), actor="demo", log=log)
    folded = rt.worker().drain()
    table = Table(
        "", "", title="`telecrm analytics run`: scores stored on profiles", show_header=False
    )
    for label, value in headline(report):
        table.add_row(label, value)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")
    console.print(
        f"{report.written:,} patients' scores stored beside their profiles; "
        f"{folded.events:,} at-risk crossings folded, {folded.transitions:,} stage moves "
        f"(churn risk >= {rt.settings.churn_risk_cutoff} makes a customer at_risk); "
        "the CRM score fields sync from here"
    )
    out: dict[str, Any] = {"patients": report.patients, "written": report.written}
    out["auc"] = _churn_evaluation(console, log, ea.to_days(now))
    out["charts"] = _charts(rt, console, charts, min(now, history_end))
    return out


def _churn_evaluation(console: Console, log: ea.EventArrays, end: float) -> float | None:
    horizon = DEFAULT_HORIZON_DAYS
    evaluate_at = end - horizon
    try:
        model = train_churn_model(
            log, tuple(evaluate_at - horizon * k for k in (1, 2, 3)), horizon_days=horizon
        )
        r = evaluate_churn(model, log, evaluate_at)
    except ModelNotFitted as exc:
        console.print(f"[yellow]churn model not evaluated:[/] {exc}")
        return None
    console.print(
        f"churn model, held out on the last {horizon:.0f}-day window ({r.rows:,} customers, "
        f"churn rate {r.base_rate:.1%}): AUC [cyan]{r.auc:.3f}[/] (recency alone "
        f"{r.recency_only_auc:.3f}), calibration error {r.calibration_error:.3f}, "
        f"top-decile lift {r.lift_top_decile:.2f}"
    )
    return r.auc


def _charts(rt: Any, console: Console, directory: Path, now: datetime) -> list[Path]:
    from telecrm.analytics.charts import cohort_heatmap, forecast_chart, funnel_chart
    from telecrm.analytics.cohorts import retention_matrix
    from telecrm.analytics.forecast import ForecastUnavailable, backtest, forecast, weekly_orders
    from telecrm.analytics.funnels import funnel_conversions, load_ladder

    paths: list[Path] = []
    with rt.engine.connect() as conn:
        ladder = load_ladder(conn)
        series = weekly_orders(conn, as_of=now)
    rows = funnel_conversions(ladder, as_of_us=to_micros(now), window=None, by="all")
    paths += funnel_chart(rows, directory, title="Lifecycle funnels, conversion ever")
    matrix = retention_matrix(ea.from_store(rt.engine, rt.cipher()), as_of_days=ea.to_days(now))
    if matrix.cohorts:
        paths += cohort_heatmap(matrix, directory)
    try:
        fc = forecast(series.counts, 12)
        try:
            bt = backtest(series.counts, horizon=12)
            verdict = "beats" if bt.beats_naive else "does not beat"
            console.print(
                f"weekly-orders forecast from {now:%Y-%m-%d}: next 12 weeks {fc.mean.sum():,.0f} "
                f"orders; backtest "
                f"MASE {bt.model_mase:.2f} vs seasonal naive {bt.naive_mase:.2f} ({verdict} it)"
            )
        except ForecastUnavailable as exc:
            bt = None
            console.print(f"weekly-orders forecast: next 12 weeks {fc.mean.sum():,.0f}; {exc}")
        paths += forecast_chart(series, fc, directory, bt=bt)
    except ForecastUnavailable as exc:
        console.print(f"[yellow]no forecast:[/] {exc}")
    console.print(
        f"charts: {', '.join(sorted({str(p.parent) for p in paths}))} ({len(paths)} files)"
    )
    return paths
