"""`readiness.html`: the readiness analysis as one printable page, each count linked to its evidence.

Rendered from `templates/readiness.html.j2` with autoescape on, so every value taken from the
analyzed document (paths, titles, pointers, messages) is escaped; the only markup passed through
unescaped is the chart, which matplotlib draws from catalog labels and numbers alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from telecrm.reports.plan_chart import complexity_svg
from telecrm.reports.readiness_chart import data_point_counts, data_points_svg

Row = dict[str, Any]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def summary_rows(report: dict[str, Any]) -> list[Row]:
    """The summary table: measure, count, the endpoints it counts and the JSON pointers behind it.

    Each row's `anchor` (`ev-1`, `ev-2` ...) is where the page lists that evidence.
    """
    s, endpoints = report["summary"], report["endpoints"]

    def row(measure: str, count: object, chosen: list[Row], pointers: list[str]) -> Row:
        ids = [e["id"] for e in chosen]
        return {"measure": measure, "count": count, "endpoints": ids, "pointers": _unique(pointers)}

    def counted(pred: Callable[[Row], bool]) -> tuple[list[Row], list[str]]:
        chosen = [e for e in endpoints if pred(e)]
        return chosen, [p for e in chosen for p in e["evidence"]]

    rows = [row("endpoints", s["endpoints"], *counted(lambda e: True))]
    rows.append(row(
        "operations documented", f"{s['operations']} ({s['duplicates_merged']} duplicates merged)",
        *counted(lambda e: len(e["evidence"]) > 1),
    ))  # fmt: skip
    rows.append(row("webhooks", s["webhooks"], *counted(lambda e: bool(e["webhook"]))))
    feeds = [e for e in endpoints if e["change_feed"]]
    rows.append(row(
        "list endpoints with a change feed", s["with_change_feed"], feeds,
        [p["evidence"] for e in feeds for p in e["change_feed"]],
    ))  # fmt: skip
    for auth, n in s["by_auth"].items():
        authed = [e for e in endpoints if auth in e["auth"]]
        rows.append(row(f"auth {auth}", n, authed, [p for e in authed for p in e["auth_evidence"]]))
    for level, n in s["by_relevance"].items():
        ranked = [e for e in endpoints if e["relevance"]["level"] == level]
        rows.append(
            row(f"relevance {level}", n, ranked, [p for e in ranked for p in e["evidence"]])
        )
    found = [p for p in report["data_points"] if p["catalog_fields"]]
    rows.append(row(
        "data points found", f"{s['data_points_found']} of {s['data_points_total']}", [],
        [ev for p in found for ev in p["evidence"]],
    ))  # fmt: skip
    phi = [e for e in endpoints if any(f["phi"] for f in e["fields"])]
    rows.append(row(
        "PHI fields", s["phi_fields"], phi,
        [f"{e['id']} {f['evidence']}" for e in phi for f in e["fields"] if f["phi"]],
    ))  # fmt: skip
    rows.append(row(
        "unmapped fields", s["unmapped_fields"], [],
        [f"{u['endpoint']} {u['evidence']}" for u in report["unmapped_fields"]],
    ))  # fmt: skip
    rows.append(row(
        "findings", s["findings"], [], [p for f in report["findings"] for p in f["evidence"]]
    ))  # fmt: skip
    rows += plan_summary_rows(report, row)
    for n, r in enumerate(rows, 1):
        r["anchor"] = f"ev-{n}"
    return rows


def plan_summary_rows(report: dict[str, Any], row: Callable[..., Row]) -> list[Row]:
    """Summary rows for the plan sections: stages, funnels, triggers, complexity per CRM, roadmap."""
    life = report.get("lifecycle")
    if not life:
        return []
    by_id = {e["id"]: e for e in report["endpoints"]}
    s = life["summary"]

    def endpoints_of(items: list[Row]) -> tuple[list[Row], list[str]]:
        chosen = [by_id[i] for i in dict.fromkeys(e["endpoint"] for e in items) if i in by_id]
        return chosen, [p for e in items for p in e["evidence"]]

    stages = [e for st in life["stages"] for e in st["endpoints"]]
    triggers = [e for t in life["triggers"] for e in t["endpoints"]]
    rows = [
        row(
            "lifecycle stages evidenced",
            f"{s['stages_evidenced']} of {s['stages_total']} (+{s['stages_derived']} derived)",
            *endpoints_of(stages),
        ),
        row(
            "funnels measurable",
            f"{s['funnels_measurable']} of {s['funnels_total']}",
            *endpoints_of(stages),
        ),
        row(
            "automation triggers fed",
            f"{s['triggers_found']} of {s['triggers_total']} ({s['triggers_pushed']} pushed)",
            *endpoints_of(triggers),
        ),
    ]
    for p in report.get("crm_plans", []):
        c = p["complexity"]
        pointers = [o["evidence"][0] for o in p["objects"]] + [
            f["evidence"] for f in p["custom_fields"]
        ]
        pointers += [t["evidence"] for t in p["custom_tables"]]
        chosen = [
            by_id[i["item"]]
            for k in ("endpoints_to_pull", "webhooks_to_receive")
            for i in p["work"][k]
        ]
        rows.append(
            row(f"{p['title']} complexity", f"{c['total']} ({c['band']})", chosen, pointers)
        )
    steps = report.get("roadmap", [])
    rows.append(row("roadmap steps", len(steps), [], [p for st in steps for p in st["evidence"]]))
    return rows


def chart_table(report: dict[str, Any]) -> list[Row]:
    """The chart's numbers as rows, for readers who cannot see it (and for print in black and white)."""
    return [
        {"category": category, "class": cls, "found": found, "total": total}
        for category, classes in data_point_counts(report).items()
        for cls, (found, total) in classes.items()
    ]


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("telecrm.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(report: dict[str, Any]) -> str:
    """The whole page: summary, chart, endpoints, data points, unmapped fields, findings, evidence."""
    return (
        _environment()
        .get_template("readiness.html.j2")
        .render(
            r=report,
            s=report["summary"],
            summary=summary_rows(report),
            chart=Markup(data_points_svg(report)),  # noqa: S704 - matplotlib output, catalog labels only
            chart_rows=chart_table(report),
            complexity_chart=Markup(complexity_svg(report["crm_plans"]))  # noqa: S704 - mapping names, counts
            if report.get("crm_plans")
            else "",
        )
    )
