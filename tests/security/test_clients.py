"""API clients: secrets shown once and stored as scrypt hashes, roles, disabling."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.security.clients import (
    ClientError,
    ClientNotFound,
    authenticate_client,
    create_client,
    disable_client,
    hash_secret,
    list_clients,
    secret_matches,
)
from telecrm.security.roles import Role
from telecrm.security.tables import api_clients
from tests.support.builders import MASTER_KEY


def test_a_secret_hash_is_salted_scrypt_and_matches_only_its_secret() -> None:
    first, second = hash_secret("tcs_same"), hash_secret("tcs_same")
    assert first.startswith("scrypt$16384$8$1$") and first != second
    assert secret_matches("tcs_same", first) and secret_matches("tcs_same", second)
    assert not secret_matches("tcs_other", first)


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$x$8$1$a$b", "bcrypt$1$2$3$4$5"])
def test_a_malformed_stored_hash_matches_nothing(stored: str) -> None:
    assert not secret_matches("tcs_any", stored)


def test_a_client_is_created_listed_authenticated_and_disabled(engine: Engine) -> None:
    with engine.begin() as conn:
        new = create_client(conn, "care portal", Role.CARE_COORDINATOR, now_us=1)
    assert new.client.client_id.startswith("tcc_") and new.secret.startswith("tcs_")
    with engine.begin() as conn:
        stored = conn.execute(select(api_clients.c.secret_hash)).scalar_one()
        assert new.secret not in stored
        assert authenticate_client(conn, new.client.client_id, new.secret) == new.client
        assert authenticate_client(conn, new.client.client_id, new.secret + "x") is None
        assert authenticate_client(conn, "tcc_0000000000000000", new.secret) is None
        assert authenticate_client(conn, "' OR 1=1 --", new.secret) is None
        disable_client(conn, new.client.client_id, now_us=2)
        assert authenticate_client(conn, new.client.client_id, new.secret) is None
        (listed,) = list_clients(conn)
    assert listed.disabled and listed.role is Role.CARE_COORDINATOR


def test_bad_names_roles_and_ids_are_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(ClientError, match="client name"):
            create_client(conn, "", Role.ADMIN, now_us=1)
        with pytest.raises(ClientError, match="client name"):
            create_client(conn, "x" * 101, Role.ADMIN, now_us=1)
        with pytest.raises(ClientError, match="unknown role"):
            create_client(conn, "ok", "root", now_us=1)
        with pytest.raises(ClientNotFound, match="telecrm clients list"):
            disable_client(conn, "tcc_ffffffffffffffff", now_us=1)


@pytest.fixture
def env(engine: Engine, tmp_path, wide_console: None) -> dict[str, str]:
    return {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def test_the_cli_prints_the_secret_once_lists_and_disables(env: dict[str, str]) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["clients", "create", "crm-team", "--role", "marketing"], env=env)
    assert created.exit_code == 0, created.output
    # stdout only: a log line on stderr (the level an earlier test left) must not shift the parse
    lines = dict(
        line.split(None, 1)
        for line in created.stdout.splitlines()
        if line.startswith(("client_id", "client_secret", "role"))
    )
    client_id, secret = lines["client_id"], lines["client_secret"]
    assert client_id.startswith("tcc_") and secret.startswith("tcs_")
    assert "cannot show it again" in created.output
    listed = runner.invoke(app, ["clients", "list"], env=env)
    assert listed.exit_code == 0 and client_id in listed.output and "marketing" in listed.output
    assert secret not in listed.output
    disabled = runner.invoke(app, ["clients", "disable", client_id], env=env)
    assert disabled.exit_code == 0 and "disabled" in disabled.output
    assert "disabled" in runner.invoke(app, ["clients", "list"], env=env).output
    missing = runner.invoke(app, ["clients", "disable", "tcc_0000000000000000"], env=env)
    assert missing.exit_code == 1 and "no API client" in missing.output


def test_the_cli_refuses_an_unknown_role_or_a_bad_name(env: dict[str, str]) -> None:
    runner = CliRunner()
    bad_role = runner.invoke(app, ["clients", "create", "x", "--role", "root"], env=env)
    assert bad_role.exit_code == 2
    bad_name = runner.invoke(app, ["clients", "create", "a\tb", "--role", "admin"], env=env)
    assert bad_name.exit_code == 2 and "client name" in bad_name.output
