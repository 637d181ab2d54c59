"""What comes back from SendGrid and Twilio, applied: message statuses, suppressions, consent,
inbound SMS (inbound.py), and engagement events into the event log (so they reach profiles,
scores and CRMs).

Each callback is applied once: its receipt id (sg_event_id, MessageSid:status) is stored in the
same transaction as its effects and as its engagement event, so a replayed or retried callback
changes nothing. Statuses only move forward (an `open` that arrives before `delivered` is kept,
and the late `delivered` fills in its time without moving the status back).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.consent import ConsentEntry
from telecrm.domain.events import Event, parse_event
from telecrm.domain.identity import InvalidIdentity, normalise_email, normalise_phone
from telecrm.ingest.intake import EventIntake, IntakeResult
from telecrm.messaging.planner import record_consent
from telecrm.messaging.provider_events import DeliveryReport, InboundSms
from telecrm.messaging.tables import (
    message_suppressions,
    messages,
    provider_receipts,
)
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import insert_ignoring_conflicts

RANK = {
    "queued": 0,
    "sent": 1,
    "delivered": 2,
    "bounced": 2,
    "dropped": 2,
    "failed": 2,
    "undelivered": 2,
    "opened": 3,
    "clicked": 4,
    "replied": 4,
}
STATUS_OF = {
    "delivered": "delivered",
    "dropped": "dropped",
    "bounced": "bounced",
    "opened": "opened",
    "clicked": "clicked",
    "failed": "failed",
    "undelivered": "undelivered",
    "read": "opened",
}
TIME_COLUMN = {
    "delivered": "delivered_us",
    "opened": "opened_us",
    "clicked": "clicked_us",
    "read": "opened_us",
}
EVENT_OF = {
    ("sendgrid", "delivered"): "email.delivered",
    ("sendgrid", "opened"): "email.opened",
    ("sendgrid", "clicked"): "email.clicked",
    ("sendgrid", "bounced"): "email.bounced",
    ("sendgrid", "unsubscribed"): "email.unsubscribed",
    ("sendgrid", "group_unsubscribed"): "email.unsubscribed",
    ("twilio", "delivered"): "sms.delivered",
    ("twilio", "failed"): "sms.failed",
    ("twilio", "undelivered"): "sms.failed",
}
INVALID_NUMBER_CODES = {"30005", "30006"}  # unknown handset, landline: texting it is pointless


@dataclass(slots=True)
class TrackReport:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    unknown_messages: int = 0
    machine_opens: int = 0
    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "unknown_messages": self.unknown_messages,
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    action: str  # opted_out | opted_in | help | revoked | survey_answer | reply | unknown_sender | duplicate
    reply: str | None = None  # text to answer with (TwiML), or None
    score: int | None = None


def engagement_event(
    event_id: str,
    type_: str,
    patient_key: str,
    at: datetime,
    message_id: str,
    template: str | None,
    now: datetime,
) -> Event:
    data: dict[str, Any] = {"message_id": message_id}
    if template:
        data["template"] = template
    return parse_event(
        {
            "id": event_id,
            "type": type_,
            "occurred_at": at.isoformat(),
            "patient": {"id": patient_key},
            "data": data,
        },
        now=max(now, at),
    )


def event_id_for(provider: str, receipt: str) -> str:
    return f"{provider}-" + hashlib.sha256(receipt.encode()).hexdigest()[:40]


class Tracker:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        index: Callable[[], BlindIndex],
        clock: Clock,
        intake: EventIntake,
        *,
        marketing_group: int | None = None,
        keyword_replies: str = "twilio",
        brand: str = "Telecrm Health",
        support: str = "support@example.com",
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._index = index
        self._clock = clock
        self._intake = intake
        self.marketing_group = marketing_group
        self.keyword_replies = keyword_replies
        self.brand, self.support = brand, support

    # -- delivery and engagement reports --------------------------------------------------------
    def apply_reports(self, reports: Sequence[DeliveryReport]) -> TrackReport:
        out = TrackReport(received=len(reports))
        if not reports:
            return out
        index = self._index()
        now = self._clock.now()
        now_us = to_micros(now)
        with self._engine.connect() as conn:
            seen = self._seen(conn, [(r.provider, r.receipt_id) for r in reports])
            by_id, by_provider = self._messages(conn, reports)
        fresh: list[tuple[DeliveryReport, Any]] = []
        batch_seen: set[tuple[str, str]] = set()
        for r in reports:
            key = (r.provider, r.receipt_id)
            if key in seen or key in batch_seen:
                out.duplicates += 1
                continue
            batch_seen.add(key)
            msg = by_id.get(r.message_id or "") or (
                by_provider.get(r.provider_id or "") if r.provider == "twilio" else None
            )
            if msg is None:
                out.unknown_messages += 1
            fresh.append((r, msg))
        evts: list[Event] = []
        for r, msg in fresh:
            out.kinds[r.kind] += 1
            if r.kind == "opened" and r.machine_open:
                out.machine_opens += 1
                continue
            type_ = EVENT_OF.get((r.provider, r.kind))
            if msg is not None and type_ is not None:
                evts.append(
                    engagement_event(
                        event_id_for(r.provider, r.receipt_id),
                        type_,
                        msg.patient_key,
                        r.at,
                        msg.message_id,
                        msg.template,
                        now,
                    )
                )

        def effects(conn: Connection, _: IntakeResult | None) -> None:
            insert_ignoring_conflicts(
                conn,
                provider_receipts,
                [
                    {"provider": r.provider, "receipt_id": r.receipt_id[:120], "at_us": now_us}
                    for r, _m in fresh
                ],
                ["provider", "receipt_id"],
            )
            for r, msg in fresh:
                self._apply_one(conn, index, r, msg, now_us)

        if evts:
            result = self._intake.accept(
                evts,
                source=reports[0].provider,
                actor=reports[0].provider,
                unknown_patients="skip",
                in_transaction=effects,
            )
            out.events = result.accepted
        elif fresh:
            with self._engine.begin() as conn:
                effects(conn, None)
        out.applied = len(fresh)
        return out

    def _seen(self, conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for provider in {p for p, _ in keys}:
            ids = sorted({i[:120] for p, i in keys if p == provider})
            for start in range(0, len(ids), 500):
                found.update(
                    (provider, rid)
                    for rid in conn.execute(
                        select(provider_receipts.c.receipt_id).where(
                            provider_receipts.c.provider == provider,
                            provider_receipts.c.receipt_id.in_(ids[start : start + 500]),
                        )
                    ).scalars()
                )
        return found

    def _messages(
        self, conn: Connection, reports: Sequence[DeliveryReport]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        ids = sorted({r.message_id for r in reports if r.message_id})
        sids = sorted({r.provider_id for r in reports if r.provider == "twilio" and r.provider_id})
        by_id: dict[str, Any] = {}
        by_provider: dict[str, Any] = {}
        for start in range(0, len(ids), 500):
            for row in conn.execute(
                select(messages).where(messages.c.message_id.in_(ids[start : start + 500]))
            ):
                by_id[row.message_id] = row
        for start in range(0, len(sids), 500):
            for row in conn.execute(
                select(messages).where(messages.c.provider_id.in_(sids[start : start + 500]))
            ):
                by_provider[row.provider_id] = row
        return by_id, by_provider

    def _apply_one(
        self, conn: Connection, index: BlindIndex, r: DeliveryReport, msg: Any, now_us: int
    ) -> None:
        at_us = to_micros(r.at)
        if msg is not None:
            values: dict[str, Any] = {}
            column = TIME_COLUMN.get(r.kind)
            if column and not (r.kind == "opened" and r.machine_open):
                values[column] = at_us
            status = STATUS_OF.get(r.kind)
            if r.kind == "opened" and r.machine_open:
                status = None
            current = conn.execute(
                select(messages.c.status).where(messages.c.message_id == msg.message_id)
            ).scalar_one()
            if status and RANK.get(status, 0) > RANK.get(current, -1):
                values["status"] = status
                if r.code:
                    values["code"] = r.code[:40]
            if values:
                conn.execute(
                    update(messages).where(messages.c.message_id == msg.message_id).values(**values)
                )
        suppress = self._suppression_reason(r)
        if suppress and r.address:
            bidx = _address_index(index, "email" if r.provider == "sendgrid" else "sms", r.address)
            if bidx:
                insert_ignoring_conflicts(
                    conn,
                    message_suppressions,
                    [
                        {
                            "channel": "email" if r.provider == "sendgrid" else "sms",
                            "address_bidx": bidx,
                            "reason": suppress,
                            "source": f"{r.provider}:{r.kind}",
                            "at_us": at_us,
                        }
                    ],
                    ["channel", "address_bidx"],
                )
        if msg is not None and r.provider == "sendgrid":
            entries = self._consent_from(r, at_us)
            record_consent(conn, msg.patient_key, entries)

    def _suppression_reason(self, r: DeliveryReport) -> str | None:
        if r.kind == "bounced" and (r.reason or "bounce") == "bounce":
            return "hard_bounce"  # type "blocked" is the receiving server's choice: not suppressed
        if r.kind == "spam_report":
            return "spam_report"
        if r.kind == "dropped" and (r.reason or "").lower().startswith("invalid"):
            return "invalid"
        if r.kind in ("failed", "undelivered") and (r.code or "") in INVALID_NUMBER_CODES:
            return "invalid"
        return None

    def _consent_from(self, r: DeliveryReport, at_us: int) -> list[ConsentEntry]:
        evidence = f"sendgrid:{r.kind}:{r.receipt_id}"[:160]
        if r.kind == "unsubscribed":  # the global unsubscribe: every email but security ones
            return [
                ConsentEntry("email", p, False, "sendgrid_unsubscribe", evidence, at_us)
                for p in ("transactional", "marketing")
            ]
        if r.kind in ("group_unsubscribed", "group_resubscribed"):
            purpose = (
                "marketing"
                if r.asm_group_id is not None and r.asm_group_id == self.marketing_group
                else "transactional"
            )
            granted = r.kind == "group_resubscribed"
            return [ConsentEntry("email", purpose, granted, "sendgrid_group", evidence, at_us)]
        return []

    def apply_inbound(self, sms: InboundSms) -> InboundOutcome:
        """An inbound SMS: keywords, revocations, survey answers, replies (inbound.py)."""
        from telecrm.messaging.inbound import InboundHandler

        return InboundHandler(self).apply(sms)


def _address_index(index: BlindIndex, channel: str, address: str) -> str | None:
    try:
        return (
            index.email(normalise_email(address))
            if channel == "email"
            else index.phone(normalise_phone(address))
        )
    except InvalidIdentity:
        return None
