"""Charts for the funnel, cohort and forecast reports: PNG for slides, SVG for the web.

matplotlib's Agg backend (no display needed). Each function writes `<dir>/<name>.png` and
`<dir>/<name>.svg` and returns both paths. Inputs are aggregates already suppressed upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from telecrm.analytics.cohorts import RetentionMatrix
from telecrm.analytics.forecast import Backtest, Forecast, WeeklySeries
from telecrm.analytics.funnels import FunnelRow
from telecrm.analytics.small_cells import MIN_CELL

FORMATS = ("png", "svg")
ACCENT = "#2563eb"
MUTED = "#cbd5e1"


def _save(fig: Figure, directory: Path, name: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = directory / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight", metadata=_metadata(fmt))
        paths.append(path)
    return paths


def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure on the Agg canvas: no pyplot, so no global state shared between threads."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _metadata(fmt: str) -> dict[str, str | None]:
    # No creation date in the files, so the same data draws the same bytes.
    return {"Software": None} if fmt == "png" else {"Date": None}


def funnel_chart(rows: Sequence[FunnelRow], directory: Path, *, title: str) -> list[Path]:
    """Entered vs converted bars per funnel (and group), labelled with the rate."""
    shown = [r for r in rows if r.result.entered >= MIN_CELL]
    labels = [r.funnel.name if r.group == "all" else f"{r.funnel.name} · {r.group}" for r in shown]
    fig, ax = _figure((8, 0.45 * max(len(shown), 4) + 1.2))
    y = np.arange(len(shown))[::-1]
    entered = [r.result.entered for r in shown]
    converted = [r.result.converted for r in shown]
    ax.barh(y, entered, color=MUTED, label="entered")
    ax.barh(y, converted, color=ACCENT, label="converted")
    for yi, r in zip(y, shown, strict=True):
        rate = r.result.rate
        days = f", median {r.median_days:.1f} d" if r.median_days is not None else ""
        text = f"{rate:.1%}{days}" if rate is not None and r.result.converted >= MIN_CELL else "<5"
        ax.text(r.result.entered, yi, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("patients")
    ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlim(0, max(entered, default=1) * 1.35)
    return _save(fig, directory, "funnels")


def cohort_heatmap(
    matrix: RetentionMatrix, directory: Path, *, subscribed: bool = False
) -> list[Path]:
    """Cohort (rows) by months since first order (columns), coloured by the share retained."""
    values = matrix.subscribed if subscribed else matrix.purchasing
    fig, ax = _figure((1.0 + 0.55 * max(matrix.months, 3), 1.0 + 0.4 * max(len(matrix.cohorts), 3)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.0%}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.6 else "black",
                )
    ax.set_yticks(
        range(len(matrix.cohorts)),
        [
            f"{c} (n={n:,})" if n >= MIN_CELL else f"{c} (n<5)"
            for c, n in zip(matrix.cohorts, matrix.sizes, strict=True)
        ],
        fontsize=7,
    )
    ax.set_xticks(range(matrix.months), [str(k) for k in range(matrix.months)], fontsize=7)
    ax.set_xlabel("months since first order")
    what = "still subscribed" if subscribed else "still purchasing"
    ax.set_title(f"Share of each first-order cohort {what}")
    fig.colorbar(image, ax=ax, format=lambda x, _: f"{x:.0%}", shrink=0.8)
    return _save(fig, directory, "cohorts_subscribed" if subscribed else "cohorts")


def forecast_chart(
    series: WeeklySeries,
    fc: Forecast,
    directory: Path,
    *,
    bt: Backtest | None = None,
) -> list[Path]:
    """History, backtest fold forecasts, and the forecast with its 80 % / 95 % bands."""
    n, h = len(series.counts), len(fc.mean)
    weeks = [series.week(i) for i in range(n)]
    ahead = [series.week(n - 1) + timedelta(weeks=i + 1) for i in range(h)]
    fig, ax = _figure((10, 4.2))
    ax.plot(weeks, series.counts, color="#334155", lw=1.2, label="paid orders per week")
    if bt is not None:
        for k, (origin, f) in enumerate(zip(bt.origins, bt.fold_forecasts, strict=True)):
            xs: list[date] = [series.week(origin + i) for i in range(len(f))]
            ax.plot(
                xs,
                f,
                color="#f59e0b",
                lw=0.9,
                alpha=0.8,
                label="backtest forecasts" if k == 0 else None,
            )
    ax.fill_between(ahead, fc.lower95, fc.upper95, color=ACCENT, alpha=0.15, label="95 % interval")
    ax.fill_between(ahead, fc.lower80, fc.upper80, color=ACCENT, alpha=0.3, label="80 % interval")
    ax.plot(ahead, fc.mean, color=ACCENT, lw=2, label="forecast")
    title = "Weekly paid orders: Holt-Winters forecast"
    if bt is not None:
        title += f"  (backtest MASE {bt.model_mase:.2f} vs seasonal-naive {bt.naive_mase:.2f})"
    ax.set_title(title, fontsize=10)
    if fc.note:
        ax.text(0.01, 0.97, fc.note, transform=ax.transAxes, fontsize=8, va="top", color="#64748b")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(0, 0.9), fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _save(fig, directory, "forecast")
