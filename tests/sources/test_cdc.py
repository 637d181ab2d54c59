"""Change capture through logical replication, on a throwaway cluster at wal_level=logical; and
the fallback to polling on a server that cannot create a slot."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from telecrm.bootstrap import Runtime
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.cdc import LogicalCapture
from telecrm.sources.config import SourceConfig
from telecrm.sources.platform_db import platform_engine
from telecrm.sources.reader import SourceReader
from tests.sources.conftest import SMALL_WORLD, example_source, first_patient, sql
from tests.support import postgres


@pytest.fixture(scope="module")
def logical_server() -> Iterator[str]:
    """A private PostgreSQL cluster with wal_level=logical (the shared one runs at replica)."""
    with postgres.logical_cluster() as url:
        if url is None:
            pytest.fail("no PostgreSQL binaries to start a wal_level=logical cluster")
        yield url


@pytest.fixture
def logical_platform(logical_server: str) -> Iterator[str]:
    name = f"platform_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    with psycopg.connect(logical_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = logical_server.rsplit("/", 1)[0] + "/" + name
    yield url
    with psycopg.connect(logical_server, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE database = %s",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def month_one(url: str) -> tuple[PlatformDatabase, SourceConfig, Engine]:
    """The small world's first month written to the logical-replication cluster, the example
    source, and an engine on it."""
    world = PlatformDatabase(url, SMALL_WORLD, batch=300)
    world.create()
    world.advance(SMALL_WORLD.start_at + timedelta(days=30))
    source = example_source()
    return world, source, platform_engine(source, {source.url_env: url})


def test_changes_arrive_through_the_slot_exactly_once(
    logical_platform: str, runtime: Runtime
) -> None:
    world, source, engine = month_one(logical_platform)
    reader = SourceReader(
        source, engine, runtime.engine, runtime.intake(), runtime.blind_index(), runtime.clock
    )
    registry = CollectorRegistry()
    capture = LogicalCapture(source, engine, reader, registry=registry)
    assert capture.start() is None
    initial = reader.run()  # the initial load polls; the slot already records what follows
    assert initial.events > 0
    world.advance(SMALL_WORLD.start_at + timedelta(days=45))
    (orders_paid,) = sql(logical_platform, "SELECT count(*) FROM orders")[0]
    captured = capture.poll()
    assert captured.transactions > 0 and captured.events > 0
    assert capture.polled == ["prescriptions"]  # a query model: polled beside the slot
    assert reader.run(models=capture.polled).events > 0
    assert capture.poll().events == 0  # the slot was advanced past what was stored
    assert reader.run().events == 0  # polling finds nothing the capture missed
    with runtime.engine.connect() as conn:
        from sqlalchemy import func, select

        from telecrm.ingest.tables import events

        (paid,) = conn.execute(select(func.count()).where(events.c.type == "order.paid")).one()
    assert paid == orders_paid
    assert (
        registry.get_sample_value("telecrm_source_slot_lag_bytes", {"source": "platform"})
        is not None
    )
    pid = first_patient(logical_platform)
    sql(
        logical_platform,
        "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
        " created_at, updated_at) VALUES ('tkt_cdc', %s, 'billing', 'normal', 'open', now(), now())",
        (pid,),
    )
    assert capture.poll().events == 1
    engine.dispose()


def test_a_crash_before_the_slot_advances_replays_nothing_twice(
    logical_platform: str, runtime: Runtime
) -> None:
    world, source, engine = month_one(logical_platform)

    def reader(**kwargs: object) -> SourceReader:
        return SourceReader(
            source,
            engine,
            runtime.engine,
            runtime.intake(),
            runtime.blind_index(),
            runtime.clock,
            **kwargs,  # type: ignore[arg-type]
        )

    assert LogicalCapture(source, engine, reader()).start() is None
    reader().run()
    world.advance(SMALL_WORLD.end)

    def crash(model: str, page: int) -> None:
        if model == "orders":
            raise RuntimeError("killed after some models were stored, before the slot advanced")

    with pytest.raises(RuntimeError, match="killed"):
        LogicalCapture(source, engine, reader(after_read=crash)).poll()
    again = LogicalCapture(source, engine, reader())
    replay = again.poll()
    assert replay.events > 0
    assert {m.model: m.duplicates for m in replay.models}["patients"] == 0  # re-read, not re-sent
    (orders,) = sql(logical_platform, "SELECT count(*) FROM orders")[0]
    with runtime.engine.connect() as conn:
        from sqlalchemy import func, select

        from telecrm.ingest.tables import events

        (paid,) = conn.execute(select(func.count()).where(events.c.type == "order.paid")).one()
    assert paid == orders
    assert again.poll().events == 0
    engine.dispose()


def test_without_logical_replication_it_says_why_and_the_caller_polls(
    world: PlatformDatabase, platform_url: str, make_reader
) -> None:
    source = example_source()
    engine = platform_engine(source, {source.url_env: platform_url})
    reason = LogicalCapture(source, engine, make_reader()).start()
    assert reason is not None and "wal_level=logical" in reason
    engine.dispose()
