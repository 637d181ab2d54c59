"""The shape of a patient's export (right of access, 45 CFR 164.524): versioned pydantic models.

`ExportRecord.model_json_schema()` is the documented schema. Adding an optional key keeps
`schema_version`; renaming, removing or retyping one raises it, so a program that reads exports
can tell which shape it holds. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1
EXPORT_KIND = "telecrm.patient_export"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientSummary(_Part):
    id: str
    stage: str | None
    crm_status: str | None
    stage_since: datetime | None
    deleted: bool
    merged_into: str | None
    linked_anonymous_ids: list[str]


class ProfileValue(_Part):
    """One catalog field the profile holds, decrypted, with its data point."""

    field: str
    data_point: str
    category: str
    phi: bool
    value: Any


class Scores(_Part):
    lead_score: float | None
    engagement_score: float | None
    predicted_ltv: float | None
    churn_risk: float | None
    adherence_pdc: float | None
    scored_at: datetime | None


class BusinessRecord(_Part):
    """A consultation, prescription, subscription, order... as the platform reported it."""

    kind: str
    id: str
    attributes: dict[str, Any]


class TimelineEvent(_Part):
    id: str
    type: str
    version: int
    occurred_at: datetime
    received_at: datetime
    source: str
    # None when an erasure shredded the payload: the event's type and time are all that is left
    data: dict[str, Any] | None


class StageChange(_Part):
    at: datetime
    from_stage: str | None
    to_stage: str
    reason: str
    event_id: str | None


class MessageRecord(_Part):
    """A message planned for the patient. Bodies are rendered at send time and never stored."""

    id: str
    channel: str
    template: str
    purpose: str
    source: str
    status: str
    reason: str | None
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    replied_at: datetime | None


class ConsentChange(_Part):
    at: datetime
    channel: str
    purpose: str
    granted: bool
    source: str
    evidence: str


class SurveyAnswer(_Part):
    at: datetime
    message_id: str
    score: int
    provider_id: str | None


class JourneyEntry(_Part):
    journey: str
    version: int
    group: str
    state: str
    entered_at: datetime
    finished_at: datetime | None
    exit_reason: str | None


class DisclosureEntry(_Part):
    id: int
    at: datetime
    source: str
    destination: str
    recipient: str
    recipient_address: str | None
    object: str
    record_key: str
    fields: list[str]
    data_points: list[str]
    description: str
    phi: bool
    purpose: str
    purpose_code: str


class ExportRecord(_Part):
    """Everything telecrm holds about one patient, in a form the patient can be given."""

    schema_version: Literal[1]
    kind: Literal["telecrm.patient_export"]
    generated_at: datetime | None
    patient: PatientSummary
    profile: list[ProfileValue]
    facts: dict[str, Any]
    scores: Scores
    records: list[BusinessRecord]
    events: list[TimelineEvent]
    stage_history: list[StageChange]
    messages: list[MessageRecord]
    consent: list[ConsentChange]
    survey_answers: list[SurveyAnswer]
    journeys: list[JourneyEntry]
    disclosures: list[DisclosureEntry]
