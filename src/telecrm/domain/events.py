"""Platform events (DESIGN.md §4.3) as versioned pydantic models, and the one parser that reads them.

An event is `{id, type, version, occurred_at, patient: {id, anonymous_id}, data}`. `id` is the
idempotency key. `parse_event` is the only door in: it checks the envelope, picks the data model
for `(type, version)` and returns an `Event`, or raises `EventRejected` whose message names the
field and the rule but never repeats a value (values may be PHI).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from telecrm.domain.clock import to_micros
from telecrm.domain.identity import InvalidIdentity, clean_name, normalise_email, normalise_phone

MAX_FUTURE_SKEW = timedelta(minutes=5)  # clocks drift; an event from further ahead is a bug
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


# Events read back from the log were normalised when they came in, and the log's AES-GCM tag
# proves they are unchanged; replay passes context={"stored": True} to skip redoing it (the
# phone parser alone was a fifth of a rebuild).
STORED = {"stored": True}


def _from_log(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def _email(v: str, info: ValidationInfo) -> str:
    if _from_log(info):
        return v
    try:
        return normalise_email(v)
    except InvalidIdentity as exc:
        raise ValueError(str(exc)) from None


def _phone(v: str, info: ValidationInfo) -> str:
    if _from_log(info):
        return v
    try:
        return normalise_phone(v)
    except InvalidIdentity as exc:
        raise ValueError(str(exc)) from None


def _name(v: str, info: ValidationInfo) -> str:
    if _from_log(info):
        return v
    try:
        return clean_name(v)
    except InvalidIdentity as exc:
        raise ValueError(str(exc)) from None


def _text(v: str, info: ValidationInfo) -> str:
    if _from_log(info):
        return v
    try:
        return clean_name(v, max_length=500)
    except InvalidIdentity as exc:
        raise ValueError(str(exc)) from None


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(_phone)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_name)]
Text = Annotated[str, Field(max_length=1000), AfterValidator(_text)]
Code = Annotated[str, Field(pattern=r"^[a-z0-9_\-]{1,64}$")]
Money = Annotated[float, Field(ge=0, le=1_000_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PatientRef(_Model):
    id: Identifier | None = None
    anonymous_id: Identifier | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PatientRef:
        if self.id is None and self.anonymous_id is None:
            raise ValueError("needs an id or an anonymous_id")
        return self


class Address(_Model):
    line1: Text | None = None
    city: Name | None = None
    state: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    postal_code: Annotated[str, Field(pattern=r"^\d{5}(-\d{4})?$")] | None = None


class EmergencyContact(_Model):
    name: Name
    phone: Phone
    relation: Code | None = None


class CommunicationPreferences(_Model):
    preferred_channel: Literal["email", "sms", "none"] | None = None
    email_consent: bool | None = None
    sms_consent: bool | None = None
    marketing_consent: bool | None = None
    quiet_hours_start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    quiet_hours_end: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None


class Symptom(_Model):
    name: Text
    severity: Annotated[int, Field(ge=0, le=10)]


class PaymentMethod(_Model):
    brand: Code
    last4: Annotated[str, Field(pattern=r"^\d{4}$")]  # never a card number: §4.1


class Insurance(_Model):
    provider: Text
    member_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9\-]{1,40}$")]


class _PatientDetails(_Model):
    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    date_of_birth: date | None = None
    sex: Literal["female", "male", "intersex", "unknown"] | None = None
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    address: Address | None = None
    timezone: Annotated[str, Field(pattern=r"^[A-Za-z_]+(/[A-Za-z_\-+0-9]+){0,2}$")] | None = None
    emergency_contact: EmergencyContact | None = None
    communication_preferences: CommunicationPreferences | None = None
    insurance: Insurance | None = None
    billing_cycle: Literal["monthly", "quarterly", "annual"] | None = None
    paperless_billing: bool | None = None
    conditions: tuple[Text, ...] | None = None
    medications: tuple[Text, ...] | None = None
    allergies: tuple[Text, ...] | None = None
    provider_preference: Text | None = None

    @model_validator(mode="after")
    def _plausible_birth(self) -> _PatientDetails:
        if self.date_of_birth is not None and not (
            date(1900, 1, 1) <= self.date_of_birth <= date(2100, 1, 1)
        ):
            raise ValueError("date_of_birth is outside 1900-2100")
        return self


class PatientRegistered(_PatientDetails):
    first_name: Name
    last_name: Name
    email: Email
    acquisition_channel: Code | None = None


class PatientUpdated(_PatientDetails):
    @model_validator(mode="after")
    def _not_empty(self) -> PatientUpdated:
        # Nulls change nothing (the profile ignores them) and are dropped when the event is
        # stored, so an update of only nulls would be stored as `{}`, which this model refuses.
        if all(getattr(self, name) is None for name in self.model_fields_set):
            raise ValueError("an update must change at least one field")
        return self


class PatientDeleted(_Model):
    reason: Code | None = None


class SessionTracked(_Model):
    page: Annotated[str, Field(max_length=200)] | None = None
    channel: Code | None = None
    feature: Code | None = None


class QuestionnaireStarted(_Model):
    questionnaire_id: Identifier
    condition_area: Code | None = None


class ConsultationSubmitted(_Model):
    consultation_id: Identifier
    condition_area: Code | None = None
    symptoms: tuple[Symptom, ...] = ()
    conditions: tuple[Text, ...] = ()
    medications: tuple[Text, ...] = ()
    allergies: tuple[Text, ...] = ()


class ConsultationAssigned(_Model):
    consultation_id: Identifier
    provider_id: Identifier


class ConsultationAccepted(_Model):
    consultation_id: Identifier
    provider_id: Identifier


class PrescriptionApproved(_Model):
    prescription_id: Identifier
    consultation_id: Identifier | None = None
    medication: Text
    days_supply: Annotated[int, Field(ge=1, le=365)] = 30
    refills: Annotated[int, Field(ge=0, le=24)] = 0


class TreatmentPlanUpdated(_Model):
    treatment_plan_id: Identifier
    status: Literal["created", "updated", "completed", "discontinued"]
    outcome: Text | None = None
    progress: Text | None = None


class RefillDue(_Model):
    prescription_id: Identifier
    due_on: date


class OrderPaid(_Model):
    order_id: Identifier
    amount: Money
    currency: Literal["USD"] = "USD"
    recurring: bool = False
    subscription_id: Identifier | None = None
    payment_method: PaymentMethod | None = None


class SubscriptionStarted(_Model):
    subscription_id: Identifier
    tier: Code
    interval: Literal["monthly", "quarterly", "annual"] = "monthly"
    amount: Money


class SubscriptionRenewed(_Model):
    subscription_id: Identifier
    amount: Money | None = None


class SubscriptionRenewalApproaching(_Model):
    subscription_id: Identifier
    renews_at: AwareDatetime


class SubscriptionCancelled(_Model):
    subscription_id: Identifier
    ends_at: AwareDatetime  # service runs to the end of the paid period, then lapses
    reason: Code | None = None


class PaymentFailed(_Model):
    order_id: Identifier | None = None
    subscription_id: Identifier | None = None
    amount: Money | None = None
    reason: Code


class SupportTicketCreated(_Model):
    ticket_id: Identifier
    category: Code
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class ReferralMade(_Model):
    referral_id: Identifier


class ReviewPosted(_Model):
    review_id: Identifier
    rating: Annotated[int, Field(ge=1, le=5)]


class MessageEngagement(_Model):
    """Delivery and engagement reports that come back from SendGrid and Twilio."""

    message_id: Identifier
    template: Code | None = None


class JourneyMilestone(_Model):
    """A journey reached a named step (`emit_event`); other journeys may listen for it."""

    journey: Code
    milestone: Code


class JourneyCaseOpened(_Model):
    """A journey step opened a task or a case for a care coordinator (`crm_task` / `crm_case`);
    the sync carries it to each CRM's case or activity object. The subject is the journey
    author's fixed text, never a patient value."""

    journey: Code
    case_id: Identifier
    kind: Literal["task", "case"]
    subject: Annotated[str, Field(min_length=1, max_length=120)]
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    due_at: AwareDatetime | None = None


JourneyValue = Annotated[str, Field(max_length=64)] | int | float | bool


class JourneyFieldsSet(_Model):
    """A journey step set CRM fields on the patient's record (`crm_update`): fixed values the
    journey names (for example nurture_status: engaged), which mappings send as `journey.<name>`."""

    journey: Code
    fields: Annotated[dict[Code, JourneyValue], Field(min_length=1, max_length=20)]


Score = Annotated[float, Field(ge=-10_000, le=10_000, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class AnalyticsScored(_Model):
    """`telecrm analytics run` scored the patient: numbers only, written when one changed.

    The projection keeps them on the profile (churn risk feeds the at_risk stage) and the sync
    sends them as the CRM's score fields. Adherence describes medication-taking, so the profile
    keeps it sealed and only destinations under a BAA may receive it."""

    lead_score: Score
    engagement_score: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    churn_risk: Share | None = None  # customers only: P(churn within the model's horizon)
    predicted_ltv: Annotated[float, Field(ge=0, le=10_000_000, allow_inf_nan=False)] | None = None
    adherence_pdc: Share | None = None  # mean PDC over measured medications
    model: Code  # which run's models: e.g. clv-bgnbd-gg-sbg_churn-hgb-sigmoid


DATA_MODELS: dict[tuple[str, int], type[_Model]] = {
    ("patient.registered", 1): PatientRegistered,
    ("patient.updated", 1): PatientUpdated,
    ("patient.deleted", 1): PatientDeleted,
    ("session.tracked", 1): SessionTracked,
    ("questionnaire.started", 1): QuestionnaireStarted,
    ("consultation.submitted", 1): ConsultationSubmitted,
    ("consultation.assigned", 1): ConsultationAssigned,
    ("consultation.accepted", 1): ConsultationAccepted,
    ("prescription.approved", 1): PrescriptionApproved,
    ("treatment_plan.updated", 1): TreatmentPlanUpdated,
    ("refill.due", 1): RefillDue,
    ("order.paid", 1): OrderPaid,
    ("subscription.started", 1): SubscriptionStarted,
    ("subscription.renewed", 1): SubscriptionRenewed,
    ("subscription.renewal_approaching", 1): SubscriptionRenewalApproaching,
    ("subscription.cancelled", 1): SubscriptionCancelled,
    ("payment.failed", 1): PaymentFailed,
    ("support_ticket.created", 1): SupportTicketCreated,
    ("referral.made", 1): ReferralMade,
    ("review.posted", 1): ReviewPosted,
    ("journey.milestone", 1): JourneyMilestone,
    ("journey.case_opened", 1): JourneyCaseOpened,
    ("journey.fields_set", 1): JourneyFieldsSet,
    ("analytics.scored", 1): AnalyticsScored,
    **{
        (f"email.{kind}", 1): MessageEngagement
        for kind in ("delivered", "opened", "clicked", "bounced", "unsubscribed")
    },
    **{
        (f"sms.{kind}", 1): MessageEngagement
        for kind in ("delivered", "failed", "replied", "opted_out", "opted_in")
    },
}

EVENT_TYPES: frozenset[str] = frozenset(t for t, _ in DATA_MODELS)

TRIGGERS: tuple[str, ...] = (
    "patient.registered",
    "consultation.submitted",
    "order.paid",
    "prescription.approved",
    "refill.due",
    "subscription.renewal_approaching",
    "support_ticket.created",
    "treatment_plan.updated",
)

# Events that need a known patient: everything but a visitor's anonymous session and the
# registration that creates the patient.
NEEDS_KNOWN_PATIENT: frozenset[str] = EVENT_TYPES - {"session.tracked", "patient.registered"}

# The fact an event states, by the ids in its data: the same fact sent twice under two event ids
# (a webhook and a later pull of the platform's API, or a platform that re-sends with a new id)
# is one fact. Types missing here (updates, renewals, sessions, engagement) can recur.
FACT_FIELDS: dict[str, tuple[str, ...]] = {
    "patient.registered": (),
    "questionnaire.started": ("questionnaire_id",),
    "consultation.submitted": ("consultation_id",),
    "consultation.assigned": ("consultation_id", "provider_id"),
    "consultation.accepted": ("consultation_id", "provider_id"),
    "prescription.approved": ("prescription_id",),
    "refill.due": ("prescription_id", "due_on"),
    "order.paid": ("order_id",),
    "subscription.started": ("subscription_id",),
    "subscription.cancelled": ("subscription_id",),
    "support_ticket.created": ("ticket_id",),
    "referral.made": ("referral_id",),
    "review.posted": ("review_id",),
    # A plan is created, completed or discontinued once; its "updated" status may recur.
    "treatment_plan.updated": ("treatment_plan_id", "status"),
}
RECURRING: dict[str, tuple[str, str]] = {"treatment_plan.updated": ("status", "updated")}


def fact_key(type_: str, patient_key: str, data: dict[str, Any]) -> str | None:
    """A digest naming the fact (ids only), or None for events that may recur."""
    fields = FACT_FIELDS.get(type_)
    if fields is None:
        return None
    recurring = RECURRING.get(type_)
    if recurring is not None and data.get(recurring[0]) == recurring[1]:
        return None
    parts = [type_, patient_key, *(str(data.get(name, "")) for name in fields)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class Envelope(_Model):
    id: Identifier
    type: str
    version: Annotated[int, Field(ge=1)] = 1
    occurred_at: AwareDatetime
    patient: PatientRef
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: the envelope plus its typed data.

    A plain frozen dataclass: every part was validated by `parse_event`, and building a pydantic
    model a second time cost a tenth of the bulk import.
    """

    id: str
    type: str
    version: int
    occurred_at: datetime
    patient_id: str | None
    anonymous_id: str | None
    data: _Model

    @property
    def patient_key(self) -> str:
        """The key events are ordered under: the patient id, else the visitor's anonymous id."""
        return self.patient_id if self.patient_id is not None else f"anon:{self.anonymous_id}"

    def data_dict(self) -> dict[str, Any]:
        return self.data.model_dump(mode="json", exclude_none=True)

    @property
    def occurred_us(self) -> int:
        return to_micros(self.occurred_at)

    def log_record(self) -> tuple[bytes, tuple[str, ...], str | None]:
        """What the event log keeps: `data` as JSON (before encryption), its field names, and
        the fact the event states (`fact_key`), computed from one dump of the data."""
        data = self.data_dict()
        return orjson.dumps(data), tuple(data), fact_key(self.type, self.patient_key, data)

    def to_wire(self) -> dict[str, Any]:
        patient: dict[str, str] = {}
        if self.patient_id is not None:
            patient["id"] = self.patient_id
        if self.anonymous_id is not None:
            patient["anonymous_id"] = self.anonymous_id
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "patient": patient,
            "data": self.data_dict(),
        }


class EventRejected(ValueError):
    """An event that telecrm will not accept. `reason` is a stable code for metrics."""

    def __init__(self, reason: str, detail: str, *, event_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def _loc_part(part: str | int) -> str:
    # Unknown keys are input too: name them only when they look like a field name, so a key
    # can carry neither a value, a line break nor a megabyte into a log line.
    text = str(part)
    return text if isinstance(part, int) or _SAFE_KEY.fullmatch(text) else "<unnamed key>"


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors, minus the offending input (it may be PHI)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(_loc_part(p) for p in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "")


def _unknown_type(type_: str) -> str:
    """Never echo the type (it is input); name the known type it resembles, if one does."""
    close = difflib.get_close_matches(type_, sorted(EVENT_TYPES), n=1) if len(type_) <= 64 else []
    return f"unknown event type; did you mean {close[0]!r}?" if close else "unknown event type"


def parse_event(raw: Any, *, now: datetime) -> Event:
    """Validate one wire event. Raises EventRejected with a PHI-free message."""
    if not isinstance(raw, dict):
        raise EventRejected("malformed", "an event must be a JSON object")
    raw_id = raw.get("id")
    # Only an id that passes the id rule is echoed back on a rejection; anything else is input.
    event_id = raw_id if isinstance(raw_id, str) and re.fullmatch(ID_PATTERN, raw_id) else None
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise EventRejected("invalid_envelope", _describe(exc), event_id=event_id) from None
    model = DATA_MODELS.get((env.type, env.version))
    if model is None:
        if env.type not in EVENT_TYPES:
            raise EventRejected("unknown_type", _unknown_type(env.type), event_id=env.id)
        known = ", ".join(str(v) for t, v in sorted(DATA_MODELS) if t == env.type)
        # The version is not echoed: an int of 5,000 digits cannot even be formatted.
        raise EventRejected(
            "unknown_version",
            f"{env.type} has no such version (known: {known})",
            event_id=env.id,
        )
    if env.occurred_at > now + MAX_FUTURE_SKEW:
        raise EventRejected(
            "future_timestamp",
            "occurred_at is more than 5 minutes in the future",
            event_id=env.id,
        )
    if env.type in NEEDS_KNOWN_PATIENT and env.patient.id is None:
        raise EventRejected("missing_patient", f"{env.type} needs patient.id", event_id=env.id)
    if env.type == "patient.registered" and env.patient.id is None:
        raise EventRejected(
            "missing_patient", "patient.registered needs patient.id", event_id=env.id
        )
    try:
        data = model.model_validate(env.data)
    except ValidationError as exc:
        raise EventRejected("invalid_data", _describe(exc, "data."), event_id=env.id) from None
    return Event(
        id=env.id,
        type=env.type,
        version=env.version,
        occurred_at=env.occurred_at,
        patient_id=env.patient.id,
        anonymous_id=env.patient.anonymous_id,
        data=data,
    )


def event_from_stored(
    *,
    event_id: str,
    type_: str,
    version: int,
    occurred_at: datetime,
    patient_id: str | None,
    anonymous_id: str | None,
    data: dict[str, Any],
) -> Event:
    """Rebuild an Event from the log (already validated once when it came in)."""
    model = DATA_MODELS[(type_, version)]
    return Event(
        id=event_id,
        type=type_,
        version=version,
        occurred_at=occurred_at,
        patient_id=patient_id,
        anonymous_id=anonymous_id,
        data=model.model_validate(data, context=STORED),
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per (type, version): the envelope with `data` replaced by its model."""
    schemas: dict[str, dict[str, Any]] = {}
    envelope = Envelope.model_json_schema()
    for (type_, version), model in sorted(DATA_MODELS.items()):
        data_schema = model.model_json_schema()
        defs = {**envelope.get("$defs", {}), **data_schema.pop("$defs", {})}
        props = dict(envelope["properties"])
        props["type"] = {"const": type_, "type": "string"}
        props["version"] = {"const": version, "type": "integer"}
        props["data"] = data_schema
        schemas[f"{type_}.v{version}"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{type_} v{version}",
            "type": "object",
            "properties": props,
            "required": ["id", "type", "occurred_at", "patient", "data"],
            "additionalProperties": False,
            "$defs": defs,
        }
    return schemas
