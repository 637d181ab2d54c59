"""Secrets from files: `TELECRM_X_FILE=/run/secrets/x` works for every secret, refuses what it
cannot use with the variable and the path (never the content), and the value leaks nowhere."""

from __future__ import annotations

import io
import os
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from telecrm.api.app import create_app
from telecrm.bootstrap import bootstrap
from telecrm.cli import app
from telecrm.demo import demo_master_key
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.ingest.signatures import SignatureError, Verifier, generate_secret
from telecrm.journeys.tables import journey_webhooks
from telecrm.journeys.webhooks import JourneyWebhookSender
from telecrm.observability.logs import configure_logging
from telecrm.sandbox.faults import sandbox_client
from telecrm.security.keyring import generate_master_key
from telecrm.security.secret_files import (
    MAX_SECRET_FILE_BYTES,
    SecretFileError,
    read_secret_file,
    resolve_secret,
    secret_setting_names,
)
from telecrm.settings import Settings
from telecrm.sync.destinations import hubspot_config
from telecrm.sync.mapping import load_mapping
from tests.support.builders import SignedClient, registration

CANARY = "canary-secret-0c5e2d41"  # planted in files; must surface nowhere but where it is used


def _file(folder: Path, name: str, content: str | bytes, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def _flat(text: str) -> str:
    """Without whitespace: Rich wraps a long path wherever the terminal ends."""
    return "".join(text.split())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TELECRM_* variable from the machine running the tests leaks into a Settings()."""
    for name in list(os.environ):
        if name.upper().startswith("TELECRM_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- the rule ------------------------------------------------------------------------------------


# (A value ending in a carriage return would read as a CRLF line end: none does.)
@given(st.text(min_size=1).filter(lambda t: t.strip() and not t.endswith("\r")))
def test_a_secret_file_gives_its_content_less_one_trailing_newline(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "s")
        path.write_bytes((text + "\n").encode())
        assert read_secret_file("TELECRM_X_FILE", str(path)) == text


@pytest.mark.parametrize(
    ("content", "value"),
    [("k\n", "k"), ("k\r\n", "k"), ("k", "k"), ("k\n\n", "k\n"), ("  k  \n", "  k  ")],
)
def test_only_one_line_end_is_dropped(tmp_path: Path, content: str, value: str) -> None:
    path = _file(tmp_path, "s", content)
    assert resolve_secret("TELECRM_X", {"TELECRM_X_FILE": str(path)}) == value


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "absent", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _file(d, "empty", ""), "empty"),
        (lambda d: _file(d, "newline", "\n"), "empty"),
        (lambda d: _file(d, "blank", "  \t \n"), "empty"),
        (lambda d: _file(d, "big", CANARY * (MAX_SECRET_FILE_BYTES // 10)), "larger than 64 KiB"),
        (lambda d: _file(d, "binary", CANARY.encode() + b"\xff\xfe"), "not UTF-8"),
    ],
    ids=["missing", "directory", "empty", "newline-only", "blank", "oversized", "binary"],
)
def test_an_unusable_file_is_refused_naming_variable_and_path_never_content(
    tmp_path: Path, make, problem: str
) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(SecretFileError) as refused:
        resolve_secret("TELECRM_MASTER_KEY", {"TELECRM_MASTER_KEY_FILE": str(path)})
    message = str(refused.value)
    assert message.startswith(f"TELECRM_MASTER_KEY_FILE={path}: ")
    assert problem in message
    assert CANARY not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_telecrm_may_not_read_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "locked", CANARY, mode=0o000)
    with pytest.raises(SecretFileError, match="permission denied"):
        resolve_secret("TELECRM_X", {"TELECRM_X_FILE": str(path)})


def test_a_secret_set_both_ways_is_refused_without_saying_either_value(tmp_path: Path) -> None:
    path = _file(tmp_path, "s", CANARY + "-file")
    with pytest.raises(SecretFileError) as refused:
        resolve_secret("TELECRM_X", {"TELECRM_X": CANARY, "TELECRM_X_FILE": str(path)})
    assert "TELECRM_X is set as well" in str(refused.value)
    assert CANARY not in str(refused.value)


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    path = _file(tmp_path, "s", "from-file\n")
    assert resolve_secret("TELECRM_X", {"TELECRM_X": "", "TELECRM_X_FILE": str(path)}) == (
        "from-file"
    )
    assert resolve_secret("TELECRM_X", {"TELECRM_X": "direct", "TELECRM_X_FILE": ""}) == "direct"
    assert resolve_secret("TELECRM_X", {}) is None


# -- settings --------------------------------------------------------------------------------------


def test_every_secret_setting_has_a_file_twin(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    names = secret_setting_names(Settings)
    assert {
        "TELECRM_MASTER_KEY",
        "TELECRM_PREVIOUS_MASTER_KEYS",
        "TELECRM_WEBHOOK_SECRETS",
        "TELECRM_SENDGRID_API_KEY",
        "TELECRM_TWILIO_AUTH_TOKEN",
        "TELECRM_TWILIO_PREVIOUS_AUTH_TOKENS",
        "TELECRM_DATABASE_URL",  # it carries the database password
    } <= set(names.values())
    for field, variable in names.items():
        clean_env.setenv(variable + "_FILE", str(_file(tmp_path, field, f"{field}-value\n")))
    settings = Settings(_env_file=None)
    for field in names:
        value = getattr(settings, field)
        if isinstance(value, list):
            value = value[0]
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        assert value == f"{field}-value", field


def test_a_list_of_secrets_in_a_file_may_be_one_per_line(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    new, old = generate_secret(), generate_secret()
    clean_env.setenv("TELECRM_WEBHOOK_SECRETS_FILE", str(_file(tmp_path, "ws", f"{new}\n{old}\n")))
    settings = Settings(_env_file=None)
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [new, old]


def test_a_value_given_in_code_wins_and_its_file_is_not_read(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clean_env.setenv("TELECRM_MASTER_KEY_FILE", str(tmp_path / "absent"))
    settings = Settings(_env_file=None, master_key=SecretStr("in-code"))
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == "in-code"


def test_a_file_variable_in_dot_env_works_and_conflicts_with_the_environment(
    clean_env, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    key = _file(tmp_path, "mk", "from-file\n")
    dotenv = _file(tmp_path, ".env", f"TELECRM_MASTER_KEY_FILE={key}\n")
    settings = Settings(_env_file=dotenv)
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == "from-file"
    clean_env.setenv("TELECRM_MASTER_KEY", CANARY)
    with pytest.raises(SecretFileError, match="TELECRM_MASTER_KEY is set as well") as refused:
        Settings(_env_file=dotenv)
    assert CANARY not in str(refused.value)


def test_a_bad_secret_file_is_one_red_line_on_the_cli(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "mk"
    result = CliRunner().invoke(
        app, ["keys", "list"], env={"TELECRM_MASTER_KEY_FILE": str(missing)}
    )
    assert result.exit_code == 2
    assert _flat(f"TELECRM_MASTER_KEY_FILE={missing}: no such file") in _flat(result.output)
    assert "Traceback" not in result.output


# -- the variables mappings, journeys and commands name --------------------------------------------


def test_a_mapping_credential_can_come_from_a_file(tmp_path: Path) -> None:
    mapping = load_mapping("hubspot")
    token = _file(tmp_path, "hs", CANARY + "\n")
    config = hubspot_config(mapping, {"TELECRM_HUBSPOT_TOKEN_FILE": str(token)})
    assert config.private_app_token is not None
    assert config.private_app_token.get_secret_value() == CANARY
    assert CANARY not in repr(config)
    with pytest.raises(SecretFileError, match="TELECRM_HUBSPOT_TOKEN is set as well"):
        hubspot_config(
            mapping, {"TELECRM_HUBSPOT_TOKEN": CANARY, "TELECRM_HUBSPOT_TOKEN_FILE": str(token)}
        )


def _pending_webhook(engine: Engine, clock: FrozenClock, secret_env: str) -> None:
    now = to_micros(clock.now())
    with engine.begin() as conn:
        conn.execute(
            insert(journey_webhooks).values(
                webhook_id="jwh_1", instance_id="ji_1", journey="probe", step="tell",
                patient_key="pat_1", url="https://care.example.com/hooks", secret_env=secret_env,
                fields="[]", status="pending", attempts=0, due_us=now, created_us=now,
                lease_until_us=0,
            )
        )  # fmt: skip


def _receiver(secret: str, clock: FrozenClock, seen: list[int]) -> FastAPI:
    api = FastAPI()
    verifier = Verifier.from_secrets([secret])

    @api.post("/hooks")
    async def hooks(request: Request) -> Response:
        try:
            verifier.verify(request.headers, await request.body(), now=clock.now())
        except SignatureError:
            seen.append(401)
            return Response(status_code=401)
        seen.append(204)
        return Response(status_code=204)

    return api


def test_a_journey_webhook_is_signed_with_a_secret_from_a_file(
    runtime, engine: Engine, clock: FrozenClock, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    secret = generate_secret()
    seen: list[int] = []
    client = sandbox_client(_receiver(secret, clock, seen), base_url="https://care.example.com")
    _pending_webhook(engine, clock, "PROBE_SECRET")
    broken = JourneyWebhookSender(
        engine, runtime.cipher, clock, client,
        environ={"PROBE_SECRET_FILE": str(tmp_path / "absent")},
    )  # fmt: skip
    assert broken.run_once().retried == 1 and seen == []
    with engine.connect() as conn:
        assert conn.execute(select(journey_webhooks.c.code)).scalar_one() == "secret_file"
    with engine.begin() as conn:
        conn.execute(journey_webhooks.update().values(due_us=0, lease_until_us=0))
    path = _file(tmp_path, "hook", secret + "\n")
    sender = JourneyWebhookSender(
        engine, runtime.cipher, clock, client, environ={"PROBE_SECRET_FILE": str(path)}
    )
    assert sender.run_once().delivered == 1
    assert seen == [204]


def test_pull_without_a_usable_token_says_how_to_give_one(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    url = "http://127.0.0.1:9"
    none = runner.invoke(app, ["pull"], env={"TELECRM_PLATFORM_URL": url})
    assert none.exit_code == 2
    assert "TELECRM_PLATFORM_TOKEN_FILE" in none.output
    missing = tmp_path / "token"
    bad = runner.invoke(
        app,
        ["pull"],
        env={"TELECRM_PLATFORM_URL": url, "TELECRM_PLATFORM_TOKEN_FILE": str(missing)},
    )
    assert bad.exit_code == 1
    assert _flat(f"TELECRM_PLATFORM_TOKEN_FILE={missing}") in _flat(bad.output)


def test_the_demo_takes_a_master_key_file_too(clean_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = generate_master_key()
    clean_env.setenv("TELECRM_MASTER_KEY_FILE", str(_file(tmp_path, "mk", key + "\n")))
    assert demo_master_key(tmp_path) == key
    assert not (tmp_path / "demo-master.key").exists()


# -- the canary ---------------------------------------------------------------------------------


def test_secrets_planted_in_files_reach_no_log_error_or_repr(
    clean_env, engine: Engine, clock: FrozenClock, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    master, webhook = generate_master_key(), generate_secret()
    hubspot = CANARY + "-hubspot"
    clean_env.setenv("TELECRM_MASTER_KEY_FILE", str(_file(tmp_path, "mk", master + "\n")))
    clean_env.setenv("TELECRM_WEBHOOK_SECRETS_FILE", str(_file(tmp_path, "ws", webhook + "\n")))
    clean_env.setenv("TELECRM_HUBSPOT_TOKEN", hubspot)  # and its _FILE twin: refused
    clean_env.setenv("TELECRM_HUBSPOT_TOKEN_FILE", str(_file(tmp_path, "hs", hubspot + "\n")))
    canaries = (master, webhook, webhook.removeprefix("whsec_"), hubspot)
    settings = Settings(_env_file=None, home=tmp_path, destinations=["hubspot"])
    assert settings.master_key is not None and settings.master_key.get_secret_value() == master
    said = [repr(settings), str(settings), str(settings.model_dump())]
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        rt = bootstrap(settings, clock=clock, engine=engine, migrate=False)
        with TestClient(create_app(rt, embedded_worker=False)) as http:
            good = SignedClient(http, clock.now(), secret=webhook)
            said.append(good.post([registration("pat_1", clock.now())]).text)
            forged = SignedClient(http, clock.now(), secret=generate_secret())
            said.append(forged.post([registration("pat_2", clock.now())]).text)
        rt.worker().drain()
        with pytest.raises(SecretFileError) as refused:
            rt.sync_workers()
        said.append(str(refused.value))
    finally:
        configure_logging("WARNING")
    said.append(stream.getvalue())
    assert "intake.rejected" in said[-1]  # the logs were written, at DEBUG
    assert "accepted" in said[3] and "signature" in said[4]  # the requests did what they should
    everything = "\n".join(said)
    for canary in canaries:
        assert canary not in everything
    assert orjson.loads(said[3])  # a real response body, not an empty string
