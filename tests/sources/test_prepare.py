"""Pages prepared a page ahead in a helper process: what the reader checks before it stores."""

from __future__ import annotations

import pickle

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.ingest.line_parser import ParsedEvent
from telecrm.ingest.tables import events
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.changes import digest_key
from telecrm.sources.prepare import (
    PAGES_AHEAD,
    _Helper,
    from_wire,
    helper_setup,
    prepare_row,
    reconcile,
    to_wire,
)
from tests.sources.conftest import ReaderFactory, example_source, move_first_patient, sql


def test_a_row_whose_snapshot_moved_after_the_helper_read_it_is_prepared_again(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    """The helper compares a row with the snapshot it saw; if the reader has stored a newer one
    since (the row changed twice during the read), the helper's events would repeat the old
    change and miss the new one: reconcile prepares that row again from the stored snapshot."""
    reader = make_reader(example_source(page_size=50))
    reader.run(parallel=False)
    model = reader.source.model("patients")
    changes = reader.row_changes(model)
    pid = move_first_patient(platform_url)
    rows = [r for page in reader.pages.by_key(model, [pid]) for r in page]
    now = runtime.clock.now()
    # What a helper that read before the first run's commit would have made: a "new" row.
    stale = [prepare_row(changes, row, None, now) for row in rows]
    assert [e.type for e in stale[0].events] == ["patient.registered"]
    stored = reader.checkpoints.snapshots(model, [pid])
    again = reconcile(stale, stored, changes, now)
    assert [e.type for e in again[0].events] == ["patient.updated"]
    assert again[0].before == stored[pid]
    # A row the helper compared with the snapshot the reader still has is taken as it is.
    current = [prepare_row(changes, row, stored.get(pid), now) for row in rows]
    assert reconcile(current, stored, changes, now)[0] is current[0]


def test_the_helper_path_stores_what_the_reader_alone_stores(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
) -> None:
    """Same event ids, same snapshots, whichever process prepared the rows."""
    reader = make_reader(example_source(page_size=40))
    reader.run(parallel=True)
    with runtime.engine.connect() as conn:
        ids = set(conn.execute(select(events.c.event_id)).scalars())
        (n,) = conn.execute(select(func.count()).select_from(events)).one()
    assert len(ids) == n > 0
    # Re-read serially: every row is a re-read, so the helper's digests equal the reader's.
    again = reader.run(full=True, parallel=False)
    assert again.events == 0
    assert sum(m.changed for m in again.models) == 0


def test_the_helper_starts_by_itself_only_for_large_first_reads(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default the helper is worth its start-up only when the planner expects more rows ahead
    than PARALLEL_OVER_ROWS, and only for first reads and full scans."""
    from telecrm.sources import reader as reader_module

    started: list[object] = []
    real = reader_module.PagePreparer

    def counting(setup: object) -> object:
        started.append(setup)
        return real(setup)  # type: ignore[arg-type]

    monkeypatch.setattr(reader_module, "PagePreparer", counting)
    reader = make_reader()
    sql(platform_url, "ANALYZE")  # the planner's estimates need statistics
    assert 0 < reader.pages.estimated_rows(reader.source.model("patients")) < 1_000
    assert reader.run().events > 0  # the small world: read here
    assert started == []
    monkeypatch.setattr(reader_module, "PARALLEL_OVER_ROWS", 1)
    assert reader.run().events == 0  # incremental reads: still here, whatever the size
    assert started == []
    assert reader.run(full=True).events == 0  # a full scan over the (lowered) threshold
    assert len(started) == 1


def test_prepared_rows_cross_the_pipe_unchanged(
    world: PlatformDatabase, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    """The helper sends plain tuples; the reader gets back the same rows, snapshots and events
    (in the stored form), whether the helper made stored-form events or parsed ones."""
    reader = make_reader(example_source(page_size=30))
    now = runtime.clock.now()
    for name in ("patients", "orders"):
        model = reader.source.model(name)
        changes = reader.row_changes(model)
        rows = next(iter(reader.pages.walk(model, None, full=True)))
        for stored_form in (True, False):
            prepared = [prepare_row(changes, r, None, now, stored_form=stored_form) for r in rows]
            sent = pickle.dumps([to_wire(p) for p in prepared])
            back = [from_wire(t) for t in pickle.loads(sent)]  # noqa: S301 (our own bytes)
            assert len(back) == len(prepared) > 0
            for p, b in zip(prepared, back, strict=True):
                assert (b.key, b.row, b.before, b.snapshot) == (p.key, p.row, p.before, p.snapshot)
                assert (b.rejected, b.deferred) == (p.rejected, p.deferred)
                want = [e if isinstance(e, ParsedEvent) else ParsedEvent.of(e) for e in p.events]  # type: ignore[arg-type]
                assert b.events == want and want
    # A snapshot from before goes across too (an update, not a first read).
    reader.run(parallel=False)
    model = reader.source.model("patients")
    rows = next(iter(reader.pages.walk(model, None, full=True)))
    before = reader.checkpoints.snapshots(model, [r[model.primary_key] for r in rows])
    p = prepare_row(reader.row_changes(model), rows[0], before[rows[0][model.primary_key]], now)
    assert p.before is not None and from_wire(to_wire(p)).before == p.before


def test_a_page_asked_for_past_the_end_of_a_walk_is_none_not_a_new_walk(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    """The reader keeps PAGES_AHEAD pages asked for; those asked past the end must not start
    the walk over (that would read the model again from its first page)."""
    reader = make_reader(example_source(page_size=5))
    source = reader.source
    keys = {m.name: digest_key(runtime.blind_index(), source.name, m.name) for m in source.models}
    from telecrm.sources.platform_db import platform_engine

    setup = helper_setup(
        source, platform_engine(source, {source.url_env: platform_url}), runtime.engine, keys
    )
    assert setup is not None
    helper = _Helper(setup)
    now = runtime.clock.now()
    pages = 0
    while helper.next_page(1, "patients", None, False, now, False) is not None:
        pages += 1
    assert pages > 1
    assert PAGES_AHEAD >= 2
    for _ in range(PAGES_AHEAD):
        assert helper.next_page(1, "patients", None, False, now, False) is None
    # Another walk of the same model is a walk of its own, from its first page.
    assert helper.next_page(2, "patients", None, False, now, False)
