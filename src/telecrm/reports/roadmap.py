"""The roadmap: ordered steps to connect the analysed platform, each derived from a finding or a
gap in the report and carrying that finding's or gap's evidence.

Order: what blocks PHI from flowing safely first, then the BAA decisions, then what telecrm can do
today (provision, pull, receive webhooks), then what the platform must add, then clean-up.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

# Business-impact assumptions for planning, used only where nothing is measured yet. Each is a
# published benchmark quoted in /work/shared/research (file and section given), never our figure.
ASSUMPTIONS: tuple[Row, ...] = (
    {
        "figure": "B2C subscription churn ≈ 6.77 % a month (voluntary 3.95 %, involuntary 1.38 %)",
        "use": "size of the at_risk / win-back programs before telecrm has measured churn",
        "source": "Recurly churn benchmarks, https://recurly.com/research/churn-rate-benchmarks/",
        "research": "research/analytics.md §6",
    },
    {
        "figure": "email open 22.71 %, click 2.91 % (all-industry average, campaigns ≥ 1,000)",
        "use": "expected engagement of lifecycle emails; prefer clicks (opens are inflated)",
        "source": "Mailchimp email marketing benchmarks, https://mailchimp.com/resources/email-marketing-benchmarks/",
        "research": "research/analytics.md §6",
    },
    {
        "figure": "personalised SMS refill reminders: ~19 % higher likelihood of filling",
        "use": "expected effect of the refill_reminder journey (heart-failure study; not ours)",
        "source": "PLOS Digital Health study as summarised by Pharmacy Times, https://www.pharmacytimes.com/view/explainer-how-can-pharmacists-leverage-technology-to-improve-medication-adherence-",
        "research": "research/analytics.md §6, research/anchors-features.md",
    },
)

MEASURED_LATER = (
    "journey lift against the holdout, churn model evaluation and funnel conversion are measured "
    "by `telecrm report` on live data; this analysis of an API states no measured figure"
)


def _step(title: str, why: str, evidence: list[str], command: str | None = None) -> Row:
    return {
        "title": title,
        "why": why,
        "evidence": list(dict.fromkeys(evidence)),
        "command": command,
    }


def roadmap(report: dict[str, Any]) -> list[Row]:
    """Numbered steps; `report` already holds `lifecycle` and `crm_plans`."""
    steps: list[Row] = []
    findings = report.get("findings", [])
    for severity in ("high", "medium"):
        for f in (f for f in findings if f["severity"] == severity):
            steps.append(_step(
                f"Fix on the platform: {f['kind'].replace('_', ' ')}", f["message"], f["evidence"]
            ))  # fmt: skip
    phi = [p for p in report.get("data_points", []) if p["phi"] and p["catalog_fields"]]
    if phi:
        may = [p["title"] for p in report.get("crm_plans", []) if p["baa"] != "never"]
        steps.append(_step(
            f"Decide where the {len(phi)} PHI data point(s) may go",
            "PHI goes only to destinations under a BAA (mapping `baa: true`); candidates: "
            + ", ".join(may) + "; everything else keeps it out",
            [ev for p in phi for ev in p["evidence"]],
        ))  # fmt: skip
    for plan in report.get("crm_plans", []):
        c = plan["complexity"]
        steps.append(_step(
            f"Provision {plan['title']}: {len(plan['custom_fields'])} custom fields"
            + (f", {len(plan['custom_tables'])} tables" if plan["custom_tables"] else ""),
            f"complexity {c['total']} ({c['band']})",
            [f["evidence"] for f in plan["custom_fields"]] + [t["evidence"] for t in plan["custom_tables"]],
            f"telecrm crm provision {plan['crm']}",
        ))  # fmt: skip
    rows = report.get("endpoints", [])
    feeds = [r for r in rows if r.get("change_feed")]
    if feeds:
        steps.append(_step(
            f"Pull {len(feeds)} list endpoint(s) incrementally by their change feed",
            ", ".join(f"{r['id']} {r['method']} {r['path']}" for r in feeds),
            [p["evidence"] for r in feeds for p in r["change_feed"]],
            "telecrm pull",
        ))  # fmt: skip
    sent = [r for r in rows if r.get("webhook") and r.get("kind") == "webhook"]
    if sent:
        steps.append(_step(
            f"Receive the platform's {len(sent)} webhook(s) at telecrm's signed POST /v1/events",
            ", ".join(f"{r['id']} {r['path']}" for r in sent),
            [p for r in sent for p in r["evidence"]],
        ))  # fmt: skip
    receivers = [r for r in rows if r.get("webhook") and r.get("kind") != "webhook"]
    if receivers:
        steps.append(_step(
            f"Check {len(receivers)} webhook endpoint(s) on the platform: if they register "
            "subscribers, subscribe telecrm's POST /v1/events",
            ", ".join(f"{r['id']} {r['method']} {r['path']}" for r in receivers),
            [p for r in receivers for p in r["evidence"]],
        ))  # fmt: skip
    lifecycle = report.get("lifecycle") or {}
    missing_triggers = [t for t in lifecycle.get("triggers", []) if t["status"] != "push"]
    if missing_triggers:
        steps.append(_step(
            f"Ask the platform for webhooks: {len(missing_triggers)} of 8 triggers are not pushed",
            ", ".join(f"{t['trigger']} ({t['status']})" for t in missing_triggers),
            [p for t in missing_triggers for e in t["endpoints"] for p in e["evidence"]],
        ))  # fmt: skip
    for s in lifecycle.get("stages", []):
        if s["status"] == "missing" and s["events"]:
            steps.append(_step(f"Close the lifecycle gap: {s['stage']}", s["missing"] or "", []))
    unmapped = report.get("unmapped_fields", [])
    if unmapped:
        steps.append(_step(
            f"Review {len(unmapped)} unmapped field(s): map (a synonym in domain/field_synonyms.py) or dismiss",
            "fields the catalog does not know may hold data a CRM needs",
            [f"{u['endpoint']} {u['evidence']}" for u in unmapped],
        ))  # fmt: skip
    low = [f for f in findings if f["severity"] == "low"]
    if low:
        steps.append(_step(
            f"Clean up {len(low)} low-severity finding(s) in the document",
            ", ".join(sorted({f["kind"] for f in low})),
            [p for f in low for p in f["evidence"]],
        ))  # fmt: skip
    for n, s in enumerate(steps, 1):
        s["step"] = n
    return steps


def business_impact() -> dict[str, Any]:
    """No measured figure in an API analysis: where they come from, and labelled assumptions."""
    return {"measured": [], "measured_note": MEASURED_LATER, "assumptions": list(ASSUMPTIONS)}


def plan_sections(report: dict[str, Any]) -> dict[str, Any]:
    """The sections the plan adds to a readiness report: lifecycle, CRM plans, roadmap, impact."""
    from telecrm.reports.crm_plans import FORMULA, crm_plans
    from telecrm.reports.lifecycle_support import lifecycle_support

    out: dict[str, Any] = {
        "lifecycle": lifecycle_support(report),
        "crm_plans": crm_plans(report),
        "complexity_formula": FORMULA,
    }
    out["roadmap"] = roadmap({**report, **out})
    out["business_impact"] = business_impact()
    return out
