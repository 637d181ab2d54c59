"""A small clinical vocabulary for synthetic consultations, and the provider panel.

Seven condition areas of a DTC telehealth catalogue, each with its treatments, typical symptoms
and the comorbidities (with the drug a patient already takes for them) that come with it, so
conditions and medications co-occur the way they do in practice: hypertension with lisinopril,
hair loss with finasteride, ED with sildenafil, weight management with semaglutide, acne with
tretinoin, anxiety with sertraline. Area shares, price factors and prevalences are assumptions
(no public DTC case mix exists; analytics.md §6.2); prices are scaled so the subscription mix
averages `monthly_revenue_per_subscriber` ([6.1]).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.sampling import Weighted

_LISINOPRIL = "lisinopril 10 mg tablet"
_METFORMIN = "metformin 500 mg tablet"
_ATORVASTATIN = "atorvastatin 20 mg tablet"


@dataclass(frozen=True, slots=True)
class Treatment:
    medication: str
    weight: float
    sex: str | None = None  # prescribed only to this sex
    avoid_if_allergic_to: str | None = None


@dataclass(frozen=True, slots=True)
class Comorbidity:
    condition: str
    probability: float  # at ages 35-54; younger and older patients scale it (see below)
    medication: str | None


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    condition: str
    share: float
    chronic: bool
    glp1: bool
    male_share: float
    ages: tuple[int, int, int]  # low, high, mode of a triangular draw
    treatments: tuple[Treatment, ...]
    symptoms: tuple[tuple[str, int], ...]  # (name, typical severity 0-10)
    comorbidities: tuple[Comorbidity, ...]
    price_factor: float
    days_supply: int
    refills: int
    page: str


AREAS: tuple[Area, ...] = (
    Area(
        "hair_loss", "androgenetic alopecia", 0.22, True, False, 0.85, (18, 65, 32),
        (
            Treatment("finasteride 1 mg tablet", 0.6, sex="male"),
            Treatment("minoxidil 2.5 mg tablet", 0.25),
            Treatment("minoxidil 5% topical foam", 0.15),
        ),
        (("hair thinning", 5), ("receding hairline", 5), ("increased hair shedding", 4)),
        (),
        0.45, 30, 11, "/hair-loss",
    ),
    Area(
        "erectile_dysfunction", "erectile dysfunction", 0.20, True, False, 1.0, (25, 80, 48),
        (
            Treatment("sildenafil 50 mg tablet", 0.55, sex="male"),
            Treatment("tadalafil 5 mg tablet", 0.45, sex="male"),
        ),
        (
            ("difficulty maintaining an erection", 6),
            ("difficulty achieving an erection", 6),
            ("reduced libido", 4),
            ("performance anxiety", 4),
        ),
        (
            Comorbidity("hypertension", 0.30, _LISINOPRIL),
            Comorbidity("type 2 diabetes", 0.15, _METFORMIN),
            Comorbidity("hyperlipidemia", 0.20, _ATORVASTATIN),
        ),
        0.55, 30, 11, "/ed",
    ),
    Area(
        "weight_management", "obesity", 0.22, True, True, 0.35, (22, 75, 45),
        (
            Treatment("semaglutide 0.25 mg weekly injection", 0.75),
            Treatment("tirzepatide 2.5 mg weekly injection", 0.25),
        ),
        (
            ("weight gain", 6),
            ("fatigue", 4),
            ("joint pain", 4),
            ("shortness of breath on exertion", 3),
        ),
        (
            Comorbidity("hypertension", 0.35, _LISINOPRIL),
            Comorbidity("type 2 diabetes", 0.20, _METFORMIN),
            Comorbidity("hyperlipidemia", 0.30, _ATORVASTATIN),
            Comorbidity("obstructive sleep apnea", 0.12, None),
        ),
        2.6, 30, 11, "/weight-loss",
    ),
    Area(
        "acne", "acne vulgaris", 0.10, True, False, 0.40, (18, 40, 22),
        (
            Treatment("tretinoin 0.025% cream", 0.6),
            Treatment("doxycycline 100 mg capsule", 0.25),
            Treatment("spironolactone 50 mg tablet", 0.15, sex="female"),
        ),
        (("inflammatory acne", 5), ("blackheads and whiteheads", 4), ("acne scarring", 3)),
        (Comorbidity("polycystic ovary syndrome", 0.04, None),),
        0.5, 30, 11, "/acne",
    ),
    Area(
        "anxiety", "generalized anxiety disorder", 0.14, True, False, 0.40, (18, 70, 33),
        (
            Treatment("sertraline 50 mg tablet", 0.5),
            Treatment("escitalopram 10 mg tablet", 0.35),
            Treatment("buspirone 10 mg tablet", 0.15),
        ),
        (
            ("excessive worry", 6),
            ("insomnia", 5),
            ("restlessness", 5),
            ("difficulty concentrating", 4),
            ("panic attacks", 5),
        ),
        (Comorbidity("depression", 0.40, None), Comorbidity("insomnia disorder", 0.20, None)),
        0.6, 30, 11, "/anxiety",
    ),
    Area(
        "hypertension", "hypertension", 0.07, True, False, 0.55, (30, 85, 58),
        (
            Treatment(_LISINOPRIL, 0.5),
            Treatment("amlodipine 5 mg tablet", 0.3),
            Treatment("losartan 50 mg tablet", 0.2),
        ),
        (("elevated home blood pressure readings", 5), ("headaches", 3), ("dizziness", 2)),
        (
            Comorbidity("hyperlipidemia", 0.45, _ATORVASTATIN),
            Comorbidity("type 2 diabetes", 0.25, _METFORMIN),
            Comorbidity("obesity", 0.35, None),
        ),
        0.35, 30, 11, "/blood-pressure",
    ),
    Area(
        "uti", "urinary tract infection", 0.05, False, False, 0.05, (18, 75, 30),
        (
            Treatment("nitrofurantoin 100 mg capsule", 0.7),
            Treatment(
                "sulfamethoxazole-trimethoprim 800-160 mg tablet",
                0.3,
                avoid_if_allergic_to="sulfonamides",
            ),
        ),
        (
            ("painful urination", 7),
            ("urinary frequency", 6),
            ("urinary urgency", 6),
            ("lower abdominal pain", 4),
        ),
        (),
        0.55, 5, 0, "/uti",
    ),
)  # fmt: skip

# Drug allergies patients report (assumption; penicillin is by far the most reported).
ALLERGIES: tuple[tuple[str, float], ...] = (
    ("penicillin", 0.10),
    ("sulfonamides", 0.03),
    ("codeine", 0.02),
    ("ibuprofen", 0.02),
    ("latex", 0.01),
)

OUTCOMES = Weighted(("improving", "stable", "no_change", "side_effects"), (0.55, 0.25, 0.12, 0.08))


def area_prices(config: SimulationConfig) -> dict[str, float]:
    """Monthly plan price per area, scaled so the chronic mix averages the configured revenue."""
    chronic = [a for a in AREAS if a.chronic]
    mean_factor = sum(a.share * a.price_factor for a in chronic) / sum(a.share for a in chronic)
    unit = config.monthly_revenue_per_subscriber / mean_factor
    return {a.code: a.price_factor * unit for a in AREAS}


def _age_scale(age: int) -> float:
    return 0.5 if age < 35 else (1.0 if age < 55 else 1.6)


@dataclass(frozen=True, slots=True)
class History:
    """What a patient brings to the first consultation."""

    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    allergies: tuple[str, ...]


def history_for(rng: random.Random, area: Area, age: int) -> History:
    conditions = [area.condition]
    medications = []
    scale = _age_scale(age)
    for c in area.comorbidities:
        if rng.random() < min(0.9, c.probability * scale):
            conditions.append(c.condition)
            if c.medication is not None:
                medications.append(c.medication)
    allergies = tuple(name for name, p in ALLERGIES if rng.random() < p)
    return History(tuple(conditions), tuple(medications), allergies)


def symptoms_for(rng: random.Random, area: Area, relief: int = 0) -> list[dict[str, object]]:
    """1-3 of the area's symptoms with a severity near the typical one, less `relief`."""
    chosen = rng.sample(area.symptoms, k=min(len(area.symptoms), rng.randint(1, 3)))
    return [
        {"name": name, "severity": max(0, min(10, typical + rng.randint(-2, 2) - relief))}
        for name, typical in chosen
    ]


def treatment_for(rng: random.Random, area: Area, sex: str, allergies: tuple[str, ...]) -> str:
    options = [
        t
        for t in area.treatments
        if (t.sex is None or t.sex == sex) and t.avoid_if_allergic_to not in allergies
    ]
    if not options:  # e.g. a female patient in an area whose only drugs are sex-restricted
        options = [t for t in area.treatments if t.sex is None] or list(area.treatments)
    return rng.choices(options, weights=[t.weight for t in options])[0].medication


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    median_response_minutes: float
    capacity: float


class CareTeam:
    """The provider panel. Providers differ in how fast they pick up a consultation."""

    def __init__(self, config: SimulationConfig, rng: random.Random) -> None:
        count = max(3, math.ceil(config.patients / config.patients_per_provider))
        mu = math.log(config.provider_response_median_minutes)
        self.providers = tuple(
            Provider(
                f"prov_{i + 1:04d}",
                round(rng.lognormvariate(mu, 0.6), 1),  # spread of medians (assumption)
                round(rng.lognormvariate(0.0, 0.5), 3),  # share of the queue (assumption)
            )
            for i in range(count)
        )
        self._panel = Weighted(self.providers, [p.capacity for p in self.providers])
        self._mu_visit = math.log(config.visit_median_minutes)

    def pick(self, rng: random.Random) -> Provider:
        return self._panel.draw(rng)

    def response_seconds(self, rng: random.Random, provider: Provider) -> int:
        minutes = rng.lognormvariate(math.log(provider.median_response_minutes), 0.8)
        return int(min(minutes, 72 * 60) * 60) + 1  # capped at 3 days (assumption)

    def visit_seconds(self, rng: random.Random) -> int:
        return int(min(rng.lognormvariate(self._mu_visit, 0.5), 90) * 60) + 1
