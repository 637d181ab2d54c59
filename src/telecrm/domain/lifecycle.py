"""The 10 lifecycle stages, their CRM statuses, and the rules that move a patient between them.

A stage is a pure function of the profile's facts, the stage it is leaving and the time
(DESIGN.md §4.2). Time alone can move a customer (active → at_risk → churned); those moves are
stamped at the instant the threshold was crossed, not when a sweep noticed, so replaying the
event log at any later time reproduces the same history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telecrm.domain.profile import Profile


class Stage(StrEnum):
    VISITOR = "visitor"
    LEAD = "lead"
    PROSPECT = "prospect"
    PATIENT = "patient"
    ACTIVE_CUSTOMER = "active_customer"
    SUBSCRIBER = "subscriber"
    ADVOCATE = "advocate"
    AT_RISK = "at_risk"
    CHURNED = "churned"
    WON_BACK = "won_back"


CRM_STATUS: dict[Stage, str] = {
    Stage.VISITOR: "Lead",
    Stage.LEAD: "Qualified Lead",
    Stage.PROSPECT: "Opportunity",
    Stage.PATIENT: "Customer",
    Stage.ACTIVE_CUSTOMER: "Active Customer",
    Stage.SUBSCRIBER: "Subscription Customer",
    Stage.ADVOCATE: "VIP Customer",
    Stage.AT_RISK: "At-Risk Customer",
    Stage.CHURNED: "Churned Customer",
    Stage.WON_BACK: "Reactivated Customer",
}

# The acquisition ladder; a patient only climbs it (DESIGN.md §4.2 "entered when").
LADDER: tuple[Stage, ...] = (
    Stage.VISITOR,
    Stage.LEAD,
    Stage.PROSPECT,
    Stage.PATIENT,
    Stage.ACTIVE_CUSTOMER,
    Stage.SUBSCRIBER,
    Stage.ADVOCATE,
)
RANK: dict[Stage, int] = {stage: i for i, stage in enumerate(LADDER)}
CUSTOMER_MILESTONES: frozenset[Stage] = frozenset(
    {Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER, Stage.ADVOCATE}
)
CUSTOMER_STAGES: frozenset[Stage] = CUSTOMER_MILESTONES | {
    Stage.AT_RISK,
    Stage.CHURNED,
    Stage.WON_BACK,
}


def _allowed() -> dict[Stage | None, frozenset[Stage]]:
    allowed: dict[Stage | None, set[Stage]] = {None: set(LADDER)}
    for stage in LADDER:
        allowed[stage] = {s for s in LADDER if RANK[s] > RANK[stage]}
    for stage in CUSTOMER_MILESTONES:
        allowed[stage] |= {Stage.AT_RISK, Stage.CHURNED}
    # A subscription that ended while the patient still buys one-off orders.
    allowed[Stage.SUBSCRIBER].add(Stage.ACTIVE_CUSTOMER)
    allowed[Stage.AT_RISK] = set(CUSTOMER_MILESTONES) | {Stage.CHURNED, Stage.WON_BACK}
    allowed[Stage.CHURNED] = {Stage.WON_BACK}
    allowed[Stage.WON_BACK] = {Stage.AT_RISK, Stage.CHURNED}
    return {k: frozenset(v) for k, v in allowed.items()}


ALLOWED_TRANSITIONS: dict[Stage | None, frozenset[Stage]] = _allowed()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Configurable cut-offs (TELECRM_AT_RISK_DAYS, TELECRM_CHURN_DAYS, TELECRM_CHURN_RISK_CUTOFF)."""

    at_risk_inactivity_days: int = 45
    churn_inactivity_days: int = 120
    churn_risk_cutoff: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.at_risk_inactivity_days < self.churn_inactivity_days:
            raise ValueError("need 0 < at_risk_inactivity_days < churn_inactivity_days")
        if not 0.0 < self.churn_risk_cutoff <= 1.0:
            raise ValueError("churn_risk_cutoff must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_stage: Stage | None
    to_stage: Stage
    reason: str
    event_id: str | None = None


def milestone(p: Profile, at: datetime) -> Stage | None:
    """The highest rung of the ladder the profile's facts reach."""
    f = p.facts
    best: Stage | None = None
    if f.sessions or f.registered_at or f.questionnaire_at:
        best = Stage.VISITOR
    if f.registered_at or f.questionnaire_at:
        best = Stage.LEAD
    if f.consultation_at:
        best = Stage.PROSPECT
    if f.treatment_at:
        best = Stage.PATIENT
    if f.first_order_at:
        best = Stage.ACTIVE_CUSTOMER
        if f.subscription_status == "active" or (
            f.subscription_status == "cancelled"
            and f.subscription_ends_at is not None
            and f.subscription_ends_at > at
        ):
            best = Stage.SUBSCRIBER
        if f.referrals or f.reviews:
            best = Stage.ADVOCATE
    return best


def _lapsed(p: Profile, at: datetime) -> bool:
    f = p.facts
    if f.subscription_status != "cancelled" or f.subscription_ends_at is None:
        return False
    if f.subscription_ends_at > at:
        return False
    # A purchase at the very instant the paid period ends counts as buying again.
    return not (f.last_purchase_at is not None and f.last_purchase_at >= f.subscription_ends_at)


def evaluate(p: Profile, at: datetime, t: Thresholds) -> tuple[Stage | None, str]:
    """The stage the profile should be in at `at`, and why."""
    current = p.stage
    if p.deleted:
        return current, "deleted"
    m = milestone(p, at)
    if m is None:
        return current, "no milestone"
    if m not in CUSTOMER_MILESTONES:
        if current is not None and current in RANK and RANK[current] >= RANK[m]:
            return current, "unchanged"
        return m, f"reached {m.value}"
    f = p.facts
    if current is Stage.CHURNED:
        # `>=`: the clock churns first at an instant, then a purchase at that same instant applies.
        if (
            f.churned_at is not None
            and f.last_purchase_at is not None
            and (f.last_purchase_at >= f.churned_at)
        ):
            return Stage.WON_BACK, "re-engaged after churn"
        return Stage.CHURNED, "unchanged"
    last_active = f.last_activity_at or f.first_order_at
    assert last_active is not None  # a customer has ordered, so has been active
    idle = at - last_active
    if _lapsed(p, at):
        return Stage.CHURNED, "subscription cancelled and lapsed"
    if idle >= timedelta(days=t.churn_inactivity_days):
        return Stage.CHURNED, f"inactive {t.churn_inactivity_days} days"
    if idle >= timedelta(days=t.at_risk_inactivity_days):
        return Stage.AT_RISK, f"inactive {t.at_risk_inactivity_days} days"
    if f.churn_risk is not None and f.churn_risk >= t.churn_risk_cutoff:
        return Stage.AT_RISK, f"churn risk at or over {t.churn_risk_cutoff}"
    if f.churned_at is not None:
        return Stage.WON_BACK, "active again after churn"
    return m, f"reached {m.value}" if current is not Stage.AT_RISK else "active again"


def next_time_change(p: Profile, after: datetime, t: Thresholds) -> datetime | None:
    """The first instant after `after` at which the clock alone could change the stage."""
    if p.deleted or p.stage not in CUSTOMER_STAGES or p.stage is Stage.CHURNED:
        return None
    f = p.facts
    last_active = f.last_activity_at or f.first_order_at
    candidates = []
    if last_active is not None:
        candidates.append(last_active + timedelta(days=t.at_risk_inactivity_days))
        candidates.append(last_active + timedelta(days=t.churn_inactivity_days))
    if f.subscription_status == "cancelled" and f.subscription_ends_at is not None:
        candidates.append(f.subscription_ends_at)
    future = [c for c in candidates if c > after]
    return min(future) if future else None
