"""`telecrm doctor` as an operator meets it: the database checks on both engines, exit 1 only
on a fail, `--json` for machines, and never a secret in what it prints."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import Engine, insert, text
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.doctor.commands import diagnose
from telecrm.doctor.destination_checks import check_journey_webhooks
from telecrm.doctor.findings import Finding
from telecrm.doctor.store_checks import open_database
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.ingest.signatures import generate_secret
from telecrm.journeys.tables import journey_webhooks
from telecrm.security.keyring import Keyring, generate_master_key, parse_master_key, rotate_keys
from telecrm.store.engine import make_engine
from telecrm.store.migrate import alembic_config
from tests.doctor.helpers import (
    CANARY,
    clean_environment,
    context,
    only,
    said,
    secret_file,
    settings_for,
)
from tests.support import postgres


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


# -- the database (both engines) ---------------------------------------------------------------------


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _statuses(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.status for f in findings}


def test_a_healthy_database_passes_every_database_check(engine: Engine, tmp_path: Path) -> None:
    ctx = context(settings_for(tmp_path, database_url=_url(engine)))
    found = _statuses(diagnose(ctx))
    sqlite = engine.dialect.name == "sqlite"
    assert found["database"] == found["schema"] == found["data keys"] == "ok"
    assert found["SQLite WAL"] == ("ok" if sqlite else "skip")
    assert found["clock skew"] == ("skip" if sqlite else "ok")


@pytest.mark.parametrize(("off_by", "status"), [(5, "warn"), (-3600, "fail")])
def test_a_clock_far_from_the_database_server_s_is_reported(
    engine: Engine, tmp_path: Path, off_by: int, status: str
) -> None:
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=off_by))
    ctx = context(settings_for(tmp_path, database_url=_url(engine)), clock=clock)
    finding = next(f for f in diagnose(ctx) if f.check == "clock skew")
    if engine.dialect.name == "sqlite":
        assert finding.status == "skip" and "SQLite" in finding.message
    else:
        assert finding.status == status
        assert ("behind" if off_by < 0 else "ahead of") in finding.message


def test_data_keys_must_be_wrapped_by_a_configured_master_key(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    old, new = generate_master_key(), generate_master_key()
    with engine.begin() as conn:
        Keyring.open(conn, parse_master_key(old), now_us=to_micros(clock.now()))

    def data_keys(current: str, *previous: str) -> Finding:
        settings = settings_for(
            tmp_path,
            database_url=_url(engine),
            master_key=SecretStr(current),
            previous_master_keys=[SecretStr(p) for p in previous],
        )
        return next(f for f in diagnose(context(settings)) if f.check == "data keys")

    assert data_keys(old).status == "ok"
    stranger = data_keys(new)
    assert stranger.status == "fail" and "not configured" in stranger.message
    assert data_keys(new, old).status == "warn"  # a rotation under way
    with engine.begin() as conn:
        rotate_keys(conn, parse_master_key(new), [parse_master_key(old)], now_us=1)
    done = data_keys(new, old)
    assert done.status == "warn" and "entry 1 wraps no data key" in done.message
    assert all(k not in said([stranger, done]) for k in (old, new))


def test_journey_webhooks_waiting_for_a_secret_are_reported(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(journey_webhooks).values(
                webhook_id="jwh_1", instance_id="ji_1", journey="probe", step="tell",
                patient_key="pat_1", url="https://care.example.com/hooks",
                secret_env="PROBE_SECRET", fields="[]", status="pending", attempts=0,
                due_us=to_micros(clock.now()), created_us=0, lease_until_us=0,
            )
        )  # fmt: skip
    settings = settings_for(tmp_path, database_url=_url(engine))
    missing = only(check_journey_webhooks(context(settings), engine))
    assert missing.status == "fail" and "PROBE_SECRET, which is not set" in missing.message
    secret = secret_file(tmp_path, "hook", generate_secret())
    ready = check_journey_webhooks(context(settings, {"PROBE_SECRET_FILE": str(secret)}), engine)
    assert only(ready).status == "ok"


def test_a_database_that_does_not_answer_fails_fast_without_its_password(
    tmp_path: Path,
) -> None:
    dead = f"postgresql+psycopg://telecrm:{CANARY}@127.0.0.1:1/telecrm"
    engine, found = open_database(context(settings_for(tmp_path, database_url=dead)))
    finding = only(found)
    assert engine is None and finding.status == "fail" and "cannot be reached" in finding.message
    assert CANARY not in said([finding]) and "***" in finding.message
    garbage = secret_file(tmp_path, "garbage.db", "this is no database " * 100)
    engine, found = open_database(
        context(settings_for(tmp_path, database_url=f"sqlite:///{garbage}"))
    )
    assert engine is None and only(found).status == "fail"


def test_a_sqlite_database_not_created_yet_is_a_warning_and_stays_uncreated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later" / "telecrm.db"
    findings = diagnose(context(settings_for(tmp_path, database_url=f"sqlite:///{path}")))
    assert _statuses(findings)["database"] == "warn"
    assert "schema" not in _statuses(findings)
    assert not path.exists() and not path.parent.exists()


@pytest.fixture(params=("sqlite", "postgresql"))
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (its schema is the test's to break)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin = postgres.admin_url()
    name = f"telecrm_doctor_{uuid.uuid4().hex[:8]}"
    yield postgres.create_database(admin, name)
    postgres.drop_database(admin, name)


def test_a_schema_behind_head_warns_and_one_ahead_of_this_telecrm_fails(
    fresh_url: str, tmp_path: Path
) -> None:
    engine = make_engine(fresh_url)
    with engine.begin():  # the database exists (a SQLite file is made), with no schema
        pass
    try:
        ctx = context(settings_for(tmp_path, database_url=fresh_url))
        assert _statuses(diagnose(ctx))["schema"] == "warn"  # empty: no schema yet
        command.upgrade(alembic_config(engine), "0001")
        behind = next(f for f in diagnose(ctx) if f.check == "schema")
        assert behind.status == "warn" and behind.message.startswith("at 0001;")
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        ahead = next(f for f in diagnose(ctx) if f.check == "schema")
        assert ahead.status == "fail" and "a newer version migrated it" in ahead.message
    finally:
        engine.dispose()


# -- the command -------------------------------------------------------------------------------------


def _env(engine: Engine, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TELECRM_DATABASE_URL": _url(engine),
        "TELECRM_HOME": str(tmp_path),
        "TELECRM_MASTER_KEY": generate_master_key(),
        "TELECRM_WEBHOOK_SECRETS": generate_secret(),
        "TELECRM_MESSAGING": "false",
        **extra,
    }


def test_doctor_exits_0_when_nothing_fails_and_1_when_something_does(
    engine: Engine, tmp_path: Path
) -> None:
    runner = CliRunner()
    healthy = runner.invoke(app, ["doctor"], env=_env(engine, tmp_path))
    assert healthy.exit_code == 0, healthy.output
    assert "ok    master key" in healthy.output and " 0 fail" in healthy.output
    sick = runner.invoke(
        app, ["doctor"], env=_env(engine, tmp_path, TELECRM_PUBLIC_URL="http://crm.example.com")
    )
    assert sick.exit_code == 1
    assert "fail  public URL" in sick.output and "error: 1 check(s) failed" in sick.output


def test_doctor_json_is_one_document_for_machines(engine: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--json"], env=_env(engine, tmp_path))
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    assert body["ok"] is True
    assert {c["check"] for c in body["checks"]} >= {"master key", "database", "schema"}
    assert set(body["checks"][0]) == {"check", "status", "message", "advice"}
    failing = runner.invoke(
        app, ["doctor", "--json"], env=_env(engine, tmp_path, TELECRM_MASTER_KEY=CANARY)
    )
    assert failing.exit_code == 1 and orjson.loads(failing.stdout)["ok"] is False


def test_settings_that_do_not_load_are_a_failed_check(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = CliRunner().invoke(app, ["doctor"], env={"TELECRM_MASTER_KEY_FILE": str(missing)})
    assert result.exit_code == 1
    assert "fail  settings" in result.output
    assert f"TELECRM_MASTER_KEY_FILE={missing}: no such file" in result.output


def test_doctor_prints_no_secret_it_was_given(engine: Engine, tmp_path: Path) -> None:
    key, hook, token = generate_master_key(), generate_secret(), CANARY + "-token"
    env = _env(
        engine,
        tmp_path,
        TELECRM_MASTER_KEY_FILE=str(secret_file(tmp_path, "mk", key + "\n", 0o644)),
        TELECRM_WEBHOOK_SECRETS=f"{hook},whsec_{CANARY}",
        TELECRM_PREVIOUS_MASTER_KEYS=CANARY + "-previous",
        TELECRM_DESTINATIONS="hubspot,pipedrive",
        TELECRM_HUBSPOT_TOKEN_FILE=str(secret_file(tmp_path, "hs", token)),
        TELECRM_PIPEDRIVE_CLIENT_SECRET=CANARY + "-pipedrive",
        TELECRM_MESSAGING="true",
        TELECRM_TWILIO_AUTH_TOKEN=CANARY + "-twilio",
        TELECRM_SENDGRID_API_KEY=CANARY + "-sendgrid",
    )
    del env["TELECRM_MASTER_KEY"]
    runner = CliRunner()
    for args in (["doctor"], ["doctor", "--json"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 1  # the bad entries fail, and say so
        assert "entry 2" in result.output
        for secret in (key, hook, hook.removeprefix("whsec_"), CANARY):
            assert secret not in result.output
