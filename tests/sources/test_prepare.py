"""Pages prepared a page ahead in a helper process: what the reader checks before it stores."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.ingest.tables import events
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.prepare import prepare_row, reconcile
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
