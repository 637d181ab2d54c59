"""The projection worker: folds new events into profiles, per patient, in occurred_at order.

It claims patients from `pending_patients` (FOR UPDATE SKIP LOCKED on PostgreSQL, so any number
of workers share the queue), applies their new events incrementally when they come after what the
profile already holds, and refolds the patient's whole history when an event arrives late or a
visitor's anonymous history is linked. Either way the result equals `fold` over the whole log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from telecrm.domain.clock import Clock, from_micros, to_micros
from telecrm.domain.events import TRIGGERS
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Thresholds, Transition
from telecrm.domain.messages import PatientActivity, ProfileChanged, StageChanged, TriggerFired
from telecrm.domain.profile import SEALED_READS, Profile, advance_time, fold, step
from telecrm.ingest.tables import events, identity_links, pending_patients
from telecrm.profiles.codec import (
    ActivityFolded,
    ProfilesWritten,
    StoredProfile,
    TriggersFired,
    decode,
    encode,
    transition_rows,
    unseal,
)
from telecrm.profiles.event_log import decode_event, merge_ordered, rows_for
from telecrm.profiles.tables import profiles, stage_transitions
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import insert_ignoring_conflicts, upsert

PROFILE_UPDATE_COLUMNS = (
    "patient_id",
    "stage",
    "stage_since_us",
    "max_rank",
    "email_bidx",
    "phone_bidx",
    "attributes",
    "sealed",
    "last_occurred_us",
    "last_seq",
    "as_of_us",
    "next_check_us",
    "events_applied",
    "deleted",
    "merged_into",
    "updated_us",
)


@dataclass
class BatchReport:
    patients: int = 0
    events: int = 0
    refolds: int = 0
    transitions: int = 0
    messages: list[object] = field(default_factory=list)
    activity: list[PatientActivity] = field(default_factory=list)


def _claim(conn: Connection, limit: int) -> list[str]:
    query = (
        select(pending_patients.c.patient_key).order_by(pending_patients.c.enqueued_us).limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query).scalars())


class ProfileWorker:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        index: Callable[[], BlindIndex],
        clock: Clock,
        thresholds: Thresholds,
        *,
        publish: Callable[[object], None] | None = None,
        actor: str = "worker",
        on_written: ProfilesWritten | None = None,
        on_triggers: TriggersFired | None = None,
        on_activity: ActivityFolded | None = None,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._index = index
        self._clock = clock
        self._thresholds = thresholds
        self._publish = publish
        self._actor = actor
        self._on_written = on_written
        self._on_triggers = on_triggers
        self._on_activity = on_activity

    def run_once(self, limit: int = 500) -> BatchReport:
        """Process up to `limit` pending patients in one transaction."""
        keys_ready = self._cipher(), self._index()  # before the transaction: see intake.store_group
        with self._engine.begin() as conn:
            keys = _claim(conn, limit)
            report = self._process(conn, keys, *keys_ready) if keys else BatchReport()
        if self._publish is not None:
            for message in report.messages:
                self._publish(message)
        return report

    def drain(
        self, limit: int = 500, on_batch: Callable[[BatchReport], None] | None = None
    ) -> BatchReport:
        """Run until the queue is empty (new events arriving meanwhile are processed too)."""
        total = BatchReport()
        while True:
            report = self.run_once(limit)
            if not report.patients:
                return total
            total.patients += report.patients
            total.events += report.events
            total.refolds += report.refolds
            total.transitions += report.transitions
            if on_batch is not None:
                on_batch(report)

    def _merged_row(self, anon_key: str, patient_id: str, now_us: int) -> dict[str, Any]:
        """An anonymous visitor's profile, emptied: its history now lives in the patient's
        (the caller clears the visitor's stage history)."""
        merged = StoredProfile(Profile(anon_key), merged_into=patient_id)
        row = encode(merged, cipher=None, index=None, thresholds=self._thresholds, now_us=now_us)
        row.update(sealed="{}", email_bidx=None, phone_bidx=None)
        return row

    def _process(
        self, conn: Connection, keys: list[str], cipher: FieldCipher, index: BlindIndex
    ) -> BatchReport:
        now = self._clock.now()
        now_us = to_micros(now)
        report = BatchReport(patients=len(keys))

        patient_ids = [k for k in keys if not k.startswith("anon:")]
        anon_of: dict[str, list[str]] = {k: [] for k in patient_ids}
        linked_patient: dict[str, str] = {}
        for start in range(0, len(patient_ids), 500):
            part = patient_ids[start : start + 500]
            for anon, patient in conn.execute(
                select(identity_links.c.anonymous_id, identity_links.c.patient_id).where(
                    identity_links.c.patient_id.in_(part)
                )
            ):
                anon_of[patient].append(anon)
        anon_keys = [k for k in keys if k.startswith("anon:")]
        for start in range(0, len(anon_keys), 500):
            part = [k[5:] for k in anon_keys[start : start + 500]]
            for anon, patient in conn.execute(
                select(identity_links.c.anonymous_id, identity_links.c.patient_id).where(
                    identity_links.c.anonymous_id.in_(part)
                )
            ):
                linked_patient[f"anon:{anon}"] = patient

        all_anon_keys = [f"anon:{a}" for anons in anon_of.values() for a in sorted(anons)]
        new_rows = rows_for(
            conn, keys + [k for k in all_anon_keys if k not in keys], unprocessed_only=True
        )

        claimed = set(keys)

        def _sealed_needs(key: str) -> frozenset[str] | None:
            """The encrypted fields this key's fold reads, or None for all of them. Only a
            patient whose new events are all score or engagement events (and whose visitors
            have none) is folded without decrypting the rest (`unseal` if it must refold)."""
            fresh = new_rows.get(key) if key in claimed else None
            if not fresh or key in linked_patient:
                return None if key in claimed else frozenset()  # a linked visitor's row: none
            if any(new_rows.get(f"anon:{a}") for a in anon_of.get(key, ())):
                return None
            needs: set[str] = set()
            for r in fresh:
                reads = SEALED_READS.get(r.type)
                if reads is None:
                    return None
                needs |= reads
            return frozenset(needs)

        stored: dict[str, StoredProfile] = {}

        def load(wanted_keys: list[str]) -> None:
            for start in range(0, len(wanted_keys), 500):
                profile_query = select(profiles).where(
                    profiles.c.patient_key.in_(wanted_keys[start : start + 500])
                )
                if conn.dialect.name == "postgresql":
                    profile_query = profile_query.with_for_update()
                stored.update(
                    (row.patient_key, decode(row, cipher, only=_sealed_needs(row.patient_key)))
                    for row in conn.execute(profile_query)
                )

        load(keys)
        # A linked visitor's own row matters to a patient with no profile yet (was anything
        # folded before the link?) and to a new link (the row is emptied, so it is locked
        # first); a patient whose visitors were linked before never reads it (score runs).
        load(
            [
                k
                for patient, anons in anon_of.items()
                if patient not in stored or sorted(stored[patient].linked_anon) != sorted(anons)
                for k in (f"anon:{a}" for a in sorted(anons))
                if k not in claimed
            ]
        )

        rows_out: dict[str, dict[str, Any]] = {}
        cleared: set[str] = set()  # patient keys whose stage history is rewritten whole
        requeue: set[str] = set()
        new_transitions: list[dict[str, Any]] = []
        refolded: list[str] = []
        processed_seqs: list[int] = []
        processed_ids: list[str] = []
        sealed_written: set[str] = set()
        for key in keys:
            if key in linked_patient:
                # A visitor who has registered: their events now fold into the patient's profile.
                rows_out[key] = self._merged_row(key, linked_patient[key], now_us)
                cleared.add(key)
                requeue.add(linked_patient[key])
                continue
            anons = sorted(anon_of.get(key, []))
            anon_stream_keys = [f"anon:{a}" for a in anons]
            fresh = merge_ordered(
                new_rows.get(key, []), *(new_rows.get(k, []) for k in anon_stream_keys)
            )
            current = stored.get(key) or StoredProfile(Profile(key))
            p = current.profile
            watermark = (current.last_occurred_us or -1, current.last_seq or -1)
            as_of_us = to_micros(p.as_of) if p.as_of else -1
            late = any(
                (r.occurred_us, r.seq) < watermark or r.occurred_us < as_of_us for r in fresh
            )
            newly_linked = anons != sorted(current.linked_anon)
            # A new link needs the whole history only if something was folded before it: the
            # patient's own profile, or the visitor's. Otherwise every event is in `fresh`.
            folded_before = key in stored or any(
                k in stored and stored[k].profile.events_applied for k in anon_stream_keys
            )
            needs_refold = late or (newly_linked and folded_before)
            if current.unloaded and (needs_refold or newly_linked):
                unseal(current, cipher)
            history: list[Transition] = []
            if needs_refold:
                everything = rows_for(conn, [key, *anon_stream_keys], unprocessed_only=False)
                ordered = merge_ordered(*everything.values())
                decoded = (decode_event(r, cipher) for r in ordered)
                p, history = fold(key, (e for e in decoded if e is not None), now, self._thresholds)
                old_tokens, old_plain = current.sealed_tokens, current.sealed_plain
                current = StoredProfile(
                    p,
                    linked_anon=anons,
                    sealed_tokens=old_tokens,
                    sealed_plain=old_plain,
                )
                if ordered:
                    current.last_occurred_us, current.last_seq = (
                        ordered[-1].occurred_us,
                        ordered[-1].seq,
                    )
                current.transitions = len(history)
                cleared.add(key)
                new_transitions.extend(transition_rows(key, 0, history))
                refolded.append(key)
                report.refolds += 1
            else:
                for r in fresh:
                    e = decode_event(r, cipher)
                    if e is not None:  # None: shredded by an erasure
                        step(p, e, self._thresholds, history)
                if fresh:
                    current.last_occurred_us, current.last_seq = (
                        fresh[-1].occurred_us,
                        fresh[-1].seq,
                    )
                advance_time(p, now, self._thresholds, history)
                new_transitions.extend(transition_rows(key, current.transitions, history))
                current.transitions += len(history)
            if newly_linked:
                current.linked_anon = anons
                for anon_key in anon_stream_keys:
                    rows_out[anon_key] = self._merged_row(anon_key, key, now_us)
                    cleared.add(anon_key)
            report.events += len(fresh)
            processed_seqs.extend(r.seq for r in fresh)
            processed_ids.extend(r.event_id for r in fresh)
            rows_out[key] = encode(
                current, cipher=cipher, index=index, thresholds=self._thresholds, now_us=now_us
            )
            sealed_written.update(n for n in p.values if FIELDS[n].encrypted)
            report.transitions += len(history)
            patient_id = None if key.startswith("anon:") else key
            report.messages.append(ProfileChanged(key, patient_id))
            for t in history:
                report.messages.append(
                    StageChanged(key, patient_id, t.from_stage, t.to_stage, t.at, t.reason)
                )
            if patient_id is not None:
                report.messages.extend(
                    TriggerFired(r.type, patient_id, r.event_id, from_micros(r.occurred_us))
                    for r in fresh
                    if r.type in TRIGGERS
                )
                if self._on_activity is not None:
                    report.activity.extend(
                        PatientActivity(key, "event", r.type, r.event_id, r.occurred_us)
                        for r in fresh
                    )
                    report.activity.extend(
                        PatientActivity(key, "stage", t.to_stage.value, t.event_id, to_micros(t.at))
                        for t in history
                    )

        upsert(conn, profiles, list(rows_out.values()), ["patient_key"], PROFILE_UPDATE_COLUMNS)
        if self._on_written is not None:
            self._on_written(conn, [k for k in rows_out if not k.startswith("anon:")], now_us)
        if self._on_triggers is not None:
            fired = [m for m in report.messages if isinstance(m, TriggerFired)]
            if fired:
                self._on_triggers(conn, fired, now_us)
        if self._on_activity is not None and report.activity:
            self._on_activity(conn, report.activity, now_us)
        cleared_keys = sorted(cleared)
        for start in range(0, len(cleared_keys), 500):
            conn.execute(
                delete(stage_transitions).where(
                    stage_transitions.c.patient_key.in_(cleared_keys[start : start + 500])
                )
            )
        insert_ignoring_conflicts(
            conn,
            pending_patients,
            [{"patient_key": k, "enqueued_us": now_us} for k in sorted(requeue - set(keys))],
            ["patient_key"],
        )
        if new_transitions:
            conn.execute(stage_transitions.insert(), new_transitions)
        for start in range(0, len(processed_seqs), 500):
            conn.execute(
                update(events)
                .where(events.c.seq.in_(processed_seqs[start : start + 500]))
                .values(processed=True)
            )
        conn.execute(delete(pending_patients).where(pending_patients.c.patient_key.in_(keys)))
        if report.events or refolded:
            append_audit(
                conn,
                [
                    AuditEntry(
                        actor=self._actor,
                        action="read",
                        record_type="event",
                        record_ids=processed_ids,
                        fields=["data"],
                        purpose="profile projection",
                    ),
                    AuditEntry(
                        actor=self._actor,
                        action="write",
                        record_type="profile",
                        record_ids=list(rows_out),
                        fields=sorted(sealed_written),
                        purpose="profile projection",
                    ),
                ],
                at_us=now_us,
            )
        return report
