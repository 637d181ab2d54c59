"""The reader end to end: the simulator's platform database in, telecrm's events out, exactly once.

The platform database is always PostgreSQL; telecrm's own store runs on SQLite and PostgreSQL
(the `runtime` fixture)."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.bulk_gc import YOUNG_THRESHOLD
from telecrm.ingest.tables import events
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.tables import source_checkpoints
from tests.sources.conftest import (
    SMALL_WORLD,
    ReaderFactory,
    example_source,
    first_patient,
    move_first_patient,
    newest,
    sql,
)


def stored_types(runtime: Runtime) -> Counter[str]:
    with runtime.engine.connect() as conn:
        return Counter(
            dict(
                conn.execute(
                    select(events.c.type, func.count())
                    .where(events.c.source == "database")
                    .group_by(events.c.type)
                ).all()
            )
        )


def expected_types(url: str) -> Counter[str]:
    """What the platform's rows say happened, counted in SQL on the platform database."""
    q = {
        "patient.registered": "SELECT count(*) FROM patients",
        "consultation.submitted": "SELECT count(*) FROM consultations",
        "consultation.assigned": "SELECT count(*) FROM consultations WHERE assigned_at IS NOT NULL",
        "consultation.accepted": "SELECT count(*) FROM consultations WHERE status = 'accepted'",
        "prescription.approved": "SELECT count(*) FROM prescriptions",
        "order.paid": "SELECT count(*) FROM orders WHERE paid_at IS NOT NULL",
        "subscription.started": "SELECT count(*) FROM subscriptions",
        "subscription.cancelled": "SELECT count(*) FROM subscriptions WHERE status = 'cancelled'",
        "treatment_plan.updated": "SELECT count(*) + count(*) FILTER (WHERE status = 'completed') FROM treatment_plans",
        "support_ticket.created": "SELECT count(*) FROM support_tickets",
    }
    return Counter({t: sql(url, s)[0][0] for t, s in q.items() if sql(url, s)[0][0]})


@pytest.fixture(params=[False, True], ids=["prepared-here", "prepared-by-helper"])
def parallel(request: pytest.FixtureRequest) -> bool:
    """Pages prepared in the reader, or a page ahead in a helper process (prepare.py)."""
    return bool(request.param)


def test_initial_load_emits_what_the_rows_record_and_a_rerun_emits_nothing(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    parallel: bool,
) -> None:
    reader = make_reader(example_source(page_size=50))
    first = reader.run(parallel=parallel)
    assert not first.stopped
    assert stored_types(runtime) == expected_types(platform_url)
    assert reader.run(full=True, parallel=parallel).events == 0
    again = reader.run()
    assert again.events == 0
    assert sum(m.changed for m in again.models) == 0  # the safety window re-read, hashes matched


def test_simulated_time_moving_on_emits_only_the_changes(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    world.advance(SMALL_WORLD.end)
    later = reader.run()
    assert later.events > 0
    assert stored_types(runtime) == expected_types(platform_url)
    assert reader.run().events == 0


def test_a_crash_between_read_and_commit_loses_nothing_and_stores_nothing_twice(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    parallel: bool,
) -> None:
    small_pages = example_source(page_size=7)
    crashed: list[tuple[str, int]] = []

    def crash_on_third_page_of_patients(model: str, page: int) -> None:
        if model == "patients" and page == 3 and not crashed:
            crashed.append((model, page))
            raise RuntimeError("killed between read and commit")

    with pytest.raises(RuntimeError, match="killed"):
        make_reader(small_pages, after_read=crash_on_third_page_of_patients).run(parallel=parallel)
    partial = stored_types(runtime)
    # Pages of a long read double: the pages of 7 and 14 landed, the third (28) did not.
    assert partial["patient.registered"] == 7 + 14
    assert partial["consultation.submitted"] == 0
    rerun = make_reader(small_pages).run(parallel=parallel)
    assert stored_types(runtime) == expected_types(platform_url)
    assert sum(m.duplicates for m in rerun.models) == 0  # nothing from the lost page was stored


def test_a_status_change_emits_its_event_once(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    high = newest(platform_url, "consultations")
    cid = first_patient(platform_url)
    sql(
        platform_url,
        "INSERT INTO consultations (id, patient_id, status, created_at, updated_at)"
        " VALUES ('con_new', %s, 'pending', %s, %s)",
        (cid, high, high),
    )
    assert reader.run().events == 1  # consultation.submitted
    sql(
        platform_url,
        "UPDATE consultations SET status = 'assigned', provider_id = 'prov_0001',"
        " assigned_at = %s, updated_at = %s WHERE id = 'con_new'",
        (high, high + timedelta(seconds=1)),
    )
    sql(
        platform_url,
        "UPDATE consultations SET status = 'accepted', accepted_at = %s,"
        " updated_at = %s WHERE id = 'con_new'",
        (high, high + timedelta(seconds=2)),
    )
    report = reader.run()
    assert report.events == 2  # assigned, accepted
    with runtime.engine.connect() as conn:
        ids = set(
            conn.execute(
                select(events.c.event_id).where(
                    events.c.event_id.like("db:platform:consultations:con_new:%")
                )
            ).scalars()
        )
    assert ids == {
        f"db:platform:consultations:con_new:{s}" for s in ("created", "assigned", "accepted")
    }
    assert reader.run(full=True).events == 0


def test_a_late_commit_inside_the_safety_window_is_read_and_an_older_one_by_the_full_scan(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    high = newest(platform_url, "consultations")
    pid = first_patient(platform_url)

    def commit_late(cid: str, stamped: timedelta) -> None:
        # A transaction that stamped updated_at earlier commits only now.
        at = high - stamped
        sql(
            platform_url,
            "INSERT INTO consultations (id, patient_id, status, created_at,"
            " updated_at) VALUES (%s, %s, 'pending', %s, %s)",
            (cid, pid, at, at),
        )

    commit_late("con_late", timedelta(minutes=2))  # inside the 5-minute window
    assert reader.run().events == 1
    commit_late("con_very_late", timedelta(days=1))  # far behind: the key diff's full scan
    assert reader.run().events == 0
    assert reader.run(full=True).events == 1


def test_equal_cursor_values_across_page_boundaries_and_null_cursors_are_all_read(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    sql(platform_url, "ALTER TABLE support_tickets ALTER COLUMN updated_at DROP NOT NULL")
    pid = first_patient(platform_url)
    high = newest(platform_url, "patients")
    for i in range(10):  # ten rows sharing one updated_at, read three to a page
        sql(
            platform_url,
            "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
            " created_at, updated_at) VALUES (%s, %s, 'billing', 'normal', 'open', %s, %s)",
            (f"tkt_same_{i}", pid, high, high),
        )
    sql(
        platform_url,
        "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
        " created_at, updated_at) VALUES ('tkt_null', %s, 'billing', 'normal', 'open', %s, NULL)",
        (pid, high),
    )
    reader = make_reader(example_source(page_size=3))
    reader.run()
    with runtime.engine.connect() as conn:
        ids = set(
            conn.execute(
                select(events.c.event_id).where(events.c.type == "support_ticket.created")
            ).scalars()
        )
    assert {f"db:platform:support_tickets:tkt_same_{i}:created" for i in range(10)} <= ids
    assert "db:platform:support_tickets:tkt_null:created" in ids
    assert reader.run().events == 0


def test_soft_delete_emits_patient_deleted(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    high = newest(platform_url, "patients")
    pid = first_patient(platform_url)
    sql(
        platform_url,
        "UPDATE patients SET deleted_at = %s, updated_at = %s WHERE id = %s",
        (high, high + timedelta(seconds=1), pid),
    )
    assert reader.run().events == 1
    assert stored_types(runtime)["patient.deleted"] == 1


def test_a_changed_mapped_field_emits_patient_updated_with_only_that_field(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    move_first_patient(platform_url)
    assert reader.run().events == 1

    with runtime.engine.connect() as conn:
        (count,) = conn.execute(
            select(func.count()).where(events.c.type == "patient.updated")
        ).one()
    assert count == 1


def test_hard_deletes_are_found_by_the_key_diff_and_a_reinsert_is_a_new_row(
    platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    from telecrm.sources.config import load_sources

    sql(
        platform_url,
        "CREATE TABLE members (member_no int PRIMARY KEY, pid text NOT NULL,"
        " first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL,"
        " joined_at timestamptz NOT NULL)",
    )
    for i in range(5):
        sql(
            platform_url,
            "INSERT INTO members VALUES (%s, %s, 'Ann', 'Lee', %s, '2025-01-02')",
            (i, f"pat_m{i}", f"ann{i}@example.org"),
        )
    text = """
version: 1
sources:
  - name: crm_db
    url_env: TELECRM_PLATFORM_DATABASE_URL
    models:
      - name: members
        table: members
        primary_key: member_no
        patient_id: pid
        created_at: joined_at
        fields: {first_name: first_name, last_name: last_name, email: email}
        on_insert: {type: patient.registered}
        on_delete: {type: patient.deleted}
"""
    source = load_sources("members.yaml", text=text).source("crm_db")
    reader = make_reader(source)
    assert reader.run().events == 5
    sql(platform_url, "DELETE FROM members WHERE member_no = 3")
    report = reader.run()
    assert report.models[0].deleted == 1 and report.events == 1
    sql(
        platform_url,
        "INSERT INTO members VALUES (3, 'pat_m3', 'Ann', 'Lee', 'ann3@example.org', '2025-01-02')",
    )
    again = reader.run()
    # A new generation of row 3: a new event id (g1), which the intake knows as the same fact.
    assert again.models[0].changed == 1 and again.models[0].duplicates == 1
    with runtime.engine.connect() as conn:
        (full_scan_us,) = conn.execute(select(source_checkpoints.c.last_full_scan_us)).one()
    assert full_scan_us is not None


def test_rows_of_an_unregistered_patient_wait_and_are_not_lost(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    high = newest(platform_url, "patients")
    sql(platform_url, "ALTER TABLE support_tickets DROP CONSTRAINT support_tickets_patient_id_fkey")
    sql(
        platform_url,
        "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
        " created_at, updated_at) VALUES ('tkt_orphan', 'pat_later', 'billing', 'normal', 'open', %s, %s)",
        (high, high + timedelta(seconds=5)),
    )
    held = reader.run()
    assert held.events == 0 and sum(m.held for m in held.models) == 1
    sql(
        platform_url,
        "INSERT INTO patients (id, first_name, last_name, email, created_at, updated_at)"
        " VALUES ('pat_later', 'Bo', 'Diaz', 'bo@example.org', %s, %s)",
        (high, high + timedelta(hours=1)),
    )
    assert reader.run().events == 2  # patient.registered, then the ticket that waited


def test_a_database_restart_mid_read_is_survived_without_loss_or_duplicates(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    parallel: bool,
) -> None:
    killed: list[tuple[object, ...]] = []

    def restart(model: str, page: int) -> None:
        if model == "patients" and page == 2:  # every source connection dies, as in a restart
            # Only this test's database: the other test workers' sources are not restarted.
            killed[:] = sql(
                platform_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'telecrm-source' AND datname = current_database()",
            )

    make_reader(example_source(page_size=5), after_read=restart).run(parallel=parallel)
    assert killed and all(ok for (ok,) in killed)
    assert stored_types(runtime) == expected_types(platform_url)


def test_a_query_slower_than_the_statement_timeout_stops_only_its_model(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    parallel: bool,
) -> None:
    source = example_source()
    slow = source.model("prescriptions").model_copy(
        update={
            "query": source.model("prescriptions").query.replace(  # type: ignore[union-attr]
                "JOIN prescription_items i",
                "JOIN (SELECT *, pg_sleep(0.5) AS z FROM prescription_items) i",
            )
        }
    )
    models = tuple(slow if m.name == "prescriptions" else m for m in source.models)
    report = make_reader(
        source.model_copy(update={"models": models, "statement_timeout_seconds": 0.2})
    ).run(parallel=parallel)
    stopped = {m.model: m.stopped for m in report.models if m.stopped}
    assert list(stopped) == ["prescriptions"]
    assert "longer than the statement timeout (0.2 s)" in stopped["prescriptions"]
    assert stored_types(runtime)["order.paid"] == expected_types(platform_url)["order.paid"]


def test_what_webhooks_already_delivered_is_the_same_fact_from_the_database(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    """The platform's webhooks and its database tell the same story: after the webhook stream
    up to the same instant, the source adds nothing."""
    from telecrm.domain.events import FACT_FIELDS, parse_event
    from telecrm.simulate.generator import Simulation

    cut = world.applied_until
    assert cut is not None
    wire = [e for e in Simulation(SMALL_WORLD).events() if e["occurred_at"] <= cut.isoformat()]
    batch = [parse_event(e, now=runtime.clock.now()) for e in wire]
    runtime.intake().accept(batch, source="webhook", actor="test", unknown_patients="skip")
    report = make_reader().run()
    assert sum(m.duplicates for m in report.models) > 0
    # Every row change is a fact the webhooks already stated (a plan's created / completed /
    # discontinued status is one fact; only its recurring "updated" status is keyless).
    assert set(stored_types(runtime)) == set()
    assert "treatment_plan.updated" in FACT_FIELDS


def test_snapshots_of_the_first_digest_scheme_are_still_compared_exactly(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    parallel: bool,
) -> None:
    """Snapshots written with HMAC digests (before BLAKE2b) are compared with the old scheme: an
    unchanged row is still a re-read, a change still fires once, and the new snapshot is BLAKE2b."""
    from telecrm.sources import reader as reader_module
    from telecrm.sources.changes import DIGEST_SCHEME, LegacyDigester, RowChanges
    from telecrm.sources.tables import source_row_snapshots

    old = make_reader()

    def legacy_changes(model):  # type: ignore[no-untyped-def]
        digester = LegacyDigester(runtime.blind_index(), old.source.name, model)
        return RowChanges(old.source.name, model, digester, runtime.clock.now)

    monkeypatch.setattr(old, "row_changes", legacy_changes)
    assert old.run().events > 0
    with runtime.engine.connect() as conn:
        digests = list(conn.execute(select(source_row_snapshots.c.row_digest)).scalars())
    assert digests and not any(d.startswith(DIGEST_SCHEME) for d in digests)

    # A change made while the old snapshots are all there is: the new reader must see it.
    pid = move_first_patient(platform_url)
    reader = make_reader()
    assert reader_module.SourceReader is type(reader)
    # The helper has no blind-index key: it leaves these rows to the reader.
    assert reader.run(full=True, parallel=parallel).events == 1  # patient.updated only
    with runtime.engine.connect() as conn:
        (updated,) = conn.execute(
            select(func.count()).where(events.c.type == "patient.updated")
        ).one()
        digest = conn.execute(
            select(source_row_snapshots.c.row_digest).where(
                source_row_snapshots.c.model == "patients", source_row_snapshots.c.row_key == pid
            )
        ).scalar_one()
    assert updated == 1
    assert digest.startswith(DIGEST_SCHEME)
    assert reader.run(full=True).events == 0


def test_a_connection_killed_while_its_query_runs_is_read_again_once(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    parallel: bool,
) -> None:
    """The server drops the connection in the middle of a page's query (a restart, a killed
    backend): the page is read again on a new connection, and nothing is lost or doubled."""
    source = example_source()
    slow = source.model("support_tickets").model_copy(
        update={
            "table": None,
            # One 0.4 s sleep per execution (not per row): time enough to be caught running.
            "query": "SELECT t.* FROM support_tickets t, (SELECT pg_sleep(0.4)) AS s",
        }
    )
    models = tuple(slow if m.name == "support_tickets" else m for m in source.models)
    killed: list[tuple[object, ...]] = []

    def kill_the_running_query() -> None:
        for _ in range(200):
            rows = sql(
                platform_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'telecrm-source' AND datname = current_database()"
                " AND state = 'active' AND strpos(query, 'pg_sleep(0.4)') > 0",
            )
            if rows:
                killed[:] = rows
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_running_query)
    killer.start()
    report = make_reader(source.model_copy(update={"models": models})).run(parallel=parallel)
    killer.join()
    assert killed and all(ok for (ok,) in killed)
    assert not report.stopped
    assert stored_types(runtime) == expected_types(platform_url)
    assert sum(m.duplicates for m in report.models) == 0


@pytest.mark.parametrize("full", [False, True], ids=["by-cursor", "by-key"])
def test_pages_of_a_long_read_double_up_to_the_cap_and_read_every_row_once(
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    monkeypatch: pytest.MonkeyPatch,
    full: bool,
) -> None:
    """Fewer, larger commits on a long read: pages start at page_size and double up to
    GROWN_PAGE_ROWS; the keyset boundaries between pages of different sizes lose no row and
    repeat none."""
    from telecrm.sources import pages as pages_module

    monkeypatch.setattr(pages_module, "GROWN_PAGE_ROWS", 10)
    reader = make_reader(example_source(page_size=3))
    model = reader.source.model("patients")
    sizes, keys = [], []
    for page in reader.pages.walk(model, None, full=full):
        sizes.append(len(page))
        keys += [r[model.primary_key] for r in page]
    (total,) = sql(platform_url, "SELECT count(*) FROM patients")[0]
    assert len(keys) == len(set(keys)) == total > 20
    assert sizes[:3] == [3, 6, 10]
    assert all(s <= 10 for s in sizes)


def test_a_run_collects_garbage_less_often_while_it_reads_and_restores_the_collector(
    world: PlatformDatabase, make_reader: ReaderFactory
) -> None:
    before = gc.get_threshold()
    during: list[int] = []
    make_reader(after_read=lambda model, page: during.append(gc.get_threshold()[0])).run(
        parallel=False
    )
    assert during and min(during) >= YOUNG_THRESHOLD
    assert gc.get_threshold() == before
