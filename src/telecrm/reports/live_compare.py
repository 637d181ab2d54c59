"""The analyzer's findings side by side with what is actually flowing, and the live report's
business impact: measured figures only, each with its query, beside labelled assumptions."""

from __future__ import annotations

from typing import Any

from telecrm.analytics.small_cells import MIN_CELL
from telecrm.domain.events import EVENT_TYPES, TRIGGERS
from telecrm.reports.roadmap import ASSUMPTIONS

Row = dict[str, Any]

# The platform's own events (DESIGN.md §4.3): not the engagement, journey and scoring events
# telecrm writes for itself.
OWN_PREFIXES = ("email.", "sms.", "journey.", "analytics.")
PLATFORM_EVENTS = tuple(sorted(t for t in EVENT_TYPES if not t.startswith(OWN_PREFIXES)))


def _analyzer_sources(analysis: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """Event type -> (how the analyzer says it arrives, the endpoint ids that carry it)."""
    life = analysis.get("lifecycle") or {}
    found: dict[str, tuple[str, list[str]]] = {}
    for st in life.get("stages", []):
        for event in st.get("events", []):
            ids = [e["endpoint"] for e in st["endpoints"]]
            how = "push" if any(e["how"].startswith("push") for e in st["endpoints"]) else "poll"
            named = any(x["name"] == event for x in st.get("source", []))
            how = "in source" if named and how != "push" else how if ids else "missing"
            found[event] = (how, ids)
    for t in life.get("triggers", []):
        found[t["trigger"]] = (t["status"], [e["endpoint"] for e in t["endpoints"]])
    return found


def _verdict(documented: bool, seen: int) -> str:
    if documented and seen:
        return "flowing"
    if documented:
        return "documented, nothing received yet"
    if seen:
        return "flowing without a documented source"
    return "not available"


def compare_with_analysis(
    live: dict[str, Any], analysis: dict[str, Any], qs: Any
) -> dict[str, Any]:
    """Per platform event type and per lifecycle stage: the analyzer's verdict beside live counts."""
    from telecrm.reports.live_report import small

    sources = _analyzer_sources(analysis)
    seen = {e["type"]: e["events"] for e in live["events"]}
    events = []
    for t in PLATFORM_EVENTS:
        how, ids = sources.get(t, ("missing", []))
        count = seen.get(t) or small(0, qs.ref(f"events where type = '{t}'", "telecrm stats"))
        n = count["n"] if count["n"] is not None else MIN_CELL - 1  # suppressed means 1..4
        if t not in sources and t not in seen and t not in TRIGGERS:
            continue
        events.append({
            "event_type": t, "trigger": t in TRIGGERS, "analyzer": how, "endpoints": ids,
            "live": count, "verdict": _verdict(how != "missing", n),
        })  # fmt: skip
    life = analysis.get("lifecycle") or {}
    reached = {s["stage"]: s["ever_reached"] for s in live["stages"]}
    stages = []
    for st in life.get("stages", []):
        count = reached.get(st["stage"])
        n = 0 if count is None else (count["n"] if count["n"] is not None else MIN_CELL - 1)
        stages.append({
            "stage": st["stage"], "analyzer": st["status"],
            "endpoints": [e["endpoint"] for e in st["endpoints"]], "live": count,
            "verdict": _verdict(st["status"] != "missing", n),
        })  # fmt: skip
    return {
        "source": analysis.get("source"),
        "title": analysis.get("title"),
        "summary": analysis.get("summary"),
        "findings": analysis.get("findings", []),
        "events": events,
        "stages": stages,
    }


def measured_impact(live: dict[str, Any]) -> dict[str, Any]:
    """Business-impact figures measured on this database, each with its query; then assumptions."""
    measured: list[Row] = []
    for f in live["funnels"]["all"]:
        measured.append({
            "figure": f"{f['funnel']} funnel conversion {f['rate']} "
            f"({f['converted']['shown']} of {f['entered']['shown']})",
            "kind": "funnel conversion (ever)", "q": f["entered"]["q"],
        })  # fmt: skip
    for j in live["journeys"]:
        if j["lift"] is not None:
            p = f", p = {j['p_value']:.3f}" if j["p_value"] is not None else ""
            measured.append({
                "figure": f"journey {j['journey']}: lift over holdout {j['lift']:+.1%}{p}",
                "kind": "journey lift against the holdout", "q": j["q"],
            })  # fmt: skip
    churn = live.get("churn")
    if churn and churn.get("measured"):
        measured.append({
            "figure": f"churn model AUC {churn['auc']:.3f} (recency alone {churn['recency_only_auc']:.3f}); "
            f"top decile churns {churn['lift_top_decile']:.2f}x the base rate {churn['base_rate']:.1%}",
            "kind": f"churn model, held-out {churn['horizon_days']}-day window", "q": churn["q"],
        })  # fmt: skip
    return {
        "measured": measured,
        "assumptions": list(ASSUMPTIONS),
        "note": "assumptions are published benchmarks for planning, not measurements of this platform",
    }
