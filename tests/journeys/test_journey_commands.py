"""`telecrm journeys list | simulate | stats` against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from telecrm.security.audit import verify_audit
from tests.journeys.helpers import consenting
from tests.support.builders import MASTER_KEY, event

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def env(engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cli_support.console, "width", 200)
    yield {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def run(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env)


def _import(env: dict[str, str], tmp_path, raw: list[dict]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in raw))
    assert run(env, "import", str(path)).exit_code == 0
    assert run(env, "worker", "--once").exit_code == 0


def test_list_shows_the_eight_builtins(env) -> None:  # type: ignore[no-untyped-def]
    result = run(env, "journeys", "list", "--json")
    assert result.exit_code == 0, result.output
    names = sorted(j["name"] for j in orjson.loads(result.stdout))
    assert len(names) == 8 and "win_back" in names


def test_simulate_shows_the_path_and_respects_consent(env, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    start = NOW - timedelta(hours=1)
    _import(
        env,
        tmp_path,
        [
            consenting("lead_ok_1", start),
            consenting("no_sms_1", start, sms_consent=False),
        ],
    )
    result = run(env, "journeys", "simulate", "lead_nurturing", "--patient", "lead_ok_1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "lead_ok_1 enters lead_nurturing (group: journey)" in out
    for step in ("touch_1", "texts_allowed", "text_reminder", "touch_3"):
        assert step in out
    assert "email lead_nurture_1 (marketing): would be planned" in out
    assert "ends: completed" in out
    # Without SMS consent the branch skips the text.
    result = run(env, "journeys", "simulate", "lead_nurturing", "--patient", "no_sms_1")
    assert "text_reminder" not in result.stdout and "pause_2" in result.stdout
    # The profile read is audited, and the chain stays intact.
    with engine.connect() as conn:
        assert verify_audit(conn).ok
    missing = run(env, "journeys", "simulate", "lead_nurturing", "--patient", "nobody")
    assert missing.exit_code == 1 and "no patient 'nobody'" in missing.output
    unknown = run(env, "journeys", "simulate", "nope", "--patient", "lead_ok_1")
    assert unknown.exit_code == 1 and "no journey is called 'nope'" in unknown.output


def test_stats_after_a_run(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    start = NOW - timedelta(minutes=30)
    _import(
        env,
        tmp_path,
        [
            consenting("lead_ok_1", start),
            event("questionnaire.started", "lead_ok_1", start, {"questionnaire_id": "q1"}),
        ],
    )
    ran = run(env, "journeys", "run")
    assert ran.exit_code == 0, ran.output
    assert "1 entered" in ran.stdout
    result = run(env, "journeys", "stats", "lead_nurturing", "--json")
    assert result.exit_code == 0, result.output
    (stats,) = orjson.loads(result.stdout)
    assert stats["groups"]["journey"]["entered"] == 1
    assert stats["groups"]["journey"]["active"] == 1
