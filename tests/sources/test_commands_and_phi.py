"""`telecrm sources ...` as an operator runs them, and canary PHI planted in the platform database
that must never come out in plain text: not in output, logs, errors, checkpoints or snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from telecrm.ingest.tables import events
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.tables import source_checkpoints, source_row_snapshots
from tests.sources.conftest import EXAMPLE, newest, sql
from tests.support.builders import (
    CANARY_EMAIL,
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_MEDICATION,
    CANARY_PHONE,
    MASTER_KEY,
)

CANARIES = (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE, CANARY_MEDICATION)


@pytest.fixture
def env(
    engine: Engine, platform_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setattr(cli_support.console, "width", 240)
    monkeypatch.setattr(cli_support.err_console, "width", 240)
    return {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
        "TELECRM_PLATFORM_DATABASE_URL": platform_url,
        "TELECRM_SOURCES_FILE": str(EXAMPLE),
    }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, ["sources", *args], env=env)


@pytest.fixture
def canaries(world: PlatformDatabase, platform_url: str) -> str:
    """A patient whose every value is a canary, with a prescription for a canary medication, and
    a patient whose email the intake refuses (the rejection must not quote it)."""
    at = newest(platform_url, "patients")
    sql(
        platform_url,
        "INSERT INTO patients (id, first_name, last_name, email, phone, created_at,"
        " updated_at) VALUES ('pat_canary', %s, %s, %s, %s, %s, %s)",
        (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE, at, at),
    )
    sql(
        platform_url,
        "INSERT INTO patients (id, first_name, last_name, email, created_at,"
        " updated_at) VALUES ('pat_bad_email', %s, %s, %s, %s, %s)",
        (CANARY_FIRST, CANARY_LAST, f"{CANARY_LAST} at nowhere", at, at),
    )
    sql(
        platform_url,
        "INSERT INTO prescriptions (id, patient_id, status, approved_at, days_supply,"
        " refills, created_at, updated_at) VALUES ('rx_canary', 'pat_canary', 'approved', %s, 30, 0,"
        " %s, %s)",
        (at, at, at),
    )
    sql(
        platform_url,
        "INSERT INTO prescription_items (id, prescription_id, medication, days_supply,"
        " created_at, updated_at) VALUES ('rx_canary-1', 'rx_canary', %s, 30, %s, %s)",
        (CANARY_MEDICATION, at, at),
    )
    return "pat_canary"


def assert_no_canary(where: str, blob: str | bytes) -> None:
    data = blob if isinstance(blob, str) else blob.decode("latin-1")
    for canary in CANARIES:
        assert canary not in data, f"canary PHI in {where}"


def test_list_check_preview_and_run(env: dict[str, str], world: PlatformDatabase) -> None:
    listed = run(env, "list")
    assert listed.exit_code == 0, listed.output
    assert "patients" in listed.output and "never run" in listed.output
    checked = run(env, "check", "platform")
    assert checked.exit_code == 1  # the test server's role is a superuser
    assert "ok   model orders: all 10 columns found" in checked.output
    assert "FAIL read-only role: the role can write: the role is a superuser" in checked.output
    preview = run(env, "preview", "platform", "--limit", "5")
    assert preview.exit_code == 0, preview.output
    assert "patient.registered" in preview.output and "nothing was stored" in preview.output
    first = run(env, "run", "platform", "--no-process")
    assert first.exit_code == 0, first.output
    assert "patients" in first.output and "new events" in first.output
    again = run(env, "run", "platform", "--no-process")
    assert "platform: 0 new events" in again.output
    following = run(
        env, "run", "platform", "--follow", "--cdc", "--interval", "0.1", "--max-rounds", "2"
    )
    assert following.exit_code == 0, following.output
    assert "polling: the server runs wal_level=replica" in following.output
    missing = run(env, "run", "nowhere")
    assert missing.exit_code == 2 and "no source named 'nowhere'" in missing.output


@pytest.mark.parametrize("where", ["--no-parallel", "--parallel"])
def test_canary_phi_never_leaves_in_plain_text(
    env: dict[str, str],
    engine: Engine,
    canaries: str,
    platform_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
) -> None:
    """Also with the rows prepared in the helper process: its refusals and its failed query
    reach the reader as keys and SQLSTATEs, never values."""
    preview = run(env, "preview", "platform", "--limit", "1000")
    assert preview.exit_code == 0, preview.output
    assert "pat_canary" in preview.output and "[redacted]" in preview.output
    assert_no_canary("preview", preview.output)
    result = run(env, "run", "platform", "--no-process", where)
    assert result.exit_code == 0, result.output
    assert "pat_bad_email" in result.output and "invalid_data" in result.output  # named, by key
    assert_no_canary("run output", result.output)
    # A model whose query fails on a canary value: the error names the model, not the value.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        EXAMPLE.read_text().replace(
            "ON i.prescription_id = p.id",
            "ON i.prescription_id = p.id WHERE (CASE WHEN p.id = 'rx_canary' THEN i.medication::int"
            " ELSE 0 END) >= 0",
        )
    )
    failed = run(
        {**env, "TELECRM_SOURCES_FILE": str(broken)},
        "run",
        "platform",
        "--no-process",
        "--full",
        where,
    )
    assert failed.exit_code == 1
    assert "model 'prescriptions': the model's query failed (SQLSTATE 22P02)" in failed.output
    assert_no_canary("failed run", failed.output)
    captured = capsys.readouterr()
    assert_no_canary("logs", captured.out + captured.err)
    with engine.connect() as conn:
        for table in (source_checkpoints, source_row_snapshots):
            for row in conn.execute(select(table)):
                assert_no_canary(table.name, repr(tuple(row)))
        for (payload,) in conn.execute(select(events.c.payload)):
            assert_no_canary("event payloads", bytes(payload))
        (seen,) = conn.execute(
            text("SELECT count(*) FROM source_row_snapshots WHERE row_key = 'pat_canary'")
        ).one()
    assert seen == 1
