"""Who the synthetic patients are: US demographics from pools Faker fills once per seed.

Faker (en_US, and es_MX for Spanish speakers) runs only while the pools are built; per patient
the simulator picks from them with its own seeded RNG, which keeps generation fast and the
output reproducible. Contact details can never reach a real person: phone numbers use the
555-0100..0199 block kept for fiction, emails the RFC 2606 example domains.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from faker import Faker

from telecrm.simulate.geography import STATES, Place, places
from telecrm.simulate.sampling import Weighted, one_of

_POOL_NAMES = 600  # per sex and language: enough variety, built in well under a second
_POOL_SURNAMES = 1500
_POOL_STREETS = 3000
_POOL_CITIES = 800
_POOL_ZIPS_PER_STATE = 25
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # RFC 2606: never deliverable

CHANNEL = Weighted(
    ("organic_search", "paid_search", "paid_social", "direct", "referral", "affiliate", "email"),
    (0.28, 0.20, 0.22, 0.12, 0.08, 0.06, 0.04),  # assumption
)

RELATIONS = ("spouse", "partner", "parent", "sibling", "child", "friend")
INSURERS = (
    "Aetna",
    "Anthem Blue Cross",
    "Blue Cross Blue Shield",
    "Cigna",
    "Humana",
    "Kaiser Permanente",
    "UnitedHealthcare",
)
PROVIDER_PREFERENCES = (
    "female provider",
    "male provider",
    "Spanish-speaking provider",
    "same provider each visit",
    "evening appointments",
)
# assumption, roughly US card-network shares
CARD_BRAND = Weighted(("visa", "mastercard", "amex", "discover"), (0.52, 0.26, 0.14, 0.08))
PREFERRED_CHANNEL = Weighted(("email", "sms", "none"), (0.55, 0.40, 0.05))  # assumption


@dataclass(frozen=True, slots=True)
class Pools:
    first_female: dict[str, tuple[str, ...]]  # by language
    first_male: dict[str, tuple[str, ...]]
    last: dict[str, tuple[str, ...]]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    zips: dict[str, tuple[str, ...]]


@lru_cache(maxsize=4)
def pools_for(seed: int) -> Pools:
    """Fill the pools with Faker, seeded from `seed`: same seed, same pools."""
    en, es = Faker("en_US"), Faker("es_MX")
    en.seed_instance(seed)
    es.seed_instance(seed + 1)

    def many(fn: Any, n: int) -> tuple[str, ...]:
        return tuple(fn() for _ in range(n))

    return Pools(
        first_female={
            "en": many(en.first_name_female, _POOL_NAMES),
            "es": many(es.first_name_female, _POOL_NAMES),
        },
        first_male={
            "en": many(en.first_name_male, _POOL_NAMES),
            "es": many(es.first_name_male, _POOL_NAMES),
        },
        last={"en": many(en.last_name, _POOL_SURNAMES), "es": many(es.last_name, _POOL_SURNAMES)},
        streets=many(en.street_address, _POOL_STREETS),
        cities=many(en.city, _POOL_CITIES),
        zips={
            s.code: tuple(en.zipcode_in_state(s.code) for _ in range(_POOL_ZIPS_PER_STATE))
            for s in STATES
        },
    )


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum()) or "patient"


class Population:
    """Draws people: where they live at arrival, their full details at registration."""

    def __init__(self, seed: int) -> None:
        self.pools = pools_for(seed)
        self.places, weights = places()
        self._place = Weighted(range(len(self.places)), weights)

    def place(self, rng: random.Random) -> int:
        return self._place.draw(rng)

    def channel(self, rng: random.Random) -> str:
        return CHANNEL.draw(rng)

    def language(self, rng: random.Random, place: Place) -> str:
        return "es" if rng.random() < place.state.es_share else "en"

    def phone(self, rng: random.Random, place: Place) -> str:
        return f"+1{one_of(rng, place.area_codes)}55501{rng.randrange(100):02d}"

    def card(self, rng: random.Random) -> tuple[str, str]:
        """(brand, last 4 digits): never a card number (DESIGN.md §4.1)."""
        return CARD_BRAND.draw(rng), f"{rng.randrange(10_000):04d}"

    def address(self, rng: random.Random, place: Place) -> dict[str, str]:
        p = self.pools
        return {
            "line1": one_of(rng, p.streets),
            "city": one_of(rng, p.cities),
            "state": place.state.code,
            "postal_code": one_of(rng, p.zips[place.state.code]),
        }

    def _first_name(self, rng: random.Random, sex: str, language: str) -> str:
        pool = self.pools.first_female if sex == "female" else self.pools.first_male
        return one_of(rng, pool[language])

    def registration(
        self,
        rng: random.Random,
        *,
        number: str,
        place: Place,
        sex: str,
        age: int,
        language: str,
        channel: str,
        registered_on: date,
    ) -> dict[str, Any]:
        """The `patient.registered` data: contact, location, demographics and preferences."""
        first = self._first_name(rng, sex, language)
        last = one_of(rng, self.pools.last[language])
        lived = timedelta(days=int((age + rng.uniform(0.01, 0.99)) * 365.2425))
        data: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}.{number}@{one_of(rng, _EMAIL_DOMAINS)}",
            "phone": self.phone(rng, place),
            "date_of_birth": (registered_on - lived).isoformat(),
            "sex": sex,
            "language": language,
            "address": self.address(rng, place),
            "timezone": place.timezone,
            "communication_preferences": self.preferences(rng),
            "billing_cycle": "monthly",
            "paperless_billing": rng.random() < 0.8,
            "acquisition_channel": channel,
        }
        if rng.random() < 0.6:
            data["emergency_contact"] = self.emergency_contact(rng, place, language, last)
        if rng.random() < 0.25:
            data["insurance"] = self.insurance(rng)
        return data

    def preferences(self, rng: random.Random) -> dict[str, Any]:
        channel = PREFERRED_CHANNEL.draw(rng)
        prefs: dict[str, Any] = {
            "preferred_channel": channel,
            "email_consent": rng.random() < 0.97,
            "sms_consent": rng.random() < (0.9 if channel == "sms" else 0.55),
            "marketing_consent": rng.random() < 0.5,
        }
        quiet = rng.random()
        if quiet < 0.7:
            prefs["quiet_hours_start"], prefs["quiet_hours_end"] = "21:00", "08:00"
        elif quiet < 0.9:
            prefs["quiet_hours_start"], prefs["quiet_hours_end"] = "22:00", "07:00"
        return prefs

    def emergency_contact(
        self, rng: random.Random, place: Place, language: str, family_name: str
    ) -> dict[str, str]:
        relation = one_of(rng, RELATIONS)
        sex = one_of(rng, ("female", "male"))
        last = family_name if relation != "friend" else one_of(rng, self.pools.last[language])
        return {
            "name": f"{self._first_name(rng, sex, language)} {last}",
            "phone": self.phone(rng, place),
            "relation": relation,
        }

    def insurance(self, rng: random.Random) -> dict[str, str]:
        letters = "".join(one_of(rng, "ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
        return {
            "provider": one_of(rng, INSURERS),
            "member_id": f"{letters}{rng.randrange(10**9):09d}",
        }

    def update(self, rng: random.Random, place: Place, language: str) -> dict[str, Any]:
        """A `patient.updated` payload: one of the changes patients make after signing up."""
        kind = rng.random()
        if kind < 0.25:
            return {"address": self.address(rng, place)}  # moved, within the same state
        if kind < 0.45:
            return {"phone": self.phone(rng, place)}
        if kind < 0.70:
            return {"communication_preferences": self.preferences(rng)}
        if kind < 0.82:
            last = one_of(rng, self.pools.last[language])
            return {"emergency_contact": self.emergency_contact(rng, place, language, last)}
        if kind < 0.92:
            return {"insurance": self.insurance(rng)}
        return {"provider_preference": one_of(rng, PROVIDER_PREFERENCES)}


def local_date_of(ts: int, offset_seconds: int) -> date:
    return datetime.fromtimestamp(ts + offset_seconds, UTC).date()
