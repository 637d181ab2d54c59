"""The reader: one source's models, page by page, into the intake, exactly once.

Per model and run: check the columns for drift (a drifted model stops, the others go on); read
pages in keyset order, each in its own short read-only transaction with a statement timeout;
turn each page's rows into events and snapshots (changes.py); store the events through the
intake with the new snapshots and the checkpoint in the SAME transaction. A crash between the
read and that commit leaves nothing behind, and the re-read emits the same event ids again.

Incremental models read `cursor >= high_water - safety_window` ordered by (cursor, key): the
window re-reads what a transaction that committed late (an old `updated_at`) or a skewed clock
would otherwise hide, and the snapshots make the re-read cost no event. Rows with a NULL cursor
are read in a second pass by key. Every `key_diff_every_minutes` (and on every run of a model
without a cursor) a full scan by key also finds rows that vanished: their delete event, then a
tombstone, so a row re-inserted under the same key is a new row.

A row whose patient is not registered yet is held back: no snapshot, and the checkpoint stays
before it, so the next run tries it again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine

from telecrm.bulk_gc import fewer_collections
from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import Event, EventRejected, parse_event
from telecrm.ingest.intake import EventIntake, IntakeResult, Storable
from telecrm.security.blind_index import BlindIndex
from telecrm.sources.changes import (
    LegacyDigester,
    RowChanges,
    RowDigester,
    Snapshot,
    canonical,
    digest_key,
)
from telecrm.sources.checkpoints import Checkpoints, ModelState, cursor_max
from telecrm.sources.config import ModelConfig, SourceConfig
from telecrm.sources.drift import check_drift
from telecrm.sources.errors import ModelStopped, SourceUnavailable
from telecrm.sources.pages import ModelPages
from telecrm.sources.prepare import (
    PARALLEL_OVER_ROWS,
    PagePreparer,
    PreparedRow,
    helper_setup,
    prepare_row,
    reconcile,
    snapshot_keys,
)

log = structlog.get_logger("telecrm.sources")

INTAKE_SOURCE = "database"  # events.source (16 characters at most)


@dataclass
class ModelReport:
    model: str
    rows: int = 0
    changed: int = 0
    events: int = 0
    duplicates: int = 0
    held: int = 0
    pages: int = 0
    full_scan: bool = False
    deleted: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (row key, reason, detail)
    stopped: str | None = None


@dataclass
class RunReport:
    source: str
    models: list[ModelReport] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(m.events for m in self.models)

    @property
    def stopped(self) -> list[ModelReport]:
        return [m for m in self.models if m.stopped]


def first_read(state: ModelState) -> bool:
    return state.high_water is None and state.last_full_scan_us is None


class SourceReader:
    """Reads one source. `after_read(model, page)` runs between a page's read and its commit
    (tests inject a crash there)."""

    def __init__(
        self,
        source: SourceConfig,
        platform: Engine,
        store: Engine,
        intake: EventIntake,
        index: BlindIndex,
        clock: Clock,
        *,
        after_read: Callable[[str, int], None] | None = None,
    ) -> None:
        self.source, self._platform, self._store = source, platform, store
        self._intake, self._index, self._clock = intake, index, clock
        self._after_read = after_read
        self.checkpoints = Checkpoints(store, source.name)
        self.pages = ModelPages(source, platform)
        self._preparer: PagePreparer | None = None

    # -- running -------------------------------------------------------------------------------

    def run(
        self,
        *,
        models: Sequence[str] | None = None,
        full: bool = False,
        on_page: Callable[[ModelReport], None] | None = None,
        parallel: bool | None = None,
    ) -> RunReport:
        """Every model once, in file order (patients first, as the file should list them).

        `parallel`: prepare pages in a helper process a page ahead (prepare.py); by default for
        an initial load or a full scan of a model over PARALLEL_OVER_ROWS rows on a machine
        with more than one core."""
        report = RunReport(self.source.name)
        chosen = [m for m in self.source.models if models is None or m.name in models]
        if parallel is None:
            parallel = self._worth_a_helper(chosen, full)
        with fewer_collections():
            try:
                for model in chosen:
                    mr = ModelReport(model.name)
                    report.models.append(mr)
                    try:
                        self._run_model(model, mr, full=full, on_page=on_page, parallel=parallel)
                    except ModelStopped as exc:
                        mr.stopped = str(exc)
                        self._save_stop(model, str(exc))
                        log.warning(
                            "source.model_stopped",
                            source=self.source.name,
                            model=model.name,
                            problem=exc.problem,
                        )
            finally:
                if self._preparer is not None:
                    self._preparer.close()
                    self._preparer = None
        return report

    def preview(self, *, limit: int = 20) -> list[tuple[str, Event]]:
        """The events the next run would emit (first pages only), without storing anything."""
        out: list[tuple[str, Event]] = []
        for model in self.source.models:
            state = self.checkpoints.state(model)
            if state.stopped_reason:
                continue
            changes = self.row_changes(model)
            for page in self.pages.walk(
                model, self._start(model, state), full=model.cursor is None
            ):
                before = self._snapshots(model, page)
                for row in page:
                    for wire in changes.outcome(
                        row, before.get(canonical(row[model.primary_key]))
                    ).events:
                        try:
                            out.append((model.name, parse_event(wire, now=self._clock.now())))
                        except EventRejected:
                            continue
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        return out[:limit]

    def row_changes(self, model: ModelConfig) -> RowChanges:
        return RowChanges(
            self.source.name,
            model,
            RowDigester(digest_key(self._index, self.source.name, model.name), model),
            self._clock.now,
            LegacyDigester(self._index, self.source.name, model),
        )

    def _run_model(
        self,
        model: ModelConfig,
        mr: ModelReport,
        *,
        full: bool,
        on_page: Callable[[ModelReport], None] | None,
        parallel: bool = False,
    ) -> None:
        state = self.checkpoints.state(model)
        actual = self.pages.describe(model)
        check_drift(model.name, model.columns(), state.schema, actual)
        state.schema, state.stopped_reason = actual, None  # the next run compares with this read
        now_us = to_micros(self._clock.now())
        every_us = int(self.source.key_diff_every_minutes * 60_000_000)
        full_scan = (
            model.cursor is None
            or full
            or (
                state.last_full_scan_us is not None and now_us - state.last_full_scan_us >= every_us
            )
        )
        mr.full_scan = full_scan
        changes = self.row_changes(model)
        seen: set[str] | None = set() if full_scan else None
        hold: Any = None
        high = state.cursor
        for page_no, (page, prepared) in enumerate(
            self._walk(model, state, full_scan, parallel and (first_read(state) or full_scan)),
            start=1,
        ):
            if seen is not None:
                seen.update(canonical(r[model.primary_key]) for r in page)
            page_high = None
            if model.cursor is not None:
                for r in page:
                    page_high = cursor_max(page_high, r.get(model.cursor))
            high = cursor_max(high, page_high)
            if self._after_read is not None:
                self._after_read(model.name, page_no)
            hold = self._store_page(model, changes, page, state, mr, high, hold, prepared)
            mr.pages += 1
            if on_page is not None:
                on_page(mr)
        if seen is not None:
            self._key_diff(model, changes, seen, state, mr, high, hold)
        elif state.last_full_scan_us is None:
            # The first run read every row already: the next key diff is one period away.
            self.checkpoints.save_alone(model, state, now_us, full_scan_us=now_us)
        log.info(
            "source.model_read",
            source=self.source.name,
            model=model.name,
            rows=mr.rows,
            events=mr.events,
            duplicates=mr.duplicates,
            held=mr.held,
            pages=mr.pages,
            full_scan=full_scan,
            rejected=len(mr.rejected),
        )

    def _walk(
        self, model: ModelConfig, state: ModelState, full_scan: bool, parallel: bool
    ) -> Iterator[tuple[list[dict[str, Any]], list[PreparedRow] | None]]:
        """The model's pages, each with its rows prepared by the helper (or None: prepare here)."""
        start = self._start(model, state)
        preparer = self._helper() if parallel else None
        if preparer is None:
            for page in self.pages.walk(model, start, full=full_scan):
                yield page, None
            return
        try:
            has_snapshots = self.checkpoints.has_snapshots(model)
            for prepared in preparer.walk(
                model, start, full=full_scan, now=self._clock.now, has_snapshots=has_snapshots
            ):
                yield [p.row for p in prepared], prepared
        except BrokenProcessPool:
            # The helper died (killed, out of memory): nothing of its page was stored.
            raise SourceUnavailable(
                f"source {self.source.name!r}: the helper process preparing pages stopped; "
                "nothing was lost (run again, or with --no-parallel)"
            ) from None

    def _worth_a_helper(self, models: Sequence[ModelConfig], full: bool) -> bool:
        """Two cores or more, and the initial loads and full scans ahead over PARALLEL_OVER_ROWS
        rows by the planner's estimates."""
        if (os.cpu_count() or 1) < 2:
            return False
        ahead = 0
        for model in models:
            state = self.checkpoints.state(model)
            if full or model.cursor is None or first_read(state):
                ahead += self.pages.estimated_rows(model)
        return ahead >= PARALLEL_OVER_ROWS

    def _helper(self) -> PagePreparer | None:
        if self._preparer is None:
            keys = {
                m.name: digest_key(self._index, self.source.name, m.name)
                for m in self.source.models
            }
            setup = helper_setup(self.source, self._platform, self._store, keys)
            if setup is None:
                return None
            self._preparer = PagePreparer(setup)
        return self._preparer

    # -- storing -------------------------------------------------------------------------------

    def _snapshots(self, model: ModelConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Snapshot]:
        return self.checkpoints.snapshots(model, snapshot_keys(model, rows))

    def _store_page(
        self,
        model: ModelConfig,
        changes: RowChanges,
        rows: Sequence[dict[str, Any]],
        state: ModelState,
        mr: ModelReport,
        high: Any,
        hold: Any,
        prepared: list[PreparedRow] | None = None,
    ) -> Any:
        before = self._snapshots(model, rows)
        now = self._clock.now()
        if prepared is None:
            prepared = [
                prepare_row(changes, row, before.get(canonical(row[model.primary_key])), now)
                for row in rows
            ]
        else:
            # The helper compared with the snapshots as they were a page ago: a row whose
            # snapshot moved since (or that it could not compare) is prepared again here.
            prepared = reconcile(prepared, before, changes, now)
        batch: list[Storable] = []
        snapshot_of: dict[str, Snapshot] = {}
        events_of: dict[str, list[str]] = {}
        cursor_of: dict[str, Any] = {}
        for p in prepared:
            mr.rows += 1
            if p.snapshot is None:
                continue
            mr.changed += 1
            key = p.key
            if p.rejected is not None:
                # The row's key and the rule it broke; never its values (they may be PHI).
                mr.rejected.append((key, *p.rejected))
                log.warning(
                    "source.row_rejected",
                    source=self.source.name,
                    model=model.name,
                    row_key=key if len(key) <= 64 else None,
                    reason=p.rejected[0],
                )
                continue
            batch += p.events
            snapshot_of[key] = p.snapshot
            events_of[key] = [e.id for e in p.events]
            cursor_of[key] = p.row.get(model.cursor) if model.cursor else None
        result = self._commit(
            model, batch, snapshot_of, events_of, cursor_of, state, high, hold, mr
        )
        return result

    def _commit(
        self,
        model: ModelConfig,
        batch: Sequence[Storable],
        snapshot_of: dict[str, Snapshot],
        events_of: dict[str, list[str]],
        cursor_of: dict[str, Any],
        state: ModelState,
        high: Any,
        hold: Any,
        mr: ModelReport,
        *,
        full_scan_us: int | None = None,
    ) -> Any:
        now_us = to_micros(self._clock.now())
        outcome: dict[str, Any] = {"hold": hold}

        # The intake retries the transaction on a concurrent writer's IntegrityError: count on
        # a draft and keep it only once the commit succeeded.
        draft = dataclasses.replace(state)

        def in_transaction(conn: Connection, result: IntakeResult) -> None:
            vars(draft).update(vars(state))
            skipped = {event_id for event_id, _, _ in result.skipped}
            held_keys = {k for k, ids in events_of.items() if skipped.intersection(ids)}
            new_hold = hold
            for k in held_keys:
                c = cursor_of[k]
                if c is not None and (new_hold is None or c < new_hold):
                    new_hold = c
            snapshots = [s for k, s in snapshot_of.items() if k not in held_keys]
            self.checkpoints.save_snapshots(conn, model, snapshots, now_us)
            water = high
            if new_hold is not None:
                water = new_hold if high is None else min(high, new_hold)
            self.checkpoints.save(
                conn,
                model,
                draft,
                now_us,
                high_water=water,
                rows=len(snapshot_of),
                events=result.accepted,
                full_scan_us=full_scan_us,
            )
            outcome["hold"] = new_hold
            outcome["held"] = len(held_keys)

        result = self._intake.accept(
            batch,
            source=INTAKE_SOURCE,
            actor=f"source:{self.source.name}",
            unknown_patients="skip",
            in_transaction=in_transaction,
        )
        vars(state).update(vars(draft))
        mr.events += result.accepted
        mr.duplicates += result.duplicates
        mr.held += int(outcome.get("held", 0))
        return outcome["hold"]

    def _key_diff(
        self,
        model: ModelConfig,
        changes: RowChanges,
        seen: set[str],
        state: ModelState,
        mr: ModelReport,
        high: Any,
        hold: Any,
    ) -> None:
        gone = [s for s in self.checkpoints.live_snapshots(model) if s.row_key not in seen]
        mr.deleted += len(gone)
        self._tombstones(model, changes, gone, state, mr, high, hold, full_scan=True)

    def _tombstones(
        self,
        model: ModelConfig,
        changes: RowChanges,
        gone: Sequence[Snapshot],
        state: ModelState,
        mr: ModelReport,
        high: Any,
        hold: Any,
        *,
        full_scan: bool,
    ) -> None:
        """Rows no longer in the table: their delete events and tombstones, in one commit."""
        now = self._clock.now()
        batch: list[Storable] = []
        snapshot_of: dict[str, Snapshot] = {}
        events_of: dict[str, list[str]] = {}
        for before in gone:
            wires, tomb = changes.tombstone(before, to_micros(now))
            try:
                parsed = [parse_event(w, now=now) for w in wires]
            except EventRejected as exc:
                mr.rejected.append((before.row_key, exc.reason, exc.detail))
                continue
            batch += parsed
            snapshot_of[before.row_key] = tomb
            events_of[before.row_key] = [e.id for e in parsed]
        self._commit(
            model,
            batch,
            snapshot_of,
            events_of,
            dict.fromkeys(snapshot_of),
            state,
            high,
            hold,
            mr,
            full_scan_us=to_micros(now) if full_scan else None,
        )

    # -- change capture ------------------------------------------------------------------------

    def apply_keys(self, model: ModelConfig, keys: Sequence[str]) -> ModelReport:
        """Re-read the rows `keys` name (logical replication said they changed) and store what
        changed, exactly as a polling read would; a key with no row left is a delete."""
        mr = ModelReport(model.name)
        state = self.checkpoints.state(model)
        if state.stopped_reason:
            mr.stopped = state.stopped_reason
            return mr
        changes = self.row_changes(model)
        high, hold = state.cursor, None
        wanted = sorted(set(keys))
        found: set[str] = set()
        for rows in self.pages.by_key(model, wanted):
            if self._after_read is not None:
                self._after_read(model.name, mr.pages + 1)
            found.update(canonical(r[model.primary_key]) for r in rows)
            if model.cursor is not None:
                for r in rows:
                    high = cursor_max(high, r.get(model.cursor))
            hold = self._store_page(model, changes, rows, state, mr, high, hold)
            mr.pages += 1
        missing = [k for k in wanted if k not in found]
        if missing:
            before = self.checkpoints.snapshots(model, missing)
            gone = [b for b in before.values() if b.row_digest is not None]
            mr.deleted += len(gone)
            if gone:
                self._tombstones(model, changes, gone, state, mr, high, hold, full_scan=False)
        return mr

    def _start(self, model: ModelConfig, state: ModelState) -> Any:
        """Where an incremental read starts: the high-water mark less the safety window."""
        start = state.cursor
        if isinstance(start, datetime):
            start = start - timedelta(seconds=self.source.safety_window_seconds)
        return start

    def _save_stop(self, model: ModelConfig, reason: str) -> None:
        state = self.checkpoints.state(model)
        self.checkpoints.save_alone(
            model, state, to_micros(self._clock.now()), stopped_reason=reason
        )
