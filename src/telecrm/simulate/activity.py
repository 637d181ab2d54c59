"""What journeys share: the world they run in, and the background activity of a customer.

A journey is a generator of `Step`s, `(instant, event type, data)`, in time order. The helpers
here place instants on days and hours patients are active and build the visits, tickets,
referrals, reviews and profile edits that happen between purchases.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from telecrm.simulate.actors import Patient
from telecrm.simulate.calendar import DAY, MINUTE, Calendar
from telecrm.simulate.clinical import CareTeam
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.population import Population
from telecrm.simulate.sampling import Weighted, one_of, poisson

Step = tuple[int, str, dict[str, Any]]

ACCOUNT_PAGES = ("/account", "/orders", "/messages", "/treatment", "/refills")
FEATURES = (
    "messaging",
    "order_tracking",
    "progress_photos",
    "refill_request",
    "care_team_chat",
    "dose_tracker",
)
TICKET_CATEGORY = Weighted(
    (
        "billing",
        "shipping",
        "medication_question",
        "side_effects",
        "account_access",
        "prescription_status",
    ),
    (0.22, 0.25, 0.2, 0.08, 0.13, 0.12),  # assumption
)
PRIORITY = Weighted(("low", "normal", "high", "urgent"), (0.15, 0.70, 0.12, 0.03))  # assumption
# J-shaped, as online reviews are (assumption)
RATING = Weighted((5, 4, 3, 2, 1), (0.60, 0.20, 0.08, 0.05, 0.07))


@dataclass(slots=True)
class World:
    """What every journey shares: the settings, the one RNG, the clock and the catalogues."""

    config: SimulationConfig
    rng: random.Random
    cal: Calendar
    people: Population
    care: CareTeam
    prices: dict[str, float]


def soon_or_later(w: World, p: Patient, t: int, same_session: float, mean_days: float) -> int:
    """The next step of a flow: minutes later in the same visit, or on a later day."""
    if w.rng.random() < same_session:
        return t + w.rng.randint(2 * MINUTE, 25 * MINUTE)
    return w.cal.later(w.rng, p.tz, t, mean_days, max_days=14)


def moments(w: World, p: Patient, start: int, end: int, count: int) -> list[int]:
    """`count` instants in (start, end), on accepted days and at local activity hours."""
    out: list[int] = []
    if count <= 0:
        return out
    cal, rng = w.cal, w.rng
    first, last = cal.local_day(p.tz, start), cal.local_day(p.tz, end)
    for _ in range(count):
        for _ in range(6):  # a draw outside the window or on a thinned weekend day is retried
            day = first + int(rng.random() * (last - first + 1))
            if not cal.accept_day(rng, day):
                continue
            ts = cal.at_local_day(rng, p.tz, day)
            if start < ts < end:
                out.append(ts)
                break
    return out


def ticket(w: World, p: Patient, category: str | None = None) -> dict[str, Any]:
    rng = w.rng
    return {
        "ticket_id": p.object_id("tkt"),
        "category": category or TICKET_CATEGORY.draw(rng),
        "priority": PRIORITY.draw(rng),
    }


def customer_activity(w: World, p: Patient, start: int, end: int) -> list[Step]:
    """A customer's background activity in (start, end): visits, tickets, reviews, edits."""
    c, rng = w.config, w.rng
    months = (end - start) / (30 * DAY)
    steps: list[Step] = []
    for ts in moments(w, p, start, end, poisson(rng, c.sessions_per_customer_month * months)):
        data = {"page": one_of(rng, ACCOUNT_PAGES), "feature": one_of(rng, FEATURES)}
        steps.append((ts, "session.tracked", data))
    tickets = poisson(rng, c.support_tickets_per_customer_month * months)
    for ts in moments(w, p, start, end, tickets):
        steps.append((ts, "support_ticket.created", ticket(w, p)))
    referrals = poisson(rng, c.referral_rate_per_customer_month * months)
    for ts in moments(w, p, start, end, referrals):
        steps.append((ts, "referral.made", {"referral_id": p.object_id("ref")}))
    updates = poisson(rng, c.profile_updates_per_customer_month * months)
    for ts in moments(w, p, start, end, updates):
        place = w.people.places[p.place]
        steps.append((ts, "patient.updated", w.people.update(rng, place, p.language)))
    if not p.reviewed and rng.random() < min(1.0, c.review_rate_per_customer_month * months):
        for ts in moments(w, p, start, end, 1):
            p.reviewed = True
            rating = RATING.draw(rng)
            steps.append((ts, "review.posted", {"review_id": p.object_id("rev"), "rating": rating}))
    return steps


def in_order(steps: list[Step], after: int) -> Generator[Step, None, int]:
    """Yield steps sorted by time, each strictly after the one before; return the last instant."""
    steps.sort(key=_instant)
    last = after
    for ts, kind, data in steps:
        last = ts if ts > last else last + 1
        yield last, kind, data
    return last


def _instant(step: Step) -> int:
    return step[0]
