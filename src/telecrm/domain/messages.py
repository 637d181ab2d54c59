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


@dataclass(frozen=True, slots=True)
class PatientActivity:
    """An event folded, or a stage entered, for an identified patient: what journeys listen to."""

    patient_key: str
    kind: str  # event | stage
    name: str  # the event type, or the stage entered
    event_id: str | None
    at_us: int
