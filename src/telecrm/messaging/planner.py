"""Turns triggers into messages: which templates a trigger sends (configuration), and for each one
the send rules' decision, written to the outbox with its explain trail.

Planning is exactly-once: a message's id is a hash of (event, template, channel), so a trigger
planned twice (a crash after planning, before the trigger row was deleted) yields the same row.
Nothing is rendered here and no address is stored: the dispatcher renders at send time.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, select

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.consent import ConsentBook, ConsentEntry
from telecrm.domain.identity import InvalidIdentity, normalise_email, normalise_phone
from telecrm.ingest.tables import events
from telecrm.messaging.config import MessagingConfig
from telecrm.messaging.context import build_event_variables
from telecrm.messaging.rules import Recipient, Sent, decide
from telecrm.messaging.tables import (
    consent_ledger,
    message_suppressions,
    message_triggers,
    messages,
)
from telecrm.messaging.templates import TemplateCatalog
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts
from telecrm.store.upsert import insert_ignoring_conflicts

IN_CHUNK = 500
HISTORY_US = 8 * 86_400_000_000
# Statuses that did not go out and never will: they do not count against caps or dedupe.
NOT_COUNTED = ("suppressed", "expired", "rejected", "opted_out")


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """One message someone wants sent: a trigger's default, a journey step, or the API."""

    patient_key: str
    template: str
    channel: str
    source: str  # the trigger, "api", or "journey:<name>"
    dedupe_key: str  # unique per intended message: the same key is planned once
    event_id: str | None = None
    event_type: str | None = None
    event_data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PlanReport:
    triggers: int = 0
    planned: int = 0
    queued: int = 0
    deferred: int = 0
    suppressed: int = 0
    already_planned: int = 0
    stale_triggers: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    message_ids: list[str] = field(default_factory=list)

    def add(self, other: PlanReport) -> None:
        for name in (
            "triggers", "planned", "queued", "deferred", "suppressed", "already_planned",
            "stale_triggers",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.message_ids.extend(other.message_ids)


def message_id_for(dedupe_key: str) -> str:
    return "msg_" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:24]


def address_bidx(
    index: BlindIndex, channel: str, values: dict[str, Any]
) -> tuple[str | None, bool]:
    """(blind index of the patient's address on `channel`, whether the address is valid)."""
    raw = values.get("email" if channel == "email" else "phone")
    if not isinstance(raw, str) or not raw:
        return None, False
    try:
        if channel == "email":
            return index.email(normalise_email(raw)), True
        return index.phone(normalise_phone(raw)), True
    except InvalidIdentity:
        return "", False


def consent_books(conn: Connection, patient_keys: Sequence[str]) -> dict[str, list[ConsentEntry]]:
    out: dict[str, list[ConsentEntry]] = {k: [] for k in patient_keys}
    for start in range(0, len(patient_keys), IN_CHUNK):
        for r in conn.execute(
            select(consent_ledger).where(
                consent_ledger.c.patient_key.in_(patient_keys[start : start + IN_CHUNK])
            )
        ):
            out[r.patient_key].append(
                ConsentEntry(r.channel, r.purpose, r.granted, r.source, r.evidence, r.at_us)
            )
    return out


def record_consent(conn: Connection, patient_key: str, entries: Iterable[ConsentEntry]) -> None:
    rows = [
        {
            "patient_key": patient_key,
            "channel": e.channel,
            "purpose": e.purpose,
            "granted": e.granted,
            "source": e.source,
            "evidence": e.evidence[:160],
            "at_us": e.at_us,
        }
        for e in entries
    ]
    if rows:
        conn.execute(consent_ledger.insert(), rows)


def load_event_data(
    conn: Connection, cipher: FieldCipher, event_ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """{event id: (type, decrypted data)} for the events that exist and are not shredded."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    ids = sorted(set(event_ids))
    for start in range(0, len(ids), IN_CHUNK):
        for r in conn.execute(
            with_salts(select(events.c.event_id, events.c.type, events.c.payload)).where(
                events.c.event_id.in_(ids[start : start + IN_CHUNK])
            )
        ):
            data = open_payload(cipher, r)
            if data is not None:  # None: the patient was erased, nothing to send from it
                out[r.event_id] = (r.type, data)
    return out


class MessagePlanner:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        index: Callable[[], BlindIndex],
        clock: Clock,
        config: MessagingConfig,
        catalog: TemplateCatalog,
        *,
        max_trigger_age_hours: float = 48.0,
    ) -> None:
        self._engine = engine
        self.max_trigger_age_us = int(max_trigger_age_hours * 3_600_000_000)
        self._cipher = cipher
        self._index = index
        self._clock = clock
        self.config = config
        self.catalog = catalog

    # -- triggers -------------------------------------------------------------------------------
    def run_once(self, limit: int = 500) -> PlanReport:
        """Plan up to `limit` waiting triggers in one transaction."""
        cipher, index = self._cipher(), self._index()  # keys before the transaction
        with self._engine.begin() as conn:
            query = select(message_triggers).order_by(message_triggers.c.id).limit(limit)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(query))
            if not rows:
                return PlanReport()
            # History is not news: an imported or late event older than this sends nothing.
            oldest = to_micros(self._clock.now()) - self.max_trigger_age_us
            stale = [r for r in rows if r.occurred_us < oldest]
            fresh = [r for r in rows if r.occurred_us >= oldest]
            data = self._event_data(conn, cipher, [r.event_id for r in fresh])
            requests: list[PlanRequest] = []
            for r in fresh:
                event_type, event_data = data.get(r.event_id, (r.trigger, {}))
                for send in self.config.sends_for(r.trigger, event_data):
                    requests.append(
                        PlanRequest(
                            patient_key=r.patient_key,
                            template=send.template,
                            channel=send.channel,
                            source=r.trigger,
                            dedupe_key=f"{r.event_id}:{send.template}:{send.channel}",
                            event_id=r.event_id,
                            event_type=event_type,
                            event_data=event_data,
                        )
                    )
            report = self.plan(conn, requests, cipher, index)
            report.triggers = len(rows)
            report.stale_triggers = len(stale)
            conn.execute(
                delete(message_triggers).where(message_triggers.c.id.in_([r.id for r in rows]))
            )
        return report

    def drain(self, limit: int = 500) -> PlanReport:
        total = PlanReport()
        while True:
            report = self.run_once(limit)
            if not report.triggers:
                return total
            total.add(report)

    def _event_data(
        self, conn: Connection, cipher: FieldCipher, event_ids: Sequence[str]
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        return load_event_data(conn, cipher, event_ids)

    # -- the rules --------------------------------------------------------------------------------
    def plan(
        self,
        conn: Connection,
        requests: Sequence[PlanRequest],
        cipher: FieldCipher,
        index: BlindIndex,
        *,
        now: datetime | None = None,
    ) -> PlanReport:
        """Decide every request and write the outbox rows, in the caller's transaction."""
        report = PlanReport()
        if not requests:
            return report
        now = now or self._clock.now()
        now_us = to_micros(now)
        keys = sorted({r.patient_key for r in requests})
        values: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), IN_CHUNK):
            for row in conn.execute(
                select(profiles).where(profiles.c.patient_key.in_(keys[start : start + IN_CHUNK]))
            ):
                stored = decode(row, cipher)
                if not stored.profile.deleted:
                    values[row.patient_key] = stored.profile.values
        ledger = consent_books(conn, keys)
        history = self._history(conn, keys, now_us)
        suppressed = self._suppressions(conn, index, values)

        rows: list[dict[str, Any]] = []
        sealed_read: set[str] = set()
        for req in requests:
            info = self.catalog.get(req.template, req.channel)
            v = values.get(req.patient_key, {})
            book_entries = ledger.setdefault(req.patient_key, [])
            changes = ConsentBook(book_entries).profile_changes(v, now_us)
            if changes:
                record_consent(conn, req.patient_key, changes)
                book_entries.extend(changes)
            bidx, valid = address_bidx(index, req.channel, v)
            sealed_read.update(n for n in ("email", "phone", "state", "language") if n in v)
            recipient = Recipient(
                address_present=bidx is not None,
                address_valid=valid,
                suppressed=suppressed.get((req.channel, bidx or "")),
                consent=ConsentBook(book_entries),
                timezone=v.get("timezone"),
                state=v.get("state"),
                quiet_start=v.get("quiet_hours_start"),
                quiet_end=v.get("quiet_hours_end"),
            )
            past = history.setdefault((req.patient_key, req.channel), [])
            decision = decide(
                channel=req.channel,
                purpose=info.purpose,
                template=req.template,
                recipient=recipient,
                history=past,
                config=self.config,
                now=now,
            )
            message_id = message_id_for(req.dedupe_key)
            variables = build_event_variables(req.event_type or "", req.event_data)
            status = "suppressed" if decision.action == "suppress" else "queued"
            rows.append(
                {
                    "message_id": message_id,
                    "patient_key": req.patient_key,
                    "channel": req.channel,
                    "template": req.template,
                    "purpose": info.purpose,
                    "language": self.catalog.pick_language(
                        req.template,
                        req.channel,
                        v.get("language"),
                    ),
                    "source": req.source,
                    "event_id": req.event_id,
                    "dedupe_key": req.dedupe_key,
                    "status": status,
                    "reason": decision.reason,
                    "trail": orjson.dumps(decision.trail_json()).decode(),
                    "context_sealed": cipher.encrypt_json(
                        variables, record_id=message_id, field="context"
                    )
                    if variables
                    else None,
                    "created_us": now_us,
                    "due_us": to_micros(decision.due),
                    "deferred": decision.action == "defer",
                    "local_day": decision.local_day,
                }
            )
            if status == "queued":
                past.append(Sent(req.template, info.purpose, to_micros(decision.due)))
        ids = [r["message_id"] for r in rows]
        existing: set[str] = set()
        for start in range(0, len(ids), IN_CHUNK):
            existing.update(
                conn.execute(
                    select(messages.c.message_id).where(
                        messages.c.message_id.in_(ids[start : start + IN_CHUNK])
                    )
                ).scalars()
            )
        fresh = [r for r in rows if r["message_id"] not in existing]
        insert_ignoring_conflicts(conn, messages, fresh, ["message_id"])
        for r in rows:
            if r["message_id"] in existing:
                report.already_planned += 1
                continue
            report.planned += 1
            report.message_ids.append(r["message_id"])
            if r["status"] == "suppressed":
                report.suppressed += 1
                report.reasons[r["reason"]] += 1
            elif r["deferred"]:
                report.deferred += 1
                report.reasons["quiet_hours"] += 1
            else:
                report.queued += 1
        if sealed_read:
            append_audit(
                conn,
                [
                    AuditEntry(
                        actor="messaging",
                        action="read",
                        record_type="profile",
                        record_ids=keys,
                        fields=sorted(sealed_read),
                        purpose="message planning (send rules)",
                    )
                ],
                at_us=now_us,
            )
        return report

    def _history(
        self, conn: Connection, keys: Sequence[str], now_us: int
    ) -> dict[tuple[str, str], list[Sent]]:
        out: dict[tuple[str, str], list[Sent]] = {}
        for start in range(0, len(keys), IN_CHUNK):
            for r in conn.execute(
                select(
                    messages.c.patient_key,
                    messages.c.channel,
                    messages.c.template,
                    messages.c.purpose,
                    messages.c.due_us,
                ).where(
                    messages.c.patient_key.in_(keys[start : start + IN_CHUNK]),
                    messages.c.due_us > now_us - HISTORY_US,
                    messages.c.status.not_in(NOT_COUNTED),
                )
            ):
                out.setdefault((r.patient_key, r.channel), []).append(
                    Sent(r.template, r.purpose, r.due_us)
                )
        return out

    def _suppressions(
        self, conn: Connection, index: BlindIndex, values: dict[str, dict[str, Any]]
    ) -> dict[tuple[str, str], str]:
        wanted: set[tuple[str, str]] = set()
        for v in values.values():
            for channel in ("email", "sms"):
                bidx, _ = address_bidx(index, channel, v)
                if bidx:
                    wanted.add((channel, bidx))
        out: dict[tuple[str, str], str] = {}
        bidxs = sorted({b for _, b in wanted})
        for start in range(0, len(bidxs), IN_CHUNK):
            for r in conn.execute(
                select(message_suppressions).where(
                    message_suppressions.c.address_bidx.in_(bidxs[start : start + IN_CHUNK])
                )
            ):
                out[(r.channel, r.address_bidx)] = r.reason
        return out
