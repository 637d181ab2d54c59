"""Properties of the lifecycle engine over any one patient's history of valid events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.domain.events import Event, parse_event
from telecrm.domain.lifecycle import ALLOWED_TRANSITIONS, Stage, Thresholds, Transition
from telecrm.domain.profile import PURCHASE_TYPES, Profile, advance_time, fold, step
from tests.domain.event_examples import MINIMAL_DATA, PATIENT_ID, wire

S = Stage

# The event types that move the lifecycle, plus a few that must not (weighted by repetition).
LIFECYCLE_TYPES = (
    "session.tracked",
    "questionnaire.started",
    "consultation.submitted",
    "prescription.approved",
    "treatment_plan.updated",
    "order.paid",
    "order.paid",
    "subscription.started",
    "subscription.renewed",
    "subscription.cancelled",
    "subscription.cancelled",
    "payment.failed",
    "support_ticket.created",
    "referral.made",
    "review.posted",
    "email.opened",
    "email.delivered",
    "refill.due",
    "patient.updated",
    "patient.deleted",
    "patient.registered",
)


def _days(n: int) -> timedelta:
    return timedelta(days=n)


DAYS = st.integers(0, 200).map(_days)
GAPS = st.one_of(
    st.just(timedelta(0)),  # several events at one instant, as a batch import delivers them
    DAYS,  # whole days land exactly on thresholds and on subscription ends
    st.integers(0, 200 * 86_400).map(lambda s: timedelta(seconds=s)),
)
THRESHOLDS = st.one_of(
    st.just(Thresholds()),
    st.integers(1, 100).flatmap(
        lambda at_risk: st.builds(
            Thresholds,
            at_risk_inactivity_days=st.just(at_risk),
            churn_inactivity_days=st.integers(at_risk + 1, 250),
        )
    ),
)


@dataclass(frozen=True)
class History:
    events: list[Event]
    now: datetime
    thresholds: Thresholds


def _data(type_: str, i: int, at: datetime, draw: st.DrawFn) -> dict[str, Any]:
    data = dict(MINIMAL_DATA[(type_, 1)])
    if type_ == "order.paid":
        data["order_id"] = f"ord_{i}"
    if type_ == "subscription.cancelled":
        offset = st.one_of(st.just(timedelta(0)), st.integers(-30, 400).map(_days), GAPS)
        ends = at + draw(offset)
        data["ends_at"] = ends.isoformat()
    if type_ == "treatment_plan.updated":
        data["status"] = draw(st.sampled_from(["created", "updated", "completed", "discontinued"]))
    return data


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Registration first, then any mix of lifecycle events at non-decreasing times."""
    at = draw(st.datetimes(datetime(2020, 1, 1), datetime(2025, 1, 1), timezones=st.just(UTC)))
    raws = [wire("patient.registered", at=at, event_id="e0000")]
    for i in range(1, draw(st.integers(0, 25)) + 1):
        at += draw(GAPS)
        type_ = draw(st.sampled_from(LIFECYCLE_TYPES))
        raws.append(wire(type_, at=at, event_id=f"e{i:04d}", data=_data(type_, i, at, draw)))
    events = [parse_event(raw, now=at) for raw in raws]
    now = at + draw(st.one_of(st.just(timedelta(0)), DAYS, st.integers(0, 600).map(_days)))
    return History(events, now, draw(THRESHOLDS))


def _first_at(events: list[Event], types: set[str] | frozenset[str]) -> datetime | None:
    return min((e.occurred_at for e in events if e.type in types), default=None)


def check_history(h: History, profile: Profile, history: list[Transition]) -> None:
    first_order = _first_at(h.events, {"order.paid"})
    first_advocacy = _first_at(h.events, {"referral.made", "review.posted"})
    previous: Transition | None = None
    churned_at: datetime | None = None
    for t in history:
        assert t.to_stage in ALLOWED_TRANSITIONS[t.from_stage], t
        assert t.from_stage == (previous.to_stage if previous else None), t
        assert previous is None or previous.at <= t.at, t
        assert t.at <= h.now
        if t.to_stage in (S.AT_RISK, S.CHURNED):
            assert first_order is not None and first_order <= t.at, t
        if t.to_stage is S.ADVOCATE:
            assert first_advocacy is not None and first_advocacy <= t.at, t
            assert first_order is not None and first_order <= t.at, t
        if t.to_stage is S.WON_BACK:
            assert churned_at is not None, t
        if t.from_stage is S.CHURNED:
            # Only a purchase since the churn brings a churned customer back.
            assert any(
                e.type in PURCHASE_TYPES and churned_at <= e.occurred_at <= t.at for e in h.events
            ), t
        if t.to_stage is S.CHURNED:
            churned_at = t.at
        previous = t
    assert profile.stage == (history[-1].to_stage if history else None)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_any_history_folds_into_allowed_transitions_in_time_order(h):
    profile, history = fold(PATIENT_ID, h.events, h.now, h.thresholds)
    check_history(h, profile, history)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_purchase_never_leaves_a_patient_churned(h):
    profile, history = Profile(PATIENT_ID), []
    for e in h.events:
        step(profile, e, h.thresholds, history)
        if e.type in PURCHASE_TYPES and not profile.deleted:
            assert profile.stage is not S.CHURNED, (e, history[-3:])


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_fold_is_deterministic_and_independent_of_arrival_order(h, rng):
    expected = fold(PATIENT_ID, h.events, h.now, h.thresholds)
    shuffled = h.events[:]
    rng.shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda e: (e.occurred_at, e.id))
    assert fold(PATIENT_ID, ordered, h.now, h.thresholds) == expected
    assert fold(PATIENT_ID, h.events, h.now, h.thresholds) == expected


@settings(max_examples=150, deadline=None)
@given(histories(), st.lists(st.floats(0, 1), max_size=6))
def test_sweeps_at_any_times_in_between_leave_the_same_history(h, fractions):
    """The live worker sweeps whenever it likes; a rebuild sweeps once. Both must agree."""
    expected = fold(PATIENT_ID, h.events, h.now, h.thresholds)
    start, span = h.events[0].occurred_at, h.now - h.events[0].occurred_at
    sweeps = sorted(start + span * f for f in fractions)
    profile, history = Profile(PATIENT_ID), []
    for e in h.events:
        while sweeps and sweeps[0] <= e.occurred_at:
            advance_time(profile, sweeps.pop(0), h.thresholds, history)
        step(profile, e, h.thresholds, history)
    advance_time(profile, h.now, h.thresholds, history)
    assert (profile, history) == expected


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(0, 800))
def test_a_later_rebuild_only_appends_to_the_history(h, extra_days):
    """Transitions are stamped when thresholds are crossed, so looking later rewrites nothing."""
    _, now_history = fold(PATIENT_ID, h.events, h.now, h.thresholds)
    _, later = fold(PATIENT_ID, h.events, h.now + timedelta(days=extra_days), h.thresholds)
    assert later[: len(now_history)] == now_history
    assert all(t.at > h.now and t.event_id is None for t in later[len(now_history) :])
