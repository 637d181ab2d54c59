"""`report.html`: the live report as one self-contained, printable page with two charts.

Rendered from `templates/live_report.html.j2` with autoescape on; the charts are the only markup
passed through, drawn by matplotlib from stage names, funnel names and counts. Small cells are
drawn as 0 and labelled "<5", so a chart never shows what its table hides.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from telecrm.reports.plan_chart import bars_svg
from telecrm.reports.readiness_html import _environment


def stage_chart(r: dict[str, Any]) -> str:
    stages = r["stages"]
    return bars_svg(
        [s["stage"] for s in stages],
        [s["patients"]["n"] or 0 for s in stages],
        [s["patients"]["shown"] for s in stages],
        xlabel="patients now in the stage",
        caption_id="stage-caption",
    )


def funnel_chart(r: dict[str, Any]) -> str:
    rows = r["funnels"]["all"]
    values = [
        100 * f["converted"]["n"] / f["entered"]["n"]
        if f["converted"]["n"] and f["entered"]["n"]
        else 0.0
        for f in rows
    ]
    return bars_svg(
        [f"{f['funnel']} ({f['from']} → {f['to']})" for f in rows],
        values,
        [f["rate"] for f in rows],
        xlabel="conversion, % of patients who entered",
        caption_id="funnel-caption",
    )


def render_live_html(r: dict[str, Any]) -> str:
    return (
        _environment()
        .get_template("live_report.html.j2")
        .render(
            r=r,
            stage_chart=Markup(stage_chart(r)),  # noqa: S704 - stage names and counts only
            funnel_chart=Markup(funnel_chart(r)),  # noqa: S704 - funnel names and rates only
        )
    )
