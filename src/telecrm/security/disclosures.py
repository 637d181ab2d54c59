"""The accounting of disclosures (45 CFR 164.528): every time a patient's data left telecrm, from
every part that sends it, as one list a patient can be handed; and its six-year retention.

The sending parts write the `disclosures` table in the transaction that records the send: the CRM
sync (one row per record a CRM accepted), messaging (one per email or SMS a provider took) and
journey webhooks (one per delivered POST). This module reads it back in plain words: who received
what kind of information, when and why. Field names and data point titles only, never a value.

Every recorded disclosure is listed, including those to business associates for treatment,
payment and health care operations, which 164.528(a)(1) lets a covered entity leave out: a
patient who asks where their data went should see all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import Connection, and_, delete, select

from telecrm.domain.clock import from_micros, to_micros
from telecrm.domain.fields import FIELDS
from telecrm.journeys.tables import journey_webhooks
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.errors import SecurityError
from telecrm.settings import DISCLOSURE_RETENTION_MIN_DAYS
from telecrm.sync.tables import disclosures

# A patient may ask for the disclosures of the six years before the request (164.528(a)(1)).
ACCOUNTING_PERIOD_DAYS = DISCLOSURE_RETENTION_MIN_DAYS
PRUNE_AUDIT_IDS = 1000  # patient ids per audit entry when a prune touches many patients

SOURCE_SYNC, SOURCE_MESSAGING, SOURCE_JOURNEYS = "sync", "messaging", "journeys"
# Names the sending parts use that are not catalog fields.
EXTRA_TITLES = {"stage": "Lifecycle stage"}


class ComplianceError(SecurityError):
    """A compliance request telecrm refuses; the message says what to change."""


class InvalidSince(ComplianceError, ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"--since {reason}: give a date like 2025-01-31 or an ISO 8601 time")


class RetentionTooShort(ComplianceError, ValueError):
    def __init__(self, days: int) -> None:
        super().__init__(
            f"a retention of {days} days is shorter than the {DISCLOSURE_RETENTION_MIN_DAYS} "
            "days (six years) the accounting of disclosures must be kept (45 CFR 164.530(j))"
        )


@dataclass(frozen=True, slots=True)
class Recipient:
    name: str  # the organisation that received the data
    service: str  # what of theirs received it
    address: str | None  # where it was sent, when known


# The services telecrm can send to, by the destination name the sending part recorded. The
# address is the service's public API host (a mapping can point a CRM elsewhere: an EU data
# centre, a Salesforce My Domain); None where it depends on the customer's own account.
RECIPIENTS: dict[str, Recipient] = {
    "hubspot": Recipient("HubSpot, Inc.", "HubSpot CRM", "api.hubapi.com"),
    "salesforce": Recipient("Salesforce, Inc.", "Salesforce CRM", None),
    "dynamics": Recipient("Microsoft Corporation", "Dynamics 365 CRM", None),
    "pipedrive": Recipient("Pipedrive OÜ", "Pipedrive CRM", "api.pipedrive.com"),
    "sendgrid": Recipient("Twilio Inc.", "SendGrid email delivery", "api.sendgrid.com"),
    "twilio": Recipient("Twilio Inc.", "Twilio SMS delivery", "api.twilio.com"),
}
MESSAGE_KINDS = {
    "transactional": "about your care or your account",
    "marketing": "marketing, sent with your consent",
    "security": "account security",
}


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One disclosure in the words of 164.528(b)(2): date, recipient, what, why."""

    id: int
    at: datetime
    source: str  # the part that sent it: sync | messaging | journeys
    destination: str  # as the sending part recorded it
    recipient: str  # organisation and service, for a reader
    recipient_address: str | None
    object: str  # CRM object, message channel, or journey_webhook
    record_key: str
    fields: tuple[str, ...]  # catalog field names
    data_points: tuple[str, ...]  # their data point titles: the brief description
    phi: bool  # health information was among them
    purpose: str  # the brief statement of purpose
    purpose_code: str  # as the sending part recorded it

    @property
    def description(self) -> str:
        if self.data_points:
            return "; ".join(self.data_points)
        return f"Ids, statuses and dates of a {self.object.replace('_', ' ')} record linked to you"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "source": self.source,
            "destination": self.destination,
            "recipient": self.recipient,
            "recipient_address": self.recipient_address,
            "object": self.object,
            "record_key": self.record_key,
            "fields": list(self.fields),
            "data_points": list(self.data_points),
            "description": self.description,
            "phi": self.phi,
            "purpose": self.purpose,
            "purpose_code": self.purpose_code,
        }


def data_point_titles(fields: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The catalog's data point titles for these fields, once each, in catalog order."""
    order = {name: i for i, name in enumerate(FIELDS)}
    titles: dict[str, None] = {}
    for name in sorted(fields, key=lambda n: (order.get(n, len(order)), n)):
        f = FIELDS.get(name)
        titles[f.data_point.title if f else EXTRA_TITLES.get(name, name)] = None
    return tuple(titles)


def source_of(destination: str, obj: str) -> str:
    if obj == "journey_webhook" or destination.startswith("webhook:"):
        return SOURCE_JOURNEYS
    if obj in ("email", "sms") and destination in ("sendgrid", "twilio"):
        return SOURCE_MESSAGING
    return SOURCE_SYNC


def _words(name: str) -> str:
    return name.replace("_", " ").strip()


def purpose_statement(source: str, obj: str, code: str) -> str:
    """The recorded purpose code as a sentence a patient can read."""
    if source == SOURCE_SYNC:
        return "Keeping our customer relationship records up to date (health care operations)"
    if source == SOURCE_MESSAGING:
        kind, found, template = code.partition(" message ")
        what = "a text message" if obj == "sms" else "an email"
        if not found:
            return f"Delivering {what} to you"
        about = MESSAGE_KINDS.get(kind, _words(kind))
        return f"Delivering {what} to you: {_words(template)} ({about})"
    journey = code.removeprefix("journey ").strip()
    return f"Care program step ({_words(journey)}): notifying a system our organisation uses"


def _recipient(destination: str, url: str | None) -> tuple[str, str | None]:
    known = RECIPIENTS.get(destination)
    if known is not None:
        return f"{known.name} ({known.service})", known.address
    if destination.startswith("webhook:"):
        host = httpx.URL(url).host if url else destination.removeprefix("webhook:")
        return "Webhook receiver configured by our organisation", host or None
    return f"{destination} (a system our organisation sends to)", None


def disclosures_for(
    conn: Connection, patient_key: str, since: datetime | None = None
) -> list[Disclosure]:
    """Every recorded disclosure of one patient, from all the sending parts, oldest first."""
    hooks = journey_webhooks
    query = (
        select(disclosures, hooks.c.url)
        .select_from(
            disclosures.outerjoin(
                hooks,
                and_(
                    disclosures.c.object == "journey_webhook",
                    hooks.c.webhook_id == disclosures.c.record_key,
                ),
            )
        )
        .where(disclosures.c.patient_key == patient_key)
        .order_by(disclosures.c.at_us, disclosures.c.id)
    )
    if since is not None:
        query = query.where(disclosures.c.at_us >= to_micros(since))
    out = []
    for row in conn.execute(query):
        fields = tuple(orjson.loads(row.fields))
        source = source_of(row.destination, row.object)
        recipient, address = _recipient(row.destination, row.url)
        out.append(
            Disclosure(
                id=int(row.id),
                at=from_micros(row.at_us),
                source=source,
                destination=row.destination,
                recipient=recipient,
                recipient_address=address,
                object=row.object,
                record_key=row.record_key,
                fields=fields,
                data_points=data_point_titles(fields),
                phi=bool(row.phi),
                purpose=purpose_statement(source, row.object, row.purpose),
                purpose_code=row.purpose,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Accounting:
    """The accounting one patient is given: the period it covers and its disclosures."""

    organisation: str
    patient_id: str
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    disclosures: list[Disclosure]
    contact: tuple[str, ...] = ()  # how to reach the organisation: address, email, phone

    def to_json(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation,
            "patient_id": self.patient_id,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "generated_at": self.generated_at.isoformat(),
            "disclosures": [d.to_json() for d in self.disclosures],
            "contact": list(self.contact),
        }


def accounting_for(
    conn: Connection,
    patient_key: str,
    *,
    now: datetime,
    organisation: str,
    contact: tuple[str, ...] = (),
    since: datetime | None = None,
) -> Accounting:
    """The accounting for one patient: `since` (default six years ago) up to `now`."""
    start = since if since is not None else now - timedelta(days=ACCOUNTING_PERIOD_DAYS)
    found = [d for d in disclosures_for(conn, patient_key, start) if d.at <= now]
    return Accounting(organisation, patient_key, start, now, now, found, contact)


def audit_accounting_read(
    conn: Connection, patient_key: str, *, actor: str, reason: str, now_us: int
) -> None:
    """The compliance read of a patient's accounting, in the audit log with its reason."""
    append_audit(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="read",
                record_type="disclosures",
                record_ids=[patient_key],
                fields=[],
                purpose=reason,
            )
        ],
        at_us=now_us,
    )


def parse_since(text: str, *, now: datetime) -> datetime:
    """`--since`: a date (midnight UTC) or an ISO 8601 time (UTC when it names no zone)."""
    value = text.strip()
    if not value:
        raise InvalidSince("is empty")
    try:
        if len(value) == 10:
            at = datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        else:
            at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSince("is not a date or time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at > now:
        raise InvalidSince("is in the future")
    return at.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PruneReport:
    deleted: int
    patients: int
    cutoff: datetime


def prune_disclosures(
    conn: Connection, *, now_us: int, retention_days: int, actor: str
) -> PruneReport:
    """Deletes the disclosures older than the retention, audited; younger ones are never touched."""
    if retention_days < DISCLOSURE_RETENTION_MIN_DAYS:
        raise RetentionTooShort(retention_days)
    cutoff_us = now_us - retention_days * 86_400 * 1_000_000
    old = disclosures.c.at_us < cutoff_us
    patients = sorted(
        str(k) for k in conn.execute(select(disclosures.c.patient_key).where(old).distinct())
        .scalars()
    )  # fmt: skip
    deleted = conn.execute(delete(disclosures).where(old)).rowcount if patients else 0
    purpose = f"retention: disclosures older than {retention_days} days"
    chunks = [patients[i : i + PRUNE_AUDIT_IDS] for i in range(0, len(patients), PRUNE_AUDIT_IDS)]
    append_audit(
        conn,
        [
            AuditEntry(actor, "delete", "disclosures", ids, fields=[], purpose=purpose)
            for ids in chunks or [[]]
        ],
        at_us=now_us,
    )
    return PruneReport(int(deleted), len(patients), from_micros(cutoff_us))
