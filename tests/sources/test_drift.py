"""Schema drift stops the one model it touches, with a message naming model, column and change."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.drift import check_drift
from telecrm.sources.errors import SchemaDrift
from telecrm.sources.tables import source_checkpoints
from tests.sources.conftest import SMALL_WORLD, ReaderFactory, sql

BEFORE = {
    "id": "text",
    "status": "text",
    "amount": "numeric",
    "updated_at": "timestamp with time zone",
}


def test_a_vanished_column_is_named() -> None:
    after = {k: v for k, v in BEFORE.items() if k != "status"}
    with pytest.raises(SchemaDrift, match=r"model 'orders': column 'status' vanished"):
        check_drift("orders", ["id", "status"], BEFORE, after)


def test_a_column_in_the_same_place_with_the_same_type_reads_as_a_rename() -> None:
    after = {
        "id": "text",
        "state": "text",
        "amount": "numeric",
        "updated_at": "timestamp with time zone",
    }
    with pytest.raises(SchemaDrift, match=r"'status' vanished and a new column 'state' .*renamed"):
        check_drift("orders", ["id", "status"], BEFORE, after)


def test_a_changed_type_is_named_with_both_types() -> None:
    after = {**BEFORE, "amount": "text"}
    with pytest.raises(SchemaDrift, match=r"column 'amount' changed type from numeric to text"):
        check_drift("orders", ["amount"], BEFORE, after)


def test_changes_to_columns_the_model_does_not_read_are_ignored() -> None:
    check_drift("orders", ["id"], BEFORE, {"id": "text", "brand_new": "jsonb"})


def test_drift_stops_that_model_and_the_others_keep_running(
    world: PlatformDatabase, platform_url: str, make_reader: ReaderFactory, runtime: Runtime
) -> None:
    reader = make_reader()
    reader.run()
    world.advance(SMALL_WORLD.end)  # new rows in every table
    sql(platform_url, "ALTER TABLE consultations RENAME COLUMN condition_area TO care_area")
    sql(platform_url, "ALTER TABLE orders ALTER COLUMN total TYPE text")
    report = reader.run()
    stopped = {m.model: m.stopped for m in report.models if m.stopped}
    assert set(stopped) == {"consultations", "orders"}
    assert (
        "column 'condition_area' vanished and a new column 'care_area'" in stopped["consultations"]
    )
    assert "column 'total' changed type from numeric to text" in stopped["orders"]
    running = {m.model: m.events for m in report.models if not m.stopped}
    assert running["patients"] > 0 and running["prescriptions"] > 0
    with runtime.engine.connect() as conn:
        reasons = dict(
            conn.execute(
                select(source_checkpoints.c.model, source_checkpoints.c.stopped_reason)
            ).all()
        )
    assert "renamed?" in reasons["consultations"] and reasons["patients"] is None
    # Put the column back: the model goes on from its checkpoint, nothing lost.
    sql(platform_url, "ALTER TABLE consultations RENAME COLUMN care_area TO condition_area")
    resumed = {m.model: m for m in reader.run().models}
    assert resumed["consultations"].stopped is None and resumed["consultations"].events > 0
    assert resumed["orders"].stopped is not None
