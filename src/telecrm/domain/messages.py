"""Domain events the projection publishes on the bus; sync, journeys and analytics subscribe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telecrm.domain.lifecycle import Stage


@dataclass(frozen=True, slots=True)
class EventsAccepted:
    count: int


@dataclass(frozen=True, slots=True)
class ProfileChanged:
    patient_key: str
    patient_id: str | None


@dataclass(frozen=True, slots=True)
class StageChanged:
    patient_key: str
    patient_id: str | None
    from_stage: Stage | None
    to_stage: Stage
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class TriggerFired:
    """One of the 8 automation triggers (DESIGN.md §4.3) arrived for a patient."""

    trigger: str
    patient_id: str
    event_id: str
    at: datetime


DomainMessage = EventsAccepted | ProfileChanged | StageChanged | TriggerFired
