"""`telecrm simulate --to-postgres`: the platform's own tables, moving through simulated time."""

from __future__ import annotations

from datetime import timedelta

from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.simulate.to_postgres import PlatformDatabase
from tests.sources.conftest import SMALL_WORLD, newest, sql


def test_the_world_lands_in_platform_shaped_tables(
    world: PlatformDatabase, platform_url: str
) -> None:
    for table in (
        "patients",
        "providers",
        "consultations",
        "orders",
        "order_items",
        "prescriptions",
        "prescription_items",
        "treatment_plans",
    ):
        assert sql(platform_url, f"SELECT count(*) FROM {table}")[0][0] > 0, table
    (bad,) = sql(platform_url, "SELECT count(*) FROM consultations WHERE updated_at < created_at")[
        0
    ]
    assert bad == 0


def test_advancing_moves_updated_at_and_adds_rows(
    world: PlatformDatabase, platform_url: str
) -> None:
    before = newest(platform_url, "patients")
    (orders_before,) = sql(platform_url, "SELECT count(*) FROM orders")[0]
    report = world.advance(SMALL_WORLD.end)
    assert report.events_applied > 0
    after = newest(platform_url, "patients")
    (orders_after,) = sql(platform_url, "SELECT count(*) FROM orders")[0]
    assert after > before and orders_after > orders_before
    assert world.applied_until == SMALL_WORLD.end


def test_a_later_run_with_the_same_seed_goes_on_where_the_last_stopped(platform_url: str) -> None:
    half = SMALL_WORLD.start_at + timedelta(days=40)
    first = PlatformDatabase(platform_url, SMALL_WORLD)
    first.create()
    first.advance(half)
    second = PlatformDatabase(platform_url, SMALL_WORLD)
    second.create()  # reads simulation_state: skips what the first applied
    second.advance()
    resumed = sql(
        platform_url, "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM consultations t"
    )
    again = PlatformDatabase(platform_url, SMALL_WORLD)
    again.create(reset=True)
    again.advance()
    in_one_go = sql(
        platform_url, "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM consultations t"
    )
    assert resumed == in_one_go


def test_the_command_writes_the_tables_and_reports_counts(platform_url: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--to-postgres",
            platform_url,
            "--patients",
            "20",
            "--months",
            "2",
            "--until",
            "2025-02-01",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "events up to 2025-02-01 00:00 UTC" in result.output and "patients" in result.output
    clash = CliRunner().invoke(
        app, ["simulate", "--to-postgres", platform_url, "--patients", "21", "--no-progress"]
    )
    assert clash.exit_code == 1 and "another simulated world" in clash.output
