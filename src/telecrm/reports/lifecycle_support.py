"""Which of the 10 lifecycle stages, 4 funnels and 8 automation triggers an analysed platform can
feed, each with the endpoints (E-ids and JSON pointers) that evidence it, and what is missing.

A stage is *evidenced* when some endpoint or webhook carries the fact that enters it (DESIGN.md
§4.2 "entered when"): its path names the entity (`/consultations`), a webhook names the event
(`consultationSubmitted`), or its schema carries the stage's data point. The stages that time
moves a patient into (at_risk, churned, won_back) are *derived*: telecrm computes them from the
clock once the purchase facts arrive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from telecrm.domain.events import TRIGGERS
from telecrm.domain.funnels import FUNNELS
from telecrm.domain.lifecycle import CRM_STATUS, Stage

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Signal:
    """What shows that a platform can tell telecrm a fact: event types, entity names, data points."""

    events: tuple[str, ...]
    entities: str  # regex over one normalised path segment or webhook word
    data_points: tuple[str, ...] = ()


# The fact that enters each stage (DESIGN.md §4.2) and the words a platform's API uses for it.
STAGE_SIGNALS: dict[Stage, Signal] = {
    Stage.VISITOR: Signal(
        ("session.tracked",), r"sessions?|pageviews?|tracking|track|analytics|visitors?"
    ),
    Stage.LEAD: Signal(
        ("patient.registered", "questionnaire.started"),
        r"patients?|members?|users?|customers?|leads?|registrations?|signups?|register|"
        r"questionnaires?|intakes?|surveys?|assessments?",
        ("contact",),
    ),
    Stage.PROSPECT: Signal(
        ("consultation.submitted",), r"consultations?|consults?|appointments?|visits?|encounters?"
    ),
    Stage.PATIENT: Signal(
        ("prescription.approved", "treatment_plan.updated"),
        r"prescriptions?|rx|treatments?|treatmentplans?|careplans?",
        ("medications", "treatment_outcomes"),
    ),
    Stage.ACTIVE_CUSTOMER: Signal(
        ("order.paid",),
        r"orders?|payments?|charges?|invoices?|purchases?|transactions?",
        ("orders", "payments"),
    ),
    Stage.SUBSCRIBER: Signal(
        ("subscription.started", "subscription.renewed"),
        r"subscriptions?|memberships?|renewals?",
        ("subscription",),
    ),
    Stage.ADVOCATE: Signal(
        ("referral.made", "review.posted"), r"referrals?|reviews?|ratings?|testimonials?|invites?"
    ),
}

# Stages the clock moves a customer into, and the stages whose facts they are computed from.
DERIVED: dict[Stage, tuple[tuple[Stage, ...], str]] = {
    Stage.AT_RISK: (
        (Stage.ACTIVE_CUSTOMER,),
        "computed by telecrm: no activity for TELECRM_AT_RISK_DAYS, or churn risk over the cutoff",
    ),
    Stage.CHURNED: (
        (Stage.ACTIVE_CUSTOMER,),
        "computed by telecrm: no activity for TELECRM_CHURN_DAYS, or a cancelled subscription lapsed",
    ),
    Stage.WON_BACK: (
        (Stage.ACTIVE_CUSTOMER,),
        "computed by telecrm: a churned patient orders or subscribes again",
    ),
}

# The 8 automation triggers (DESIGN.md §4.3) and the words a platform uses for each.
TRIGGER_SIGNALS: dict[str, Signal] = {
    "patient.registered": STAGE_SIGNALS[Stage.LEAD],
    "consultation.submitted": STAGE_SIGNALS[Stage.PROSPECT],
    "order.paid": STAGE_SIGNALS[Stage.ACTIVE_CUSTOMER],
    "prescription.approved": Signal(("prescription.approved",), r"prescriptions?|rx"),
    "refill.due": Signal(("refill.due",), r"refills?"),
    "subscription.renewal_approaching": Signal(
        ("subscription.renewal_approaching",), r"subscriptions?|renewals?", ("subscription",)
    ),
    "support_ticket.created": Signal(
        ("support_ticket.created",),
        r"tickets?|supporttickets?|support|cases?|helpdesk",
        ("support_history",),
    ),
    "treatment_plan.updated": Signal(
        ("treatment_plan.updated",),
        r"treatments?|treatmentplans?|careplans?",
        ("treatment_outcomes",),
    ),
}
assert tuple(TRIGGER_SIGNALS) == TRIGGERS


def _words(text: str) -> list[str]:
    """Path segments and webhook names as lower-case words: `treatment-plans` → `treatmentplans`,
    `orderPaid` → `order`, `paid`, `orderpaid`."""
    out: list[str] = []
    for segment in text.split("/"):
        if not segment or segment.startswith("{"):
            continue
        whole = re.sub(r"[^a-z0-9]", "", segment.lower())
        parts = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", segment).lower())
        out += [whole, *(p for p in parts if p != whole)]
    return out


@dataclass(frozen=True, slots=True)
class _RowWords:
    """What the matching reads of one endpoint row, computed once per row (not per signal)."""

    words: tuple[str, ...]  # path and operationId words, in order
    flat: tuple[str, ...]  # each name with only [a-z0-9] kept, for webhook event names
    points: frozenset[str]

    @classmethod
    def of(cls, row: Row) -> _RowWords:
        names = [row.get("path", ""), *row.get("operation_ids", [])]
        return cls(
            tuple(w for name in names for w in _words(name)),
            tuple(_FLAT.sub("", name.lower()) for name in names) if row.get("webhook") else (),
            frozenset(f["data_point"] for f in row.get("fields", [])),
        )


_FLAT = re.compile(r"[^a-z0-9]")


@cache
def _pattern(entities: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:{entities})$")


def matches(row: Row, signal: Signal, words: _RowWords | None = None) -> str | None:
    """Why `row` evidences `signal` (in words), or None."""
    w = words or _RowWords.of(row)
    for event in signal.events:
        flat_event = _FLAT.sub("", event)
        if any(flat_event in name for name in w.flat):
            return f"webhook names {event}"
    pattern = _pattern(signal.entities)
    for word in w.words:
        if pattern.match(word):
            return f"path names '{word}'"
    points = sorted(w.points & set(signal.data_points))
    if points:
        return "carries " + ", ".join(points)
    return None


def _evidence(rows: list[Row], signal: Signal, words: list[_RowWords]) -> list[Row]:
    found = []
    for row, w in zip(rows, words, strict=True):
        why = matches(row, signal, w)
        if why is not None:
            found.append({
                "endpoint": row["id"],
                "method": row.get("method", ""),
                "path": row.get("path", ""),
                "how": ("push (webhook)" if row.get("webhook") else
                        "pull with a change feed" if row.get("change_feed") else "pull"),
                "why": why,
                "evidence": list(row.get("evidence", [])),
            })  # fmt: skip
    return found


def _missing_text(signal: Signal) -> str:
    return (
        f"no endpoint or webhook for {' or '.join(signal.events)} (an endpoint on "
        f"{signal.entities.split('|')[0].rstrip('?s')}s, or a webhook that sends the event)"
    )


def lifecycle_support(report: dict[str, Any]) -> dict[str, Any]:
    """`stages` (10), `funnels` (4) and `triggers` (8), each with status, evidence and what is missing."""
    rows = report.get("endpoints", [])
    words = [_RowWords.of(r) for r in rows]
    # A source tree's own event triggers (`messages.triggers`: name and file:line) count too.
    found = [(t["name"], t["evidence"]) for t in (report.get("messages") or {}).get("triggers", [])]

    def in_source(signal: Signal) -> list[Row]:
        return [{"name": n, "evidence": ev} for n, ev in found if n in signal.events]

    stages: list[Row] = []
    status: dict[Stage, str] = {}
    for stage in Stage:
        if stage in STAGE_SIGNALS:
            signal = STAGE_SIGNALS[stage]
            ev, src = _evidence(rows, signal, words), in_source(signal)
            status[stage] = "evidenced" if ev or src else "missing"
            stages.append({
                "stage": stage.value, "crm_status": CRM_STATUS[stage], "status": status[stage],
                "events": list(signal.events), "endpoints": ev, "source": src,
                "missing": None if ev or src else _missing_text(signal), "derived_from": [],
            })  # fmt: skip
        else:
            sources, how = DERIVED[stage]
            ok = all(status[s] == "evidenced" for s in sources)
            status[stage] = "derived" if ok else "missing"
            stages.append({
                "stage": stage.value, "crm_status": CRM_STATUS[stage], "status": status[stage],
                "events": [], "endpoints": [], "source": [],
                "derived_from": [s.value for s in sources],
                "missing": None if ok else f"{how}; needs {', '.join(s.value for s in sources)} first",
                "how": how,
            })  # fmt: skip
    funnels = []
    for f in FUNNELS:
        start, end = status[f.start], status[f.end]
        state = (
            "measurable"
            if start != "missing" and end != "missing"
            else "partial"
            if end != "missing"
            else "not measurable"
        )
        gaps = [s.value for s in (f.start, f.end) if status[s] == "missing"]
        funnels.append({
            "funnel": f.name, "from": f.start.value, "to": f.end.value, "status": state,
            "missing": gaps,
            "note": None if not gaps else
            f"no {f.start.value} data: entered can only be inferred from who reached {f.end.value}, "
            "so the rate is not meaningful" if state == "partial"
            else f"no data for {', '.join(gaps)}",
        })  # fmt: skip
    triggers = []
    for name, signal in TRIGGER_SIGNALS.items():
        ev, src = _evidence(rows, signal, words), in_source(signal)
        pushed = any(e["how"].startswith("push") for e in ev)
        triggers.append({
            "trigger": name, "endpoints": ev, "source": src,
            "status": "push" if pushed else "in source" if src else "poll" if ev else "missing",
        })  # fmt: skip
    return {
        "stages": stages,
        "funnels": funnels,
        "triggers": triggers,
        "summary": {
            "stages_evidenced": sum(s["status"] == "evidenced" for s in stages),
            "stages_derived": sum(s["status"] == "derived" for s in stages),
            "stages_total": len(stages),
            "funnels_measurable": sum(f["status"] == "measurable" for f in funnels),
            "funnels_total": len(funnels),
            "triggers_found": sum(t["status"] != "missing" for t in triggers),
            "triggers_pushed": sum(t["status"] == "push" for t in triggers),
            "triggers_total": len(triggers),
        },
    }
