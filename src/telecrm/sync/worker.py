"""The outbox worker: claims dirty patients of one destination and makes the CRM hold what they should.

One round: lease up to N dirty patients (SKIP LOCKED on PostgreSQL; a lease that outlives a killed
worker expires), plan their records, drop those whose digest the CRM already accepted, convert
leads that became patients, write the rest in batches up to the API's maximum in dependency order,
link associations, and commit the outcome in one transaction: accepted digests, dead letters,
disclosures and their audit entries, and the dirty marks cleared (unless the patient changed again
meanwhile). A crash anywhere before that commit only means the same upserts run again: every
write is keyed by an external id, so nothing is duplicated.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, delete, select, update

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
    CallGate,
    ConfigurationError,
    Connector,
    LeadConversion,
    RateLimited,
    RecordOutcome,
    RecordWrite,
    TransientFailure,
)
from telecrm.domain.clock import Clock, to_micros
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles
from telecrm.retry_policy import backoff_seconds, with_jitter
from telecrm.security.envelope import FieldCipher
from telecrm.store.engine import read_only
from telecrm.sync.mapping import Mapping
from telecrm.sync.planner import DesiredRecord, desired_records, object_order
from telecrm.sync.recording import Outcomes, commit_outcomes
from telecrm.sync.tables import sync_dirty, sync_records

log = structlog.get_logger("telecrm.sync")

ATTEMPTS_PER_CALL = 4  # tries of one batch inside a round before the patients are deferred
MAX_ROUNDS = 8  # rounds a patient may be deferred before its records go to dead letters
FIRST_ROUND = 500  # patients: enough for full batches, small enough to start calling at once


class SyncHalted(Exception):
    """The destination refused our credentials or configuration: an operator must act."""

    def __init__(self, destination: str, code: str, detail: str) -> None:
        super().__init__(f"{destination}: {code}: {detail}")
        self.destination, self.code, self.detail = destination, code, detail


@dataclass
class SyncReport:
    patients: int = 0
    records: int = 0  # records the mapping asks for
    unchanged: int = 0  # already accepted with the same digest: no call
    written: int = 0
    rejected: int = 0
    deferred: int = 0
    archived: int = 0
    converted: int = 0
    calls: int = 0

    def add(self, other: SyncReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Claim:
    patient_key: str
    version: int
    attempts: int


@dataclass
class _Round:
    claims: dict[str, _Claim]
    desired: list[DesiredRecord] = field(default_factory=list)
    known: dict[tuple[str, str], Any] = field(default_factory=dict)  # sync_records rows
    outcomes: Outcomes = field(default_factory=Outcomes)


class SyncWorker:
    def __init__(
        self,
        engine: Engine,
        mapping: Mapping,
        connector: Connector,
        cipher: Callable[[], FieldCipher],
        clock: Clock,
        sleep: Callable[[float], None],
        *,
        gate: CallGate | None = None,
        owner: str | None = None,
        lease_seconds: float = 300.0,
        patients_per_round: int = 5000,
    ) -> None:
        self._engine = engine
        self.mapping = mapping
        self.connector = connector
        self._cipher = cipher
        self._clock = clock
        self._sleep = sleep
        self._gate = gate
        self._random = random.Random()  # jitter only: spreads the retries of many workers
        self.owner = owner or uuid.uuid4().hex[:16]
        self._lease_us = int(lease_seconds * 1e6)
        self._per_round = patients_per_round
        self.destination = mapping.destination

    # -- the loop ---------------------------------------------------------------------------
    def drain(self, on_round: Callable[[SyncReport], None] | None = None) -> SyncReport:
        """Rounds until nothing due is left (patients deferred for later stay marked).

        The next round is claimed and planned (database reads, decryption) on a helper thread
        while this one talks to the CRM, so planning hides in the time the rate limit makes the
        calls wait instead of adding to it.
        """
        total = SyncReport()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-plan") as planner:
            # A small first round: the calls start while the first big round is being planned.
            upcoming = planner.submit(self._prepare, min(self._per_round, FIRST_ROUND))
            try:
                while True:
                    prepared = upcoming.result()
                    if prepared is None:
                        return total
                    upcoming = planner.submit(self._prepare)
                    report = self._execute(*prepared)
                    total.add(report)
                    if on_round is not None:
                        on_round(report)
            except BaseException:
                self._abandon(upcoming)
                raise

    def run_once(self) -> SyncReport:
        prepared = self._prepare()
        return SyncReport() if prepared is None else self._execute(*prepared)

    def _abandon(self, upcoming: Future[tuple[_Round, SyncReport] | None]) -> None:
        """Give back a round claimed ahead when the current one failed."""
        try:
            prepared = upcoming.result(timeout=600)
        except Exception:
            return
        if prepared is not None:
            self._release(list(prepared[0].claims))

    def _prepare(self, limit: int | None = None) -> tuple[_Round, SyncReport] | None:
        cipher = self._cipher()  # before any transaction (see intake.store_group)
        claims = self._claim(limit or self._per_round)
        if not claims:
            return None
        rnd = _Round({c.patient_key: c for c in claims})
        report = SyncReport(patients=len(claims))
        try:
            self._plan(rnd, cipher, report)
        except BaseException:
            self._release(list(rnd.claims))
            raise
        return rnd, report

    def _execute(self, rnd: _Round, report: SyncReport) -> SyncReport:
        calls_before = self.connector.stats.calls
        try:
            self._convert_leads(rnd, report)
            self._write_all(rnd, report)
            self._archive_erased(rnd, report)
        except SyncHalted:
            self._release(list(rnd.claims))
            raise
        report.deferred = len(rnd.outcomes.deferred)
        report.calls = self.connector.stats.calls - calls_before
        with self._engine.begin() as conn:
            commit_outcomes(
                conn,
                self.mapping,
                rnd.outcomes,
                now_us=self._now_us(),
                owner=self.owner,
                claims={k: (c.version, c.attempts) for k, c in rnd.claims.items()},
                deferred=set(),
                retry_in_us=lambda attempts: int(
                    with_jitter(backoff_seconds(attempts), self._random.random()) * 1e6
                ),
                max_rounds=MAX_ROUNDS,
            )
        return report

    def _now_us(self) -> int:
        return to_micros(self._clock.now())

    # -- claim --------------------------------------------------------------------------------
    def _claim(self, limit: int) -> list[_Claim]:
        now_us = self._now_us()
        with self._engine.begin() as conn:
            query = (
                select(sync_dirty.c.patient_key, sync_dirty.c.version, sync_dirty.c.attempts)
                .where(
                    sync_dirty.c.destination == self.destination,
                    sync_dirty.c.not_before_us <= now_us,
                    sync_dirty.c.lease_until_us <= now_us,
                )
                .order_by(sync_dirty.c.marked_us)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            claims = [_Claim(*row) for row in conn.execute(query)]
            keys = [c.patient_key for c in claims]
            for start in range(0, len(keys), 500):
                conn.execute(
                    update(sync_dirty)
                    .where(
                        sync_dirty.c.destination == self.destination,
                        sync_dirty.c.patient_key.in_(keys[start : start + 500]),
                    )
                    .values(lease_until_us=now_us + self._lease_us, lease_owner=self.owner)
                )
        return claims

    def _release(self, keys: Sequence[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(sync_dirty)
                .where(
                    sync_dirty.c.destination == self.destination,
                    sync_dirty.c.patient_key.in_(list(keys)),
                    sync_dirty.c.lease_owner == self.owner,
                )
                .values(lease_until_us=0, lease_owner=None)
            )

    # -- plan ---------------------------------------------------------------------------------
    def _plan(self, rnd: _Round, cipher: FieldCipher, report: SyncReport) -> None:
        keys = list(rnd.claims)
        with read_only(self._engine).connect() as conn:  # no write lock while decoding
            rows = conn.execute(profile_rows().where(profiles.c.patient_key.in_(keys))).all()
            rnd.known = load_known(conn, self.destination, keys)
        erased: set[str] = set()
        for row in rows:
            p = decode(row, cipher).profile
            if p.deleted:
                erased.add(p.patient_key)
            rnd.desired.extend(desired_records(p, self.mapping))
        rnd.outcomes.erased = erased
        report.records = len(rnd.desired)
        fresh = []
        for d in rnd.desired:
            known = rnd.known.get((d.object, d.key))
            if (
                known is not None
                and known.accepted_hash == d.digest
                and known.state in ("accepted", "rejected", "missing")
            ):
                report.unchanged += 1  # accepted already, or refused with this very data
                continue
            if d.phi and not self.mapping.baa:  # the mapping check, once more at send time
                rnd.outcomes.reject(
                    d, "PHI_REFUSED", "a PHI field for a destination without a BAA", sent=False
                )
                continue
            fresh.append(d)
        rnd.desired = fresh
        rnd.outcomes.desired = fresh

    # -- lead conversion (Salesforce) ---------------------------------------------------------
    def _convert_leads(self, rnd: _Round, report: SyncReport) -> None:
        convert = getattr(self.connector, "convert_leads", None)
        targets = [o for o in self.mapping.objects if o.converts_from]
        if convert is None or not targets:
            return
        wanted: list[LeadConversion] = []
        for o in targets:
            for d in rnd.desired:
                if d.object != o.name:
                    continue
                mine = rnd.known.get((o.name, d.key))
                lead = rnd.known.get((o.converts_from or "", d.key))
                if lead is None or not lead.crm_id or lead.state != "accepted":
                    continue
                if mine is None or mine.crm_id is None:
                    wanted.append(LeadConversion(d.key, lead.crm_id))
        if not wanted:
            return
        results = self._call(rnd, {c.key for c in wanted}, lambda: convert(wanted))
        if results is None:
            return
        for r in results:
            lead_object = targets[0].converts_from or ""
            rnd.outcomes.converted(lead_object, r.key, ok=r.ok, code=r.code)
            if r.ok:
                report.converted += 1

    # -- write --------------------------------------------------------------------------------
    def _write_all(self, rnd: _Round, report: SyncReport) -> None:
        mode = "update" if self.mapping.mode == "update" else "upsert"
        for name in object_order(self.mapping):
            o = self.mapping.object(name)
            todo = [
                d
                for d in rnd.desired
                if d.object == name and d.patient_key not in rnd.outcomes.deferred
            ]
            ready = []
            for d in todo:
                if all(self._in_crm(rnd, rel) for rel in d.relations):
                    ready.append(d)
                else:
                    rnd.outcomes.blocked(d)
            size = self.connector.batch_max(o.crm_object)
            for start in range(0, len(ready), size):
                chunk = ready[start : start + size]
                self._write_chunk(rnd, o.crm_object, o.id_property, chunk, mode, report)
            self._associate(rnd, [d for d in ready if d.associations], report)

    def _in_crm(self, rnd: _Round, ref: tuple[str, str]) -> bool:
        if rnd.outcomes.crm_id(ref) is not None:
            return True
        known = rnd.known.get(ref)
        return known is not None and known.crm_id is not None and known.state == "accepted"

    def _write_chunk(
        self,
        rnd: _Round,
        crm_object: str,
        id_property: str,
        chunk: list[DesiredRecord],
        mode: Any,
        report: SyncReport,
    ) -> None:
        writes = [
            RecordWrite(d.key, self._resolved(d), self._crm_id(rnd, (d.object, d.key)))
            for d in chunk
        ]
        try:
            results = self._call(
                rnd,
                {d.patient_key for d in chunk},
                lambda: self.connector.write(crm_object, id_property, writes, mode=mode),
            )
        except BatchRejected as exc:
            if len(chunk) == 1:
                rnd.outcomes.reject(chunk[0], exc.code, exc.detail)
                report.rejected += 1
                return
            half = len(chunk) // 2  # one bad record should not sink the other 99
            self._write_chunk(rnd, crm_object, id_property, chunk[:half], mode, report)
            self._write_chunk(rnd, crm_object, id_property, chunk[half:], mode, report)
            return
        if results is None:
            return
        by_key = {r.key: r for r in results}
        for d in chunk:
            r = by_key.get(d.key)
            if r is None:
                self._defer(rnd, {d.patient_key}, "NO_RESULT")
                continue
            self._record(rnd, d, r, report)

    def _record(self, rnd: _Round, d: DesiredRecord, r: RecordOutcome, report: SyncReport) -> None:
        if r.outcome == "accepted":
            rnd.outcomes.accept(d, r.crm_id, pending_links=bool(d.associations))
            report.written += 1
        elif r.outcome == "missing":
            rnd.outcomes.missing(d)
        else:
            rnd.outcomes.reject(d, r.code or "REJECTED", r.detail or "")
            report.rejected += 1

    def _resolved(self, d: DesiredRecord) -> dict[str, Any]:
        return dict(d.properties)

    def _crm_id(self, rnd: _Round, ref: tuple[str, str]) -> str | None:
        crm_id = rnd.outcomes.crm_id(ref)
        if crm_id is not None:
            return crm_id
        known = rnd.known.get(ref)
        return None if known is None else known.crm_id

    def _associate(self, rnd: _Round, records: list[DesiredRecord], report: SyncReport) -> None:
        groups: dict[tuple[str, str], list[tuple[DesiredRecord, AssociationWrite]]] = {}
        for d in records:
            from_id = rnd.outcomes.crm_id((d.object, d.key))
            if from_id is None:
                continue
            before = rnd.known.get((d.object, d.key))
            if before is not None and before.accepted_hash is not None and before.crm_id == from_id:
                rnd.outcomes.linked(d)  # linked when first accepted; its contact is the same one
                continue
            for to_name, to_key in d.associations:
                to_id = self._crm_id(rnd, (to_name, to_key))
                if to_id is None or not self._in_crm(rnd, (to_name, to_key)):
                    rnd.outcomes.blocked(d)
                    continue
                pair = (
                    self.mapping.object(d.object).crm_object,
                    self.mapping.object(to_name).crm_object,
                )
                groups.setdefault(pair, []).append((d, AssociationWrite(d.key, from_id, to_id)))
        for (from_obj, to_obj), items in groups.items():
            size = self.connector.batch_max(from_obj)
            for start in range(0, len(items), size):
                part = items[start : start + size]
                links = [link for _, link in part]
                results = self._call(
                    rnd,
                    {d.patient_key for d, _ in part},
                    partial(self.connector.associate, from_obj, to_obj, links),
                )
                if results is None:
                    continue
                ok = {r.key for r in results if r.outcome == "accepted"}
                for d, link in part:
                    if link.key in ok:
                        rnd.outcomes.linked(d)
                    else:
                        rnd.outcomes.blocked(d)

    # -- mirror mode --------------------------------------------------------------------------
    def _archive_erased(self, rnd: _Round, report: SyncReport) -> None:
        if self.mapping.mode != "mirror" or not rnd.outcomes.erased:
            return
        order = list(reversed(object_order(self.mapping)))  # children before parents
        for name in order:
            o = self.mapping.object(name)
            rows = [
                row
                for (obj, _key), row in rnd.known.items()
                if obj == name
                and row.patient_key in rnd.outcomes.erased
                and row.crm_id
                and row.state in ("accepted", "missing")
            ]
            size = self.connector.batch_max(o.crm_object)
            for start in range(0, len(rows), size):
                part = rows[start : start + size]
                writes = [RecordWrite(r.record_key, {}, r.crm_id) for r in part]
                results = self._call(
                    rnd,
                    {r.patient_key for r in part},
                    partial(self.connector.archive, o.crm_object, writes),
                )
                if results is None:
                    continue
                done = {r.key for r in results if r.outcome in ("accepted", "missing")}
                for r in part:
                    if r.record_key in done:
                        rnd.outcomes.archived(name, r.record_key, r.patient_key)
                        report.archived += 1

    # -- one call, with retries ---------------------------------------------------------------
    def _call(self, rnd: _Round, patients: set[str], call: Callable[[], Any]) -> Any:
        """Run `call`, retrying transient failures; None when the patients are deferred."""
        attempt = 0
        while True:
            try:
                return call()
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else backoff_seconds(attempt)
                gate = self._gate
                if gate is not None:
                    gate.back_off(wait, daily=exc.daily)
                log.warning(
                    "sync.rate_limited", destination=self.destination, code=exc.code, wait=wait
                )
                if exc.daily:
                    self._defer(rnd, patients, exc.code)
                    return None
                if gate is None:
                    self._sleep(wait)
            except TransientFailure as exc:
                log.warning(
                    "sync.transient_failure",
                    destination=self.destination,
                    code=exc.code,
                    status=exc.status,
                    attempt=attempt,
                )
                if attempt + 1 >= ATTEMPTS_PER_CALL:
                    self._defer(rnd, patients, exc.code)
                    return None
                self._sleep(
                    with_jitter(
                        backoff_seconds(attempt),
                        self._random.random(),
                        floor=exc.retry_after or 0.0,
                    )
                )
            except (AuthFailed, ConfigurationError) as exc:
                raise SyncHalted(self.destination, exc.code, exc.detail) from None
            attempt += 1

    def _defer(self, rnd: _Round, patients: set[str], code: str) -> None:
        rnd.outcomes.deferred.update(patients)
        for p in patients:
            rnd.outcomes.failure_codes[p] = code


def load_known(
    conn: Connection, destination: str, patient_keys: Sequence[str]
) -> dict[tuple[str, str], Any]:
    known: dict[tuple[str, str], Any] = {}
    for start in range(0, len(patient_keys), 500):
        part = list(patient_keys[start : start + 500])
        for row in conn.execute(
            select(sync_records).where(
                sync_records.c.destination == destination, sync_records.c.patient_key.in_(part)
            )
        ):
            known[(row.object, row.record_key)] = row
    return known


def forget_destination(conn: Connection, destination: str) -> None:
    """Drop what telecrm believes a destination holds (after the CRM was reset by hand)."""
    conn.execute(delete(sync_records).where(sync_records.c.destination == destination))
