"""The `telecrm` commands as an operator uses them: clear output, one red line on failure."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from tests.support.builders import MASTER_KEY, customer_journey

DAY = timedelta(days=1)


@pytest.fixture
def env(engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # Rich sizes tables to the terminal it found at import; give it room so values are not cut.
    monkeypatch.setattr(cli_support.console, "width", 200)
    monkeypatch.setattr(cli_support.err_console, "width", 200)
    return {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def imported(env, clock, tmp_path) -> dict[str, str]:
    path = tmp_path / "journeys.jsonl"
    start = clock.now() - 20 * DAY
    path.write_bytes(
        b"\n".join(orjson.dumps(e) for i in range(3) for e in customer_journey(f"pat_{i}", start))
    )
    result = run(env, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "15 accepted" in result.output
    return env


def test_import_then_stats_shows_stages_and_funnels(imported) -> None:
    result = run(imported, "stats")
    assert result.exit_code == 0, result.output
    assert "active_customer" in result.output and "Active Customer" in result.output
    assert "purchase" in result.output and "100.0%" in result.output


def test_patients_show_masks_by_default_and_reveal_needs_a_reason(imported) -> None:
    masked = run(imported, "patients", "show", "pat_1")
    assert masked.exit_code == 0, masked.output
    assert "A***" in masked.output and "Lovelace" not in masked.output
    refused = run(imported, "patients", "show", "pat_1", "--reveal")
    assert refused.exit_code == 2 and "--reason" in refused.output
    revealed = run(
        imported, "patients", "show", "pat_1", "--reveal", "--reason", "care coordination"
    )
    assert "Lovelace" in revealed.output
    audit = run(imported, "audit", "show", "--record", "pat_1", "--limit", "1")
    words = audit.output.split()
    assert "reveal" in words and "care" in words and "coordination" in words


def test_patients_show_finds_by_email(imported) -> None:
    result = run(imported, "patients", "show", "--email", "PAT_2@example.com")
    assert result.exit_code == 0, result.output
    assert "pat_2" in result.output


def test_audit_verify_passes_then_reports_an_edited_row(imported, engine: Engine) -> None:
    ok = run(imported, "audit", "verify")
    assert ok.exit_code == 0 and "intact" in ok.output
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    broken = run(imported, "audit", "verify")
    assert broken.exit_code == 1
    assert "row 2" in broken.output


def test_lifecycle_rebuild_reports_an_identical_projection(imported) -> None:
    result = run(imported, "lifecycle", "rebuild")
    assert result.exit_code == 0, result.output
    assert "identical" in result.output


def test_keys_rotate_keeps_everything_readable(imported, env) -> None:
    new_key = run(env, "keys", "generate").output.strip()
    rotated_env = {**env, "TELECRM_MASTER_KEY": new_key, "TELECRM_PREVIOUS_MASTER_KEYS": MASTER_KEY}
    result = run(rotated_env, "keys", "rotate")
    assert result.exit_code == 0, result.output
    assert "re-wrapped" in result.output
    only_new = {**env, "TELECRM_MASTER_KEY": new_key}
    shown = run(only_new, "patients", "show", "pat_0", "--reveal", "--reason", "rotation check")
    assert shown.exit_code == 0, shown.output
    assert "Lovelace" in shown.output


def test_a_missing_master_key_is_one_clear_line(env) -> None:
    result = run({**env, "TELECRM_MASTER_KEY": ""}, "patients", "show", "pat_0")
    assert result.exit_code == 1
    assert "TELECRM_MASTER_KEY" in result.output and "keys generate" in result.output
    assert "Traceback" not in result.output


def test_import_of_a_missing_file_fails_cleanly(env) -> None:
    result = run(env, "import", "/nonexistent/events.jsonl")
    assert result.exit_code == 1 and "no such file" in result.output


def test_a_bad_setting_is_named_without_its_value(env) -> None:
    result = run({**env, "TELECRM_AT_RISK_DAYS": "soon"}, "stats")
    assert result.exit_code == 2
    assert "TELECRM_AT_RISK_DAYS" in result.output and "Traceback" not in result.output
    swapped = run({**env, "TELECRM_AT_RISK_DAYS": "200", "TELECRM_CHURN_DAYS": "100"}, "stats")
    assert swapped.exit_code == 2 and "smaller than TELECRM_CHURN_DAYS" in swapped.output
