"""Clock skew between the platform database and telecrm: the platform's clock runs hours ahead
of telecrm's, or hours behind. No row is lost, none emits its event twice, and the safety window
is measured on the database's clock (its own `updated_at` values), never on telecrm's."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.ingest.tables import events
from telecrm.simulate.to_postgres import PlatformDatabase
from tests.sources.conftest import ReaderFactory, first_patient, sql

SKEWS = {"database_3h_ahead": timedelta(hours=3), "database_3h_behind": timedelta(hours=-3)}


def _ticket(url: str, ticket: str, patient: str, stamped: datetime) -> None:
    """A row written by the platform, stamped by the platform's (skewed) clock."""
    sql(
        url,
        "INSERT INTO support_tickets (id, patient_id, category, priority, status, created_at,"
        " updated_at) VALUES (%s, %s, 'billing', 'normal', 'open', %s, %s)",
        (ticket, patient, stamped, stamped),
    )


def _skew_events(runtime: Runtime) -> dict[str, int]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.event_id, events.c.occurred_us).where(
                events.c.event_id.like("db:platform:support_tickets:tkt_skew_%")
            )
        ).all()
    return {event_id: occurred for event_id, occurred in rows}


@pytest.mark.parametrize("skew", SKEWS.values(), ids=SKEWS.keys())
def test_clock_skew_loses_no_row_and_emits_no_event_twice(
    skew: timedelta,
    world: PlatformDatabase,
    platform_url: str,
    make_reader: ReaderFactory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    reader = make_reader()
    reader.run()  # the initial load
    patient = first_patient(platform_url)
    db_now = clock.now() + skew  # what the platform's now() says while telecrm's says clock.now()

    _ticket(platform_url, "tkt_skew_1", patient, db_now)
    assert reader.run().events == 1
    tickets = next(m for m in reader.source.models if m.name == "support_tickets")
    assert reader.checkpoints.state(tickets).cursor == db_now  # the database's clock, as it said

    # A transaction that stamped its row two minutes earlier on the platform's clock commits
    # only now: inside the 5-minute window counted back from the database's high-water mark.
    # (Counted back from telecrm's clock, a database 3 hours behind would never see it.)
    _ticket(platform_url, "tkt_skew_2", patient, db_now - timedelta(minutes=2))
    clock.advance(timedelta(seconds=30))
    _ticket(platform_url, "tkt_skew_3", patient, db_now + timedelta(seconds=30))
    assert reader.run().events == 2

    assert reader.run().events == 0
    assert reader.run(full=True).events == 0  # the key diff finds nothing missing either
    stored = _skew_events(runtime)
    assert set(stored) == {f"db:platform:support_tickets:tkt_skew_{i}:created" for i in (1, 2, 3)}
    # An instant from telecrm's future is stored as now, not refused; a past one as it was.
    assert all(occurred <= to_micros(clock.now()) for occurred in stored.values())
    if skew < timedelta(0):
        assert stored["db:platform:support_tickets:tkt_skew_1:created"] == to_micros(db_now)
