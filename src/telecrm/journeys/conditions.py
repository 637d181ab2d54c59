"""Entry filters and branch conditions, evaluated on a patient's profile and consent ledger.

A condition never copies a value anywhere: it answers yes or no, and the step history records
only which way the patient went.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from telecrm.domain.consent import ConsentBook
from telecrm.domain.profile import Profile
from telecrm.journeys.definition import Condition

EventSeen = Callable[[str], bool]  # did an event of this type arrive since the patient entered?


@dataclass(slots=True)
class PatientView:
    """What a condition may look at: the decrypted profile and the consent book."""

    profile: Profile | None
    consent: ConsentBook | None

    @property
    def stage(self) -> str | None:
        p = self.profile
        return p.stage.value if p is not None and p.stage is not None else None

    def value(self, name: str) -> Any:
        return None if self.profile is None else self.profile.values.get(name)


def holds(c: Condition, patient: PatientView, event_seen: EventSeen | None = None) -> bool:
    if c.stage is not None and patient.stage not in {s.value for s in c.stage}:
        return False
    if c.not_stage is not None and patient.stage in {s.value for s in c.not_stage}:
        return False
    if c.field is not None:
        value = patient.value(c.field)
        if c.exists is not None and (value is not None) != c.exists:
            return False
        if c.equals is not None and value != c.equals:
            return False
        if c.in_ is not None and value not in c.in_:
            return False
        if c.at_least is not None and not (
            isinstance(value, int | float) and not isinstance(value, bool) and value >= c.at_least
        ):
            return False
    if c.consent is not None:
        if patient.consent is None:
            return False
        allowed, _ = patient.consent.allows(c.consent.channel, c.consent.purpose)
        if not allowed:
            return False
    return not (c.event_seen is not None and (event_seen is None or not event_seen(c.event_seen)))


def all_hold(
    conditions: Sequence[Condition], patient: PatientView, event_seen: EventSeen | None = None
) -> bool:
    return all(holds(c, patient, event_seen) for c in conditions)


def needs_profile(conditions: Sequence[Condition]) -> bool:
    return any(
        c.stage is not None or c.not_stage is not None or c.field is not None or c.consent
        for c in conditions
    )
