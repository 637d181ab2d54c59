"""The intake: validate a batch, then store it all-or-nothing, exactly once, encrypted.

An event is acknowledged only after the transaction holding it commits. Duplicate event ids are
counted and skipped (idempotent retries); a webhook-id seen before with the same body is a retry
(nothing changes), with another body it is a replay and is refused.

`store_group` writes many independent submissions (HTTP requests, import chunks) in one
transaction: each is checked against the database and against the submissions before it in the
group, and a refused one leaves no trace while the others are stored. The group commit writer
(`group_commit.py`) uses it to turn many concurrent requests into one SQLite transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Select, bindparam, select
from sqlalchemy.exc import IntegrityError

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import NEEDS_KNOWN_PATIENT, Event, EventRejected, parse_event
from telecrm.ingest.errors import IntakeRejected
from telecrm.ingest.tables import (
    event_facts,
    events,
    identity_links,
    known_patients,
    pending_patients,
    webhook_messages,
)
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import seal_payloads
from telecrm.store.upsert import insert_ignoring_conflicts, insert_rows_fast

IN_CHUNK = 500  # bound the size of IN (...) lists on both engines
ATTEMPTS = 3


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


# telecrm's own event types: journeys' steps and analytics runs write them through `store_in`.
RESERVED_PREFIXES = ("journey.", "analytics.")


class Storable(Protocol):
    """What the intake needs of an event: a parsed `Event`, or a bulk import's `ParsedEvent`."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def patient_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def patient_key(self) -> str: ...
    @property
    def occurred_us(self) -> int: ...
    def log_record(self) -> tuple[bytes, tuple[str, ...], str | None]: ...


@dataclass(slots=True)
class Submission:
    """One request's (or one import chunk's) validated events, on their way to the database."""

    batch: Sequence[Storable]
    source: str
    actor: str
    webhook: WebhookReceipt | None = None
    skip_unknown: bool = False
    outcome: IntakeResult | IntakeRejected | None = field(default=None)


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
            f"{first['detail']}; nothing was stored"
            if len(raws) == 1
            else f"{len(errors)} of {len(raws)} events are invalid; nothing was stored",
            errors,
        )
    return parsed


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


@lru_cache(maxsize=16)
def _in_query(*columns: Any) -> Select[Any]:
    """`SELECT columns WHERE first IN (:values)`, built once per shape (expanding parameter)."""
    return select(*columns).where(columns[0].in_(bindparam("values", expanding=True)))


def _existing(conn: Connection, column: Any, values: Iterable[str]) -> set[str]:
    wanted = sorted(set(values))
    found: set[str] = set()
    for part in _chunks(wanted):
        found.update(conn.execute(_in_query(column), {"values": list(part)}).scalars())
    return found


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
        batch: Sequence[Storable],
        *,
        source: str,
        actor: str,
        webhook: WebhookReceipt | None = None,
        unknown_patients: str = "reject",
        in_transaction: Callable[[Connection, IntakeResult], None] | None = None,
    ) -> IntakeResult:
        """Store one validated batch in its own transaction; raise IntakeRejected if refused.

        unknown_patients: "reject" refuses the whole batch (HTTP); "skip" leaves those events out
        and reports them (bulk import). `in_transaction` runs inside the same transaction (the
        import's checkpoint), so progress and data commit together.
        """
        item = Submission(batch, source, actor, webhook, skip_unknown=unknown_patients == "skip")
        self.store_group([item], in_transaction=in_transaction)
        if isinstance(item.outcome, IntakeRejected):
            raise item.outcome
        assert item.outcome is not None
        return item.outcome

    def store_in(
        self, conn: Connection, batch: Sequence[Storable], *, source: str, actor: str
    ) -> IntakeResult:
        """Store `batch` in the caller's transaction (the journey runner's emit step), with the
        same checks and idempotency as `accept`; raises IntakeRejected if refused."""
        item = Submission(batch, source, actor)
        self._store(conn, [item], self._cipher())
        if isinstance(item.outcome, IntakeRejected):
            raise item.outcome
        assert item.outcome is not None
        return item.outcome

    def store_group(
        self,
        items: Sequence[Submission],
        *,
        in_transaction: Callable[[Connection, IntakeResult], None] | None = None,
    ) -> None:
        """Store every submission that passes its checks, in one transaction; set each outcome."""
        # journey.* and analytics.* events are telecrm's own (written through store_in): a
        # platform posting one would forge a journey's CRM task or a patient's scores.
        for item in items:
            reserved = sorted({e.type for e in item.batch if e.type.startswith(RESERVED_PREFIXES)})
            if reserved:
                item.outcome = IntakeRejected(
                    422,
                    "reserved_event_type",
                    "Reserved event type",
                    f"{', '.join(reserved)}: journey.* and analytics.* events are written by "
                    "telecrm itself and are not accepted from outside",
                )
        items = [i for i in items if i.outcome is None]
        if not items:
            return
        # Keys first: opening the keyring may need its own transaction, and on SQLite a second
        # writer inside ours would wait for us forever.
        cipher = self._cipher()
        for attempt in range(ATTEMPTS):
            try:
                with self._engine.begin() as conn:
                    self._store(conn, items, cipher)
                    if in_transaction is not None:
                        first = items[0].outcome
                        if isinstance(first, IntakeResult):
                            in_transaction(conn, first)
                break
            except IntegrityError:
                # Another process stored one of these ids (or webhook-ids) a moment ago; the
                # next attempt sees its rows and counts them as duplicates.
                for item in items:
                    item.outcome = None
                if attempt == ATTEMPTS - 1:
                    raise
        accepted = sum(i.outcome.accepted for i in items if isinstance(i.outcome, IntakeResult))
        if accepted and self._on_accepted is not None:
            self._on_accepted(accepted)

    def _store(self, conn: Connection, items: Sequence[Submission], cipher: FieldCipher) -> None:
        now_us = to_micros(self._clock.now())
        hooks = [i.webhook.webhook_id for i in items if i.webhook is not None]
        seen_hooks = _lookup(
            conn, webhook_messages.c.webhook_id, webhook_messages.c.body_sha256, hooks
        )
        seen_events = _existing(conn, events.c.event_id, (e.id for i in items for e in i.batch))
        record_of = {e.id: e.log_record() for i in items for e in i.batch}
        fact_of = {event_id: record[2] for event_id, record in record_of.items()}
        seen_facts = _existing(conn, event_facts.c.fact_key, (f for f in fact_of.values() if f))
        known = _existing(
            conn,
            known_patients.c.patient_id,
            (
                e.patient_id
                for i in items
                for e in i.batch
                if e.patient_id and e.type in NEEDS_KNOWN_PATIENT
            ),
        )
        # anonymous id -> patient id, for visitors who already registered
        anon = _lookup(
            conn,
            identity_links.c.anonymous_id,
            identity_links.c.patient_id,
            (e.anonymous_id for i in items for e in i.batch if e.anonymous_id),
        )

        rows: list[dict[str, Any]] = []
        registrations: dict[str, int] = {}
        new_links: dict[str, str] = {}
        pending: set[str] = set()
        new_hooks: list[dict[str, Any]] = []
        new_facts: list[dict[str, Any]] = []
        audit: list[AuditEntry] = []
        for item in items:
            if item.webhook is not None:
                previous = seen_hooks.get(item.webhook.webhook_id)
                if previous is not None:
                    if previous == item.webhook.body_sha256:
                        item.outcome = IntakeResult(0, len(item.batch), replayed_message=True)
                    else:
                        item.outcome = IntakeRejected(
                            409,
                            "webhook_id_reused",
                            "Replayed webhook-id",
                            "this webhook-id was already accepted with a different body; "
                            "a new message needs a new webhook-id",
                        )
                    continue
            fresh: list[Storable] = []
            ids_here: set[str] = set()
            facts_here: set[str] = set()
            for e in item.batch:
                fact = fact_of[e.id]
                if e.id in seen_events or e.id in ids_here:
                    continue
                if fact is not None and (fact in seen_facts or fact in facts_here):
                    continue  # the same fact under another event id
                ids_here.add(e.id)
                if fact is not None:
                    facts_here.add(fact)
                fresh.append(e)
            registered_here = {e.patient_id for e in fresh if e.type == "patient.registered"}
            unknown = [
                e
                for e in fresh
                if e.type in NEEDS_KNOWN_PATIENT
                and e.patient_id not in known
                and e.patient_id not in registrations
                and e.patient_id not in registered_here
            ]
            skipped: tuple[tuple[str, str, str], ...] = ()
            if unknown:
                if not item.skip_unknown:
                    item.outcome = _unknown_patients(fresh, unknown)
                    continue
                skipped = tuple(
                    (e.id, "unknown_patient", f"patient {e.patient_id} was never registered")
                    for e in unknown
                )
                left_out = {e.id for e in unknown}
                fresh = [e for e in fresh if e.id not in left_out]
            fields: set[str] = set()
            for e in fresh:
                key = (
                    e.patient_key if e.patient_id else anon.get(e.anonymous_id or "", e.patient_key)
                )
                payload, keys, _ = record_of[e.id]
                fields.update(keys)
                rows.append(
                    {
                        "event_id": e.id,
                        "type": e.type,
                        "version": e.version,
                        "patient_key": key,
                        "patient_id": e.patient_id,
                        "anonymous_id": e.anonymous_id,
                        "occurred_us": e.occurred_us,
                        "received_us": now_us,
                        "source": item.source,
                        "payload": payload,  # sealed below, per patient (seal_payloads)
                    }
                )
                pending.add(key)
                seen_events.add(e.id)
                fact = fact_of[e.id]
                if fact is not None:
                    seen_facts.add(fact)
                    new_facts.append({"fact_key": fact, "event_id": e.id})
                if e.type == "patient.registered" and e.patient_id:
                    registrations.setdefault(e.patient_id, e.occurred_us)
                if e.patient_id and e.anonymous_id and e.anonymous_id not in anon:
                    new_links.setdefault(e.anonymous_id, e.patient_id)
                    anon[e.anonymous_id] = e.patient_id
                    # The visitor's earlier events now belong to the patient: refold the patient.
                    pending.add(e.patient_id)
            if item.webhook is not None:
                seen_hooks[item.webhook.webhook_id] = item.webhook.body_sha256
                new_hooks.append(
                    {
                        "webhook_id": item.webhook.webhook_id,
                        "body_sha256": item.webhook.body_sha256,
                        "received_us": now_us,
                    }
                )
            if fresh:
                audit.append(
                    AuditEntry(
                        actor=item.actor,
                        action="write",
                        record_type="event",
                        record_ids=[e.id for e in fresh],
                        fields=sorted(fields),
                        purpose=f"intake:{item.source}",
                    )
                )
            item.outcome = IntakeResult(
                len(fresh), len(item.batch) - len(fresh) - len(skipped), skipped=skipped
            )

        if rows:
            seal_payloads(conn, cipher, rows, now_us=now_us)
            insert_rows_fast(conn, events, rows)
        # A plain insert: a concurrent writer storing the same fact raises IntegrityError, and
        # the retry in store_group then counts this one as the duplicate.
        insert_rows_fast(conn, event_facts, new_facts)
        insert_ignoring_conflicts(
            conn,
            known_patients,
            [{"patient_id": p, "registered_us": at} for p, at in registrations.items()],
            ["patient_id"],
        )
        insert_ignoring_conflicts(
            conn,
            identity_links,
            [
                {"anonymous_id": a, "patient_id": p, "linked_us": now_us}
                for a, p in new_links.items()
            ],
            ["anonymous_id"],
        )
        insert_ignoring_conflicts(
            conn,
            pending_patients,
            [{"patient_key": k, "enqueued_us": now_us} for k in sorted(pending)],
            ["patient_key"],
        )
        if new_hooks:
            conn.execute(webhook_messages.insert(), new_hooks)
        if audit:
            append_audit(conn, audit, at_us=now_us)


def prune_webhook_receipts(engine: Engine, *, older_than_us: int) -> int:
    """Forget webhook-ids received before `older_than_us`.

    They exist to tell a retry (same body) from a replay (other body). Both are only plausible
    within a sender's retry horizon; after it, an event id seen again is still a duplicate.
    """
    with engine.begin() as conn:
        result = conn.execute(
            webhook_messages.delete().where(webhook_messages.c.received_us < older_than_us)
        )
    return int(result.rowcount or 0)


def _lookup(conn: Connection, key: Any, value: Any, keys: Iterable[str]) -> dict[str, str]:
    """`key -> value` for those of `keys` that have a row."""
    found: dict[str, str] = {}
    for part in _chunks(sorted(set(keys))):
        found.update(
            (row[0], row[1]) for row in conn.execute(_in_query(key, value), {"values": list(part)})
        )
    return found


def _unknown_patients(fresh: Sequence[Storable], unknown: Sequence[Storable]) -> IntakeRejected:
    index = {e.id: i for i, e in enumerate(fresh)}
    patients = sorted({e.patient_id for e in unknown if e.patient_id})
    return IntakeRejected(
        422,
        "unknown_patient",
        "Unknown patient",
        f"{len(patients)} patient id(s) were never registered (send patient.registered "
        "first); nothing was stored",
        [
            {
                "index": index[e.id],
                "event_id": e.id,
                "reason": "unknown_patient",
                "detail": f"patient {e.patient_id} was never registered",
            }
            for e in unknown[:100]
        ],
    )
