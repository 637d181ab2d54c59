"""`telecrm analytics funnels | cohorts | forecast | providers | geography`: aggregate reports
as Rich tables, with charts (PNG + SVG) written where `--chart DIR` says. Small cells print as
"<5"; no patient or provider identifier is ever printed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from telecrm.analytics import event_arrays
from telecrm.analytics.small_cells import SUPPRESSED, shown_count, shown_share
from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import to_micros


class GroupBy(StrEnum):
    all = "all"
    channel = "channel"
    cohort = "cohort"


_WINDOW = re.compile(r"^(\d+)([dw])$")

AS_OF_HELP = "Report as of this ISO date/time (UTC); default now"
CHART_HELP = "Write PNG and SVG charts into this directory"


def parse_window(text: str) -> timedelta | None:
    """`30d`, `12w`, or `all` (no window: ever converted)."""
    if text == "all":
        return None
    m = _WINDOW.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise fail("--window must look like 30d, 12w or all", code=2)
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(weeks=n)


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise fail("--as-of must be an ISO date such as 2026-01-01", code=2) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _charts_written(paths: list[Path]) -> None:
    for p in paths:
        console.print(f"[dim]chart:[/] {p}")


@friendly_errors
def funnels_command(
    window: str = typer.Option("30d", help="Conversion window: 30d, 12w, or all"),
    by: GroupBy = typer.Option(GroupBy.all, help="Split by acquisition channel or monthly cohort"),
    chart: Path | None = typer.Option(None, help=CHART_HELP),
    as_of: str | None = typer.Option(None, help=AS_OF_HELP),
) -> None:
    """Conversion within a window and median time to convert, for the 4 lifecycle funnels."""
    from telecrm.analytics.funnels import funnel_conversions, load_ladder

    span = parse_window(window)
    rt = runtime()
    at = _as_of(as_of) or rt.clock.now()
    with rt.engine.connect() as conn:
        ladder = load_ladder(conn)
    rows = funnel_conversions(ladder, as_of_us=to_micros(at), window=span, by=by.value)
    label = "ever" if span is None else f"within {window}"
    table = Table(title=f"funnels: conversion {label} (as of {at.date()})")
    for name in ("funnel", "group", "entered", "converted", "rate", "median days", "pending"):
        table.add_column(name, justify="left" if name in ("funnel", "group") else "right")
    for r in rows:
        res = r.result
        table.add_row(
            res.funnel.name,
            r.group,
            shown_count(res.entered),
            shown_count(res.converted),
            shown_share(res.converted, res.entered),
            _fmt(r.median_days, ".1f") if res.converted >= 5 else SUPPRESSED,
            shown_count(r.pending),
        )
    console.print(table)
    if chart is not None:
        from telecrm.analytics.charts import funnel_chart

        _charts_written(funnel_chart(rows, chart, title=f"Lifecycle funnels, conversion {label}"))


@friendly_errors
def cohorts_command(
    chart: Path | None = typer.Option(None, help=CHART_HELP),
    as_of: str | None = typer.Option(None, help=AS_OF_HELP),
    months: int = typer.Option(12, min=1, max=60, help="Months since first order to show"),
) -> None:
    """Retention by first-order month: share still purchasing / subscribed k months later."""
    from telecrm.analytics.cohorts import retention_matrix

    rt = runtime()
    at = _as_of(as_of) or rt.clock.now()
    arrays = event_arrays.from_store(rt.engine, rt.cipher())
    m = retention_matrix(arrays, as_of_days=event_arrays.to_days(at))
    if not m.cohorts:
        console.print("no complete month with a paid order yet: nothing to report")
        return
    for title, values in (("still purchasing", m.purchasing), ("still subscribed", m.subscribed)):
        width = min(m.months, months)
        table = Table(title=f"cohorts: share {title} in month k (as of {at.date()})")
        table.add_column("cohort")
        table.add_column("patients", justify="right")
        for k in range(width):
            table.add_column(str(k), justify="right")
        for i, cohort in enumerate(m.cohorts):
            cells = ["" if np.isnan(v) else f"{v:.0%}" for v in values[i, :width]]
            if cohort in m.suppressed:
                cells = [SUPPRESSED] + [""] * (width - 1)
            table.add_row(cohort, shown_count(int(m.sizes[i])), *cells)
        console.print(table)
    if chart is not None:
        from telecrm.analytics.charts import cohort_heatmap

        _charts_written(cohort_heatmap(m, chart) + cohort_heatmap(m, chart, subscribed=True))


@friendly_errors
def forecast_command(
    weeks: int = typer.Option(12, min=1, max=104, help="Weeks to forecast"),
    chart: Path | None = typer.Option(None, help=CHART_HELP),
    as_of: str | None = typer.Option(None, help=AS_OF_HELP),
) -> None:
    """Weekly paid orders: Holt-Winters forecast with intervals and its backtest error."""
    from telecrm.analytics.forecast import ForecastUnavailable, backtest, forecast, weekly_orders

    rt = runtime()
    at = _as_of(as_of) or rt.clock.now()
    with rt.engine.connect() as conn:
        series = weekly_orders(conn, as_of=at)
    try:
        fc = forecast(series.counts, weeks)
    except ForecastUnavailable as exc:
        raise fail(str(exc), hint="import more history or use a later --as-of") from None
    try:
        bt = backtest(series.counts, horizon=weeks)
    except ForecastUnavailable as exc:
        bt = None
        console.print(f"[yellow]no backtest:[/] {exc}")
    model = "Holt-Winters, damped trend + yearly season" if fc.seasonal else "damped trend"
    table = Table(title=f"forecast: paid orders per week ({model}; {len(series.counts)} weeks)")
    for name in ("week of", "forecast", "80% interval", "95% interval"):
        table.add_column(name, justify="right")
    start = series.week(len(series.counts))
    for i in range(weeks):
        table.add_row(
            str(start + timedelta(weeks=i)),
            f"{fc.mean[i]:,.0f}",
            f"{fc.lower80[i]:,.0f}-{fc.upper80[i]:,.0f}",
            f"{fc.lower95[i]:,.0f}-{fc.upper95[i]:,.0f}",
        )
    console.print(table)
    if fc.note:
        console.print(f"[yellow]note:[/] {fc.note}")
    if bt is not None:
        acc = Table(title=f"backtest: {len(bt.origins)} rolling origins, {bt.horizon}-week horizon")
        for name in ("model", "MASE", "sMAPE"):
            acc.add_column(name, justify="left" if name == "model" else "right")
        acc.add_row("Holt-Winters", f"{bt.model_mase:.3f}", f"{bt.model_smape:.1f}%")
        acc.add_row("seasonal naive", f"{bt.naive_mase:.3f}", f"{bt.naive_smape:.1f}%")
        console.print(acc)
        verdict = "beats" if bt.beats_naive else "does NOT beat"
        console.print(f"Holt-Winters {verdict} the seasonal-naive benchmark on MASE.")
    if chart is not None:
        from telecrm.analytics.charts import forecast_chart

        _charts_written(forecast_chart(series, fc, chart, bt=bt))


@friendly_errors
def providers_command(
    reason: str = typer.Option(..., help="Why you need this (provider ids are PHI; audited)"),
) -> None:
    """Provider turnaround, acceptance and satisfaction; providers shown by rank, never by id."""
    from telecrm.analytics.providers import provider_performance

    rt = runtime()
    cipher = rt.cipher()  # before the transaction: loading keys may use its own connection
    with rt.engine.begin() as conn:
        rows = provider_performance(conn, cipher, actor="cli", purpose=reason, now_us=now_us(rt))
    table = Table(title="provider performance (providers with < 5 patients pooled)")
    for name in (
        "provider",
        "providers",
        "patients",
        "assigned",
        "acceptance",
        "median min to accept",
        "prescribed",
        "median h to Rx",
        "survey answers",
        "NPS",
    ):
        table.add_column(name, justify="left" if name == "provider" else "right")
    for r in rows:
        small = r.patients < 5
        table.add_row(
            r.label,
            str(r.providers),
            shown_count(r.patients),
            shown_count(r.assigned),
            shown_share(r.accepted, r.assigned),
            SUPPRESSED if small else _fmt(r.median_accept_minutes, ".0f"),
            shown_share(r.approved, r.accepted),
            SUPPRESSED if small else _fmt(r.median_approve_hours, ".1f"),
            shown_count(len(r.scores)),
            SUPPRESSED if len(r.scores) < 5 else _fmt(r.nps, "+.0f"),
        )
    console.print(table)


@friendly_errors
def geography_command(
    reason: str = typer.Option(
        ..., help="Why you need this (state is sealed; the read is audited)"
    ),
) -> None:
    """Patients, consultation conversion and paid orders per state (small states pooled)."""
    from telecrm.analytics.geography import state_trends

    rt = runtime()
    cipher = rt.cipher()  # before the transaction: loading keys may use its own connection
    with rt.engine.begin() as conn:
        rows = state_trends(conn, cipher, actor="cli", purpose=reason, now_us=now_us(rt))
    table = Table(title="geography: by state (states with < 5 patients pooled as 'other')")
    for name in (
        "state",
        "patients",
        "became patients",
        "consult conversion",
        "customers",
        "paid orders",
    ):
        table.add_column(name, justify="left" if name == "state" else "right")
    for r in rows:
        name = f"{r.state} ({r.states_pooled} states)" if r.state == "other" else r.state
        table.add_row(
            name,
            shown_count(r.patients),
            shown_count(r.became_patients),
            shown_share(r.became_patients, r.consulted_entered),
            shown_count(r.customers),
            shown_count(r.orders),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the report commands to `telecrm analytics`."""
    app.command("funnels")(funnels_command)
    app.command("cohorts")(cohorts_command)
    app.command("forecast")(forecast_command)
    app.command("providers")(providers_command)
    app.command("geography")(geography_command)
