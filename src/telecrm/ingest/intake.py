"""The intake: validate a batch, then store it all-or-nothing, exactly once, encrypted.

An event is acknowledged only after this transaction commits. Duplicate event ids are counted and
skipped (idempotent retries); a webhook-id seen before with the same body is a retry (nothing
changes), with another body it is a replay and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import NEEDS_KNOWN_PATIENT, Event, EventRejected, parse_event
from telecrm.ingest.errors import IntakeRejected
from telecrm.ingest.tables import (
    events,
    identity_links,
    known_patients,
    pending_patients,
    webhook_messages,
)
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import insert_ignoring_conflicts

IN_CHUNK = 500  # bound the size of IN (...) lists on both engines


@dataclass(frozen=True, slots=True)
class WebhookReceipt:
    webhook_id: str
    body_sha256: str


@dataclass(frozen=True, slots=True)
class IntakeResult:
    accepted: int
    duplicates: int
    replayed_message: bool = False
    # With unknown_patients="skip": (event id, reason, detail) of events left out.
    skipped: tuple[tuple[str, str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"accepted": self.accepted, "duplicates": self.duplicates}
        if self.replayed_message:
            body["note"] = "webhook-id already accepted with this body; nothing changed"
        return body


def validate_batch(raws: Sequence[Any], *, now: Any) -> list[Event]:
    """All events or none: a batch with any invalid event is refused whole, each error listed."""
    parsed: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        try:
            parsed.append(parse_event(raw, now=now))
        except EventRejected as exc:
            errors.append(
                {
                    "index": index,
                    "event_id": exc.event_id,
                    "reason": exc.reason,
                    "detail": exc.detail,
                }
            )
    if errors:
        first = errors[0]
        raise IntakeRejected(
            422,
            first["reason"] if len(errors) == 1 else "invalid_events",
            "Invalid event" if len(raws) == 1 else "Invalid events in batch",
            f"{len(errors)} of {len(raws)} event(s) are invalid; nothing was stored",
            errors,
        )
    return parsed


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


class EventIntake:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        clock: Clock,
        *,
        on_accepted: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock
        self._on_accepted = on_accepted

    def accept(
        self,
        batch: Sequence[Event],
        *,
        source: str,
        actor: str,
        webhook: WebhookReceipt | None = None,
        unknown_patients: str = "reject",
        in_transaction: Callable[[Connection, IntakeResult], None] | None = None,
    ) -> IntakeResult:
        """Store a validated batch in one transaction.

        unknown_patients: "reject" refuses the whole batch (HTTP); "skip" leaves those events out
        and reports them (bulk import). `in_transaction` runs inside the same transaction (the
        import's checkpoint), so progress and data commit together.
        """
        for attempt in range(3):
            try:
                with self._engine.begin() as conn:
                    result = self._store(
                        conn,
                        batch,
                        source=source,
                        actor=actor,
                        webhook=webhook,
                        skip_unknown=unknown_patients == "skip",
                    )
                    if in_transaction is not None:
                        in_transaction(conn, result)
                break
            except IntegrityError:
                # Another request stored one of these ids (or this webhook-id) a moment ago;
                # the next attempt sees its rows and counts them as duplicates.
                if attempt == 2:
                    raise
        if result.accepted and self._on_accepted is not None:
            self._on_accepted(result.accepted)
        return result

    def _store(
        self,
        conn: Connection,
        batch: Sequence[Event],
        *,
        source: str,
        actor: str,
        webhook: WebhookReceipt | None,
        skip_unknown: bool = False,
    ) -> IntakeResult:
        now_us = to_micros(self._clock.now())
        if webhook is not None:
            seen = conn.execute(
                select(webhook_messages.c.body_sha256).where(
                    webhook_messages.c.webhook_id == webhook.webhook_id
                )
            ).scalar_one_or_none()
            if seen is not None:
                if seen == webhook.body_sha256:
                    return IntakeResult(0, len(batch), replayed_message=True)
                raise IntakeRejected(
                    409,
                    "webhook_id_reused",
                    "Replayed webhook-id",
                    "this webhook-id was already accepted with a different body; "
                    "a new message needs a new webhook-id",
                )

        unique: dict[str, Event] = {}
        for e in batch:
            unique.setdefault(e.id, e)
        ids = list(unique)
        existing: set[str] = set()
        for part in _chunks(ids):
            existing.update(
                conn.execute(select(events.c.event_id).where(events.c.event_id.in_(part))).scalars()
            )
        fresh = [e for e in unique.values() if e.id not in existing]
        duplicates = len(batch) - len(fresh)

        skipped = self._check_known_patients(conn, fresh, skip=skip_unknown)
        if skipped:
            left_out = {event_id for event_id, _, _ in skipped}
            fresh = [e for e in fresh if e.id not in left_out]
        links = self._resolve_anonymous(conn, fresh)

        cipher = self._cipher()
        rows = []
        registrations: dict[str, int] = {}
        new_links: dict[str, str] = {}
        pending: dict[str, int] = {}
        fields: set[str] = set()
        for e in fresh:
            key = e.patient_key if e.patient_id else links.get(e.anonymous_id or "", e.patient_key)
            data = e.data_dict()
            fields.update(data)
            rows.append(
                {
                    "event_id": e.id,
                    "type": e.type,
                    "version": e.version,
                    "patient_key": key,
                    "patient_id": e.patient_id,
                    "anonymous_id": e.anonymous_id,
                    "occurred_us": to_micros(e.occurred_at),
                    "received_us": now_us,
                    "source": source,
                    "payload": cipher.encrypt(orjson.dumps(data), record_id=e.id, field="data"),
                }
            )
            pending.setdefault(key, 0)
            if e.type == "patient.registered" and e.patient_id:
                registrations.setdefault(e.patient_id, to_micros(e.occurred_at))
            if e.patient_id and e.anonymous_id and e.anonymous_id not in links:
                new_links.setdefault(e.anonymous_id, e.patient_id)

        if rows:
            conn.execute(events.insert(), rows)
        if registrations:
            insert_ignoring_conflicts(
                conn,
                known_patients,
                [{"patient_id": p, "registered_us": at} for p, at in registrations.items()],
                ["patient_id"],
            )
        if new_links:
            insert_ignoring_conflicts(
                conn,
                identity_links,
                [
                    {"anonymous_id": a, "patient_id": p, "linked_us": now_us}
                    for a, p in new_links.items()
                ],
                ["anonymous_id"],
            )
            # The visitor's earlier events now belong to the patient: refold the patient.
            for patient_id in new_links.values():
                pending.setdefault(patient_id, 0)
        if pending:
            insert_ignoring_conflicts(
                conn,
                pending_patients,
                [{"patient_key": k, "enqueued_us": now_us} for k in pending],
                ["patient_key"],
            )
        if webhook is not None:
            conn.execute(
                webhook_messages.insert(),
                {
                    "webhook_id": webhook.webhook_id,
                    "body_sha256": webhook.body_sha256,
                    "received_us": now_us,
                },
            )
        if rows:
            append_audit(
                conn,
                [
                    AuditEntry(
                        actor=actor,
                        action="write",
                        record_type="event",
                        record_ids=[e.id for e in fresh],
                        fields=sorted(fields),
                        purpose=f"intake:{source}",
                    )
                ],
                at_us=now_us,
            )
        return IntakeResult(len(rows), duplicates, skipped=tuple(skipped))

    def _check_known_patients(
        self, conn: Connection, fresh: Sequence[Event], *, skip: bool
    ) -> list[tuple[str, str, str]]:
        registered_here = {e.patient_id for e in fresh if e.type == "patient.registered"}
        wanted = sorted(
            {
                e.patient_id
                for e in fresh
                if e.type in NEEDS_KNOWN_PATIENT
                and e.patient_id
                and e.patient_id not in registered_here
            }
        )
        if not wanted:
            return []
        known: set[str] = set()
        for part in _chunks(wanted):
            known.update(
                conn.execute(
                    select(known_patients.c.patient_id).where(known_patients.c.patient_id.in_(part))
                ).scalars()
            )
        unknown = [p for p in wanted if p not in known]
        if unknown and skip:
            unknown_set = set(unknown)
            return [
                (e.id, "unknown_patient", f"patient {e.patient_id} was never registered")
                for e in fresh
                if e.patient_id in unknown_set and e.type in NEEDS_KNOWN_PATIENT
            ]
        if unknown:
            errors = [
                {
                    "index": i,
                    "event_id": e.id,
                    "reason": "unknown_patient",
                    "detail": f"patient {e.patient_id} was never registered",
                }
                for i, e in enumerate(fresh)
                if e.patient_id in unknown and e.type in NEEDS_KNOWN_PATIENT
            ]
            raise IntakeRejected(
                422,
                "unknown_patient",
                "Unknown patient",
                f"{len(unknown)} patient id(s) were never registered (send patient.registered "
                "first); nothing was stored",
                errors[:100],
            )
        return []

    def _resolve_anonymous(self, conn: Connection, fresh: Sequence[Event]) -> dict[str, str]:
        """anonymous id -> patient id, for visitors who already registered."""
        anon = sorted({e.anonymous_id for e in fresh if e.anonymous_id})
        links: dict[str, str] = {}
        for part in _chunks(anon):
            for a, p in conn.execute(
                select(identity_links.c.anonymous_id, identity_links.c.patient_id).where(
                    identity_links.c.anonymous_id.in_(part)
                )
            ):
                links[a] = p
        return {a: p for a, p in links.items()}
