"""The people the simulator moves: a patient's latent parameters and a bounced visitor.

Everything that decides a patient's path is drawn once, at arrival, and kept here: how deep into
the funnel they are destined to go (`fate`), their churn hazard (sBG), reorder rate and dropout
(BG/NBD), spend multiplier (Gamma-Gamma style) and whether a churn would be won back. The ground
truth file is these fields. Demographic details are drawn later, at registration, and not kept,
so a waiting patient costs a few hundred bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import IntEnum

from telecrm.simulate.clinical import AREAS, Area
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.sampling import Weighted


class Fate(IntEnum):
    """The deepest funnel step a patient will reach if the period lasts long enough."""

    REGISTERED = 0
    QUESTIONNAIRE = 1
    CONSULTATION = 2
    TREATMENT = 3
    FIRST_ORDER = 4
    SUBSCRIPTION = 5


# Latent-parameter shapes (assumptions; only their means come from sources).
REORDER_RATE_SHAPE = 3.0  # Gamma shape of the BG/NBD purchase rate across patients
DROPOUT_CONCENTRATION = 20.0  # a+b of the BG/NBD dropout Beta
SPEND_SHAPE = 8.0  # Gamma shape of the per-patient spend multiplier (mean 1)
ACUTE_REORDER_RATE = 0.08  # an acute course is rarely repeated: ~1 recurrence a year
ACUTE_DROPOUT = 0.5


@dataclass(slots=True)
class Patient:
    index: int
    number: str  # "000042": ids of the patient's own objects are built from it
    id: str
    key: str  # what event ids are built from: the patient id
    anonymous_id: str
    arrival: int
    place: int
    tz: int
    area: int
    sex: str
    age: int
    language: str
    channel: str
    extra_sessions: int
    fate: Fate
    no_show: bool
    churn_hazard: float
    reorder_rate: float
    dropout: float
    spend: float
    plan_amount: float
    wins_back: bool
    registered: bool = False
    seq: int = 0  # event counter: event ids are <prefix><id>-<seq>
    objects: int = 0  # counter for the ids of orders, tickets, subscriptions...
    reviewed: bool = False
    card: tuple[str, str] | None = None  # (brand, last4)
    medication: str = ""
    prescription_id: str = ""
    fills: int = 0
    provider: str = ""
    # Latent instants for the truth file (0 = never): a silent dropout, a churn, a win-back
    # and, since a won-back patient can leave once more, that second lapse.
    dropped_out_at: int = 0
    churned_at: int = 0
    won_back_at: int = 0
    lapsed_again_at: int = 0

    def object_id(self, kind: str) -> str:
        self.objects += 1
        return f"{kind}_{self.number}_{self.objects}"

    def lapse(self, *, silent: bool, at: int) -> None:
        """Record a churn (cancelled or lapsed subscription) or a silent BG/NBD dropout."""
        if self.won_back_at:
            self.lapsed_again_at = at
        elif silent:
            self.dropped_out_at = at
        else:
            self.churned_at = at

    def area_info(self) -> Area:
        return AREAS[self.area]


@dataclass(slots=True)
class Visitor:
    """Someone who looks around anonymously and never signs up."""

    index: int
    key: str
    anonymous_id: str
    arrival: int
    tz: int
    page: str
    channel: str
    sessions: int
    registered: bool = False
    seq: int = 0


def draw_fate(rng: random.Random, c: SimulationConfig, area: Area) -> tuple[Fate, bool]:
    """Walk the funnel with the configured rates; returns (fate, no-show at the consultation)."""
    if rng.random() >= c.questionnaire_rate:
        return Fate.REGISTERED, False
    if rng.random() >= c.consultation_rate:
        return Fate.QUESTIONNAIRE, False
    if rng.random() < c.no_show_rate:
        return Fate.CONSULTATION, True
    if rng.random() >= c.prescription_rate:
        return Fate.CONSULTATION, False
    fill = c.first_fill_rate_chronic if area.chronic else c.first_fill_rate_acute
    if rng.random() >= fill:
        return Fate.TREATMENT, False
    if not area.chronic or rng.random() >= c.subscription_rate:
        return Fate.FIRST_ORDER, False
    return Fate.SUBSCRIPTION, False


_AREA = Weighted(range(len(AREAS)), [a.share for a in AREAS])


def draw_area(rng: random.Random) -> int:
    return _AREA.draw(rng)


def draw_latent(
    rng: random.Random, c: SimulationConfig, area: Area, price: float
) -> tuple[float, float, float, float, float]:
    """(churn hazard, reorder rate per month, dropout per order, spend multiplier, plan price)."""
    alpha, beta = c.sbg_params(area.glp1)
    hazard = rng.betavariate(alpha, beta)
    if area.chronic:
        rate_mean, drop_mean = c.reorder_rate_per_month, 1.0 - c.refill_probability
    else:
        rate_mean, drop_mean = ACUTE_REORDER_RATE, ACUTE_DROPOUT
    rate = rng.gammavariate(REORDER_RATE_SHAPE, rate_mean / REORDER_RATE_SHAPE)
    dropout = rng.betavariate(
        drop_mean * DROPOUT_CONCENTRATION, (1 - drop_mean) * DROPOUT_CONCENTRATION
    )
    spend = rng.gammavariate(SPEND_SHAPE, 1.0 / SPEND_SHAPE)
    plan = max(9.99, round(price * spend) - 0.01)  # prices end in .99
    return hazard, max(rate, 0.01), dropout, spend, plan


def tier_of(spend: float) -> str:
    return "essential" if spend < 0.85 else ("standard" if spend < 1.2 else "premium")
