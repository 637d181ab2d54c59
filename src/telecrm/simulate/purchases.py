"""After the first order: a monthly subscription (sBG churn) or one-off reorders (BG/NBD).

Subscribers renew every 30 days (one 30-day supply per fill). Before each renewal they may
cancel (hazard `churn_hazard`, drawn per patient from the sBG Beta, analytics.md §1.5); a
voluntary cancellation keeps service until the end of the paid period (`ends_at`), an
involuntary one is a renewal whose payment keeps failing. One-off buyers reorder as a Poisson
process and may drop out silently after any order (BG/NBD, §1.2). Churned patients are
sometimes won back.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from telecrm.simulate.activity import (
    Step,
    World,
    customer_activity,
    in_order,
    moments,
    ticket,
)
from telecrm.simulate.actors import Patient, tier_of
from telecrm.simulate.calendar import DAY, HOUR, MINUTE
from telecrm.simulate.clinical import OUTCOMES, symptoms_for
from telecrm.simulate.sampling import Weighted, one_of

PERIOD = 30 * DAY  # one fill: every plan here ships a 30-day supply
CHECK_IN_PERIODS = frozenset({1, 3, 6, 12, 24})  # treatment-plan reviews (assumption)
ORDER_VALUE_SHAPE = 12.0  # Gamma shape of one order's value around the patient's mean
DUNNING_RETRY_DAYS = (0, 3, 5)  # failed renewal retried twice before cancelling (assumption)
DUNNING_CANCEL_DAYS = 7

CANCEL_REASON = Weighted(
    (
        "too_expensive",
        "not_effective",
        "side_effects",
        "no_longer_needed",
        "switched_provider",
        "other",
    ),
    (0.30, 0.20, 0.12, 0.18, 0.10, 0.10),  # assumption
)
DECLINE = Weighted(("card_declined", "insufficient_funds", "expired_card"), (0.45, 0.35, 0.20))


def subscription_life(w: World, p: Patient, t: int) -> Iterator[Step]:
    c, rng, cal, area = w.config, w.rng, w.cal, p.area_info()
    sub, amount = p.object_id("sub"), p.plan_amount
    yield t, "order.paid", _order(p, amount, sub, with_card=True)
    p.fills += 1
    anchor, period = t, 0  # paid periods run from the first payment
    started = {"subscription_id": sub, "tier": tier_of(p.spend), "interval": "monthly"}
    t += 1
    yield t, "subscription.started", {**started, "amount": amount}
    while True:
        period += 1
        renew_at = anchor + period * PERIOD
        steps = customer_activity(w, p, t, renew_at)
        if period in CHECK_IN_PERIODS:
            steps.extend(_check_in(w, p, t, renew_at, period))
        cancels = rng.random() < p.churn_hazard
        involuntary = cancels and rng.random() < c.involuntary_churn_share
        cancel_at = renew_at
        if cancels and not involuntary:
            cancel_at = (moments(w, p, t, renew_at - HOUR, 1) or [renew_at - HOUR])[0]
            steps.extend(_voluntary_cancellation(w, p, sub, cancel_at, renew_at))
        refill_at = renew_at - c.refill_notice_days * DAY
        if refill_at < cancel_at:
            due = {"prescription_id": p.prescription_id, "due_on": _date(w, p, renew_at)}
            steps.append((refill_at, "refill.due", due))
        notice_at = renew_at - c.renewal_notice_days * DAY
        if notice_at < cancel_at:
            notice = {"subscription_id": sub, "renews_at": cal.iso(renew_at)}
            steps.append((notice_at, "subscription.renewal_approaching", notice))
        if not cancels and p.fills % (area.refills + 1) == 0:
            steps.extend(_renew_prescription(w, p, renew_at - 5 * DAY))
        last = yield from in_order(steps, t)
        if cancels and not involuntary:
            p.lapse(silent=False, at=renew_at)
            yield from after_churn(w, p, max(renew_at, last + 1))
            return
        t = max(renew_at, last + 1)
        if involuntary:
            t = yield from _dunning_fails(w, p, sub, amount, t)
            yield (
                t,
                "subscription.cancelled",
                {
                    "subscription_id": sub,
                    "ends_at": cal.iso(renew_at),
                    "reason": "payment_failed",
                },
            )
            p.lapse(silent=False, at=renew_at)
            yield from after_churn(w, p, t)
            return
        with_card = False
        if rng.random() < c.recovered_payment_failure_rate:
            yield t, "payment.failed", _failure(w, p, sub, amount)
            t = cal.later(rng, p.tz, t, 1.5, max_days=5)  # the patient updates the card
            p.card, with_card = w.people.card(rng), True
        yield t, "order.paid", _order(p, amount, sub, with_card=with_card)
        t += 1
        yield t, "subscription.renewed", {"subscription_id": sub, "amount": amount}
        p.fills += 1


def one_off_life(w: World, p: Patient, t: int) -> Iterator[Step]:
    rng, cal, area = w.rng, w.cal, p.area_info()
    mean_value = w.prices[area.code] * p.spend
    with_card = True
    while True:
        value = rng.gammavariate(ORDER_VALUE_SHAPE, mean_value / ORDER_VALUE_SHAPE)
        yield t, "order.paid", _order(p, max(1.0, round(value, 2)), None, with_card=with_card)
        p.fills, with_card = p.fills + 1, False
        supply_end = t + area.days_supply * DAY
        if rng.random() < p.dropout:  # BG/NBD: inactive right after a purchase, silently
            p.lapse(silent=True, at=t)
            steps = _supply_steps(w, p, t, supply_end, supply_end + 1)
            last = yield from in_order(steps, t)
            yield from after_churn(w, p, last)
            return
        gap = max(DAY, int(rng.expovariate(p.reorder_rate) * PERIOD))
        next_order = cal.at_local_day(rng, p.tz, cal.local_day(p.tz, t + gap))
        steps = customer_activity(w, p, t, next_order)
        steps.extend(_supply_steps(w, p, t, supply_end, next_order))
        if next_order > supply_end and (not area.chronic or p.fills % (area.refills + 1) == 0):
            steps.extend(_renew_prescription(w, p, next_order - HOUR))
        last = yield from in_order(steps, t)
        t = max(next_order, last + 1)


def after_churn(w: World, p: Patient, t: int) -> Iterator[Step]:
    """A churned patient either stays gone or, once, comes back with an order."""
    c, rng = w.config, w.rng
    if not p.wins_back or p.won_back_at:
        return
    t = w.cal.later(rng, p.tz, t, c.win_back_mean_days, max_days=730)
    yield t, "session.tracked", {"page": "/welcome-back", "channel": "email"}
    t += rng.randint(3 * MINUTE, 30 * MINUTE)
    p.won_back_at = t
    p.card = w.people.card(rng)  # the old card may be why they left
    if p.area_info().chronic and rng.random() < c.win_back_resubscribe_rate:
        yield from subscription_life(w, p, t)
    else:
        yield from one_off_life(w, p, t)


def _order(p: Patient, amount: float, sub: str | None, *, with_card: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"order_id": p.object_id("ord"), "amount": amount}
    data["recurring"] = sub is not None
    if sub is not None:
        data["subscription_id"] = sub
    if with_card and p.card is not None:
        data["payment_method"] = {"brand": p.card[0], "last4": p.card[1]}
    return data


def _failure(w: World, p: Patient, sub: str, amount: float) -> dict[str, Any]:
    reason = DECLINE.draw(w.rng)
    return {"subscription_id": sub, "amount": amount, "reason": reason}


def _dunning_fails(
    w: World, p: Patient, sub: str, amount: float, t: int
) -> Generator[Step, None, int]:
    """The failed renewal and its retries; returns when the subscription gets cancelled."""
    start = t
    for days in DUNNING_RETRY_DAYS:
        t = max(t + 1, start + days * DAY)
        yield t, "payment.failed", _failure(w, p, sub, amount)
    if w.rng.random() < 0.3:  # some write in about the failed card (assumption)
        t += w.rng.randint(HOUR, DAY)
        yield t, "support_ticket.created", ticket(w, p, "billing")
    return max(t + 1, start + DUNNING_CANCEL_DAYS * DAY)


def _voluntary_cancellation(w: World, p: Patient, sub: str, at: int, ends_at: int) -> list[Step]:
    rng = w.rng
    reason = CANCEL_REASON.draw(rng)
    steps: list[Step] = []
    if rng.random() < 0.2:  # some ask support first (assumption)
        steps.append((at - rng.randint(HOUR, 2 * DAY), "support_ticket.created", ticket(w, p)))
    steps.append(
        (at, "subscription.cancelled", {
            "subscription_id": sub,
            "ends_at": w.cal.iso(ends_at),
            "reason": reason,
        })
    )  # fmt: skip
    outcome = "side_effects" if reason == "side_effects" else one_of(rng, OUTCOMES.items[:3])
    steps.append(
        (at + rng.randint(MINUTE, HOUR), "treatment_plan.updated", {
            "treatment_plan_id": f"tp_{p.number}",
            "status": "discontinued",
            "outcome": outcome,
        })
    )  # fmt: skip
    return steps


def _check_in(w: World, p: Patient, start: int, end: int, period: int) -> list[Step]:
    rng = w.rng
    outcome = OUTCOMES.draw(rng)
    data = {
        "treatment_plan_id": f"tp_{p.number}",
        "status": "updated",
        "outcome": outcome,
        "progress": f"month {period} check-in: {outcome.replace('_', ' ')}",
    }
    return [(ts, "treatment_plan.updated", data) for ts in moments(w, p, start, end, 1)]


def _renew_prescription(w: World, p: Patient, at: int) -> list[Step]:
    """Refills are used up (or an acute problem recurs): a follow-up consultation, new Rx at `at`."""
    rng, area = w.rng, p.area_info()
    consultation = p.object_id("con")
    submitted = at - 2 * DAY
    assigned = submitted + rng.randint(MINUTE, 10 * MINUTE)
    accepted = assigned + rng.randint(HOUR, 6 * HOUR)  # follow-ups wait longer (assumption)
    p.prescription_id = p.object_id("rx")
    ref = {"consultation_id": consultation, "provider_id": p.provider}
    return [
        (submitted, "consultation.submitted", {
            "consultation_id": consultation,
            "condition_area": area.code,
            "symptoms": symptoms_for(rng, area, relief=2 if area.chronic else 0),
        }),
        (assigned, "consultation.assigned", ref),
        (accepted, "consultation.accepted", dict(ref)),
        (at, "prescription.approved", {
            "prescription_id": p.prescription_id,
            "consultation_id": consultation,
            "medication": p.medication,
            "days_supply": area.days_supply,
            "refills": area.refills,
        }),
    ]  # fmt: skip


def _supply_steps(w: World, p: Patient, ordered: int, supply_end: int, before: int) -> list[Step]:
    """refill.due ahead of a chronic supply running out; an acute course completes."""
    area, c = p.area_info(), w.config
    if not area.chronic:
        if supply_end >= before:
            return []
        plan = {
            "treatment_plan_id": f"tp_{p.number}",
            "status": "completed",
            "outcome": "improving",
        }
        return [(supply_end, "treatment_plan.updated", plan)]
    due_at = supply_end - c.refill_notice_days * DAY
    if not ordered < due_at < before:
        return []
    return [
        (
            due_at,
            "refill.due",
            {"prescription_id": p.prescription_id, "due_on": _date(w, p, supply_end)},
        )
    ]


def _date(w: World, p: Patient, ts: int) -> str:
    return w.cal.local_date(p.tz, ts).isoformat()
