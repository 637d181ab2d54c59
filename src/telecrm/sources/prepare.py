"""Rows into prepared rows (digests, events), here or in a helper process pages ahead.

Preparing a row is pure work: its digests, the events its change means (changes.py), those
events parsed and checked. Storing is the reader's: one transaction per page with the snapshots
and the checkpoint. On a large read (an initial load, a full scan) a helper process prepares the
next pages (PAGES_AHEAD) while the reader stores this one, so the two halves use both cores, as
`telecrm import` does with parsing. What comes back is plain tuples (`to_wire`), cheap to pickle.

The helper compares each row with the snapshot it read a moment ago, which the reader may not
have committed yet; so the reader reads the page's snapshots again in its own order and prepares
here again every row whose snapshot is not the one the helper saw (a row that changed twice
during the read) and every row a snapshot of the first digest scheme describes (the helper has no
blind-index key to compare with it). What is stored is always what the reader's own snapshots
say.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

from sqlalchemy import Engine

from telecrm import bulk_gc
from telecrm.domain.events import Event, EventRejected, parse_event
from telecrm.ingest.intake import Storable
from telecrm.ingest.line_parser import ParsedEvent
from telecrm.sources.changes import RowChanges, RowDigester, Snapshot, canonical, is_legacy
from telecrm.sources.checkpoints import Checkpoints
from telecrm.sources.config import ModelConfig, SourceConfig
from telecrm.sources.pages import ModelPages

PAGES_AHEAD = 2  # pages in work in the helper: one page slower than usual does not stall the reader
PARALLEL_OVER_ROWS = (
    20_000  # below this, starting a helper (about a second) costs more than it saves
)


@dataclass(slots=True)
class PreparedRow:
    key: str
    row: dict[str, Any]
    before: Snapshot | None  # the snapshot the row was compared with
    snapshot: Snapshot | None = None  # None: a re-read, nothing to store
    events: list[Storable] = field(default_factory=list)
    rejected: tuple[str, str] | None = None  # (reason, detail): an event the intake would refuse
    deferred: bool = False  # the helper could not compare it: the reader prepares it


# What crosses the pipe: a prepared row as plain tuples. Pickling frozen and slotted dataclasses
# runs Python code per object on both sides; tuples of built-in values do not (a 20,000-patient
# load: 3.4 s of pickling down to 1.0 s, most of it in the reader). Snapshots and stored events
# are named tuples, so both directions are a C-level copy of the fields (`tuple(x)`,
# `tuple.__new__(cls, t)`).
WireRow = tuple[Any, ...]


def to_wire(p: PreparedRow) -> WireRow:
    """A row the helper prepared (its events in the stored form) as plain tuples."""
    return (
        p.key,
        p.row,
        None if p.before is None else tuple(p.before),
        None if p.snapshot is None else tuple(p.snapshot),
        [tuple(_stored(e)) for e in p.events],
        p.rejected,
        p.deferred,
    )


def _stored(e: Storable) -> ParsedEvent:
    if isinstance(e, ParsedEvent):
        return e
    assert isinstance(e, Event)
    return ParsedEvent.of(e)


_new = tuple.__new__  # a named tuple from its fields' tuple, without its Python-level __new__


def from_wire(t: WireRow) -> PreparedRow:
    key, row, before, snapshot, events, rejected, deferred = t
    return PreparedRow(
        key,
        row,
        None if before is None else _new(Snapshot, before),
        None if snapshot is None else _new(Snapshot, snapshot),
        [_new(ParsedEvent, e) for e in events],
        rejected,
        deferred,
    )


def prepare_row(
    changes: RowChanges,
    row: dict[str, Any],
    before: Snapshot | None,
    now: datetime,
    *,
    stored_form: bool = False,
) -> PreparedRow:
    key = canonical(row[changes.model.primary_key])
    outcome = changes.outcome(row, before)
    prepared = PreparedRow(key, row, before, outcome.snapshot)
    if outcome.snapshot is not None:
        try:
            parsed = [parse_event(w, now=now) for w in outcome.events]
        except EventRejected as exc:
            prepared.rejected = (exc.reason, exc.detail)
        else:
            # In the helper, the stored form (JSON payload, fact key) is made here too.
            prepared.events = [ParsedEvent.of(e) for e in parsed] if stored_form else list(parsed)
    return prepared


def reconcile(
    prepared: list[PreparedRow],
    snapshots: dict[str, Snapshot],
    changes: RowChanges,
    now: datetime,
) -> list[PreparedRow]:
    """The helper's rows, checked against the snapshots as the reader reads them now: a row
    whose snapshot moved since the helper read it (or that it could not compare) is prepared
    again, here."""
    return [
        p
        if not p.deferred and p.before == snapshots.get(p.key)
        else prepare_row(changes, p.row, snapshots.get(p.key), now)
        for p in prepared
    ]


def snapshot_keys(model: ModelConfig, rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({canonical(r[model.primary_key]) for r in rows})


# -- the helper process ------------------------------------------------------------------------


@dataclass(frozen=True)
class HelperSetup:
    source: SourceConfig
    platform_url: str  # with its password: it goes to our own child process only, never logged
    store_url: str
    digest_keys: dict[str, bytes]  # model -> its row-digest key (not the blind-index key)


class _Helper:
    def __init__(self, setup: HelperSetup) -> None:
        from telecrm.sources.platform_db import platform_engine
        from telecrm.store.engine import make_engine, read_only

        source = setup.source
        self.source = source
        self.pages = ModelPages(
            source, platform_engine(source, {source.url_env: setup.platform_url})
        )
        # Deferred transactions: on SQLite the helper must never take the reader's write lock.
        self.checkpoints = Checkpoints(read_only(make_engine(setup.store_url)), source.name)
        self.now = datetime.min
        self.changes = {
            m.name: RowChanges(
                source.name, m, RowDigester(setup.digest_keys[m.name], m), lambda: self.now
            )
            for m in source.models
            if m.name in setup.digest_keys
        }
        self.walks: dict[int, Iterator[list[dict[str, Any]]]] = {}
        # Walks that ended (an id each, for the helper's one run): a page asked for ahead of the
        # end is None, not a new walk.
        self.finished: set[int] = set()

    def next_page(
        self,
        walk_id: int,
        model_name: str,
        start: Any,
        full: bool,
        now: datetime,
        has_snapshots: bool,
    ) -> list[PreparedRow] | None:
        if walk_id in self.finished:
            return None
        changes = self.changes[model_name]
        model = changes.model
        walk = self.walks.get(walk_id)
        if walk is None:
            walk = self.walks[walk_id] = self.pages.walk(model, start, full=full)
        try:
            rows = next(walk, None)
            if rows is None:
                self.walks.pop(walk_id, None)
                self.finished.add(walk_id)
                return None
            # A model read for the first time has no snapshot to compare with (a row this read
            # already stored, changed since, is the reader's to see: reconcile).
            before = (
                self.checkpoints.snapshots(model, snapshot_keys(model, rows))
                if has_snapshots
                else {}
            )
        except BaseException:
            self.walks.pop(walk_id, None)
            self.finished.add(walk_id)
            raise
        self.now = now
        out: list[PreparedRow] = []
        for row in rows:
            key = canonical(row[model.primary_key])
            was = before.get(key)
            if is_legacy(was):
                out.append(PreparedRow(key, row, was, deferred=True))
                continue
            out.append(prepare_row(changes, row, was, now, stored_form=True))
        return out


_helper: _Helper | None = None


def _start(setup: HelperSetup) -> None:
    global _helper
    bulk_gc.for_this_process()  # it only prepares pages: bulk work for its whole life
    _helper = _Helper(setup)


def _next_page(
    walk_id: int, model_name: str, start: Any, full: bool, now: datetime, has_snapshots: bool
) -> list[WireRow] | None:
    assert _helper is not None
    page = _helper.next_page(walk_id, model_name, start, full, now, has_snapshots)
    return None if page is None else [to_wire(p) for p in page]


def _end_walk(walk_id: int) -> None:
    assert _helper is not None
    _helper.walks.pop(walk_id, None)
    _helper.finished.add(walk_id)


class PagePreparer:
    """The reader's side of the helper: pages of prepared rows, the next one always in work."""

    def __init__(self, setup: HelperSetup) -> None:
        # Spawned, not forked: the child must not inherit the reader's database connections.
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=get_context("spawn"), initializer=_start, initargs=(setup,)
        )
        self._ids = itertools.count(1)

    def walk(
        self,
        model: ModelConfig,
        start: Any,
        *,
        full: bool,
        now: Callable[[], datetime],
        has_snapshots: bool = True,
    ) -> Iterator[list[PreparedRow]]:
        walk_id = next(self._ids)

        def ask() -> Future[list[WireRow] | None]:
            return self._pool.submit(
                _next_page, walk_id, model.name, start, full, now(), has_snapshots
            )

        ahead = deque([ask() for _ in range(PAGES_AHEAD)])
        finished = False
        try:
            while True:
                page = ahead.popleft().result()
                if page is None:
                    finished = True
                    return
                ahead.append(ask())  # the helper keeps PAGES_AHEAD pages in work
                yield [from_wire(t) for t in page]
        finally:
            for future in ahead:
                future.cancel()
            if not finished:
                self._pool.submit(_end_walk, walk_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def helper_setup(
    source: SourceConfig, platform: Engine, store: Engine, digest_keys: dict[str, bytes]
) -> HelperSetup | None:
    """What the helper needs, or None when it cannot share the store (an in-memory SQLite)."""
    url = store.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return HelperSetup(
        source,
        platform.url.render_as_string(hide_password=False),
        url.render_as_string(hide_password=False),
        digest_keys,
    )
