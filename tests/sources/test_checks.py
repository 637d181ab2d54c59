"""`sources check`: connectivity, every model's columns, and a role that cannot write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.checks import check_source
from telecrm.sources.platform_db import platform_engine
from tests.sources.conftest import example_source, sql


@pytest.fixture
def role(platform_url: str) -> Iterator[str]:
    """A login role that may only SELECT the platform's tables (roles are cluster-wide)."""
    name = f"telecrm_ro_{uuid.uuid4().hex[:8]}"
    sql(platform_url, f'CREATE ROLE "{name}" LOGIN')
    sql(platform_url, f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{name}"')
    yield name
    with psycopg.connect(platform_url, autocommit=True) as conn:
        conn.execute(f'REASSIGN OWNED BY "{name}" TO postgres')
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE "{name}"')


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def findings(url: str) -> dict[str, tuple[bool, str]]:
    source = example_source()
    engine = platform_engine(source, {source.url_env: url})
    try:
        return {f.check: (f.ok, f.detail) for f in check_source(source, engine)}
    finally:
        engine.dispose()


def test_a_select_only_role_passes_every_check(
    world: PlatformDatabase, platform_url: str, role: str
) -> None:
    result = findings(as_role(platform_url, role))
    assert all(ok for ok, _ in result.values()), result
    assert result["read-only role"][1].startswith("writes are refused")


def test_a_role_that_can_write_is_refused(
    world: PlatformDatabase, platform_url: str, role: str
) -> None:
    sql(platform_url, f'GRANT UPDATE ON orders TO "{role}"')
    ok, detail = findings(as_role(platform_url, role))["read-only role"]
    assert not ok and "public.orders" in detail and "SELECT only" in detail


def test_the_superuser_is_refused(world: PlatformDatabase, platform_url: str) -> None:
    ok, detail = findings(platform_url)["read-only role"]
    assert not ok and "superuser" in detail


def test_a_missing_column_and_a_missing_grant_are_named(
    world: PlatformDatabase, platform_url: str, role: str
) -> None:
    sql(platform_url, "ALTER TABLE orders DROP COLUMN card_last4")
    sql(platform_url, f'REVOKE SELECT ON subscriptions FROM "{role}"')
    result = findings(as_role(platform_url, role))
    assert result["model orders"] == (
        False,
        "column 'card_last4' vanished from the table (or query); the model is stopped until the models file matches the table (then run it again)",
    )
    assert (
        not result["model subscriptions"][0]
        and "SQLSTATE 42501" in result["model subscriptions"][1]
    )
    assert result["model patients"][0]


def test_wrong_credentials_and_a_missing_database_are_told_apart(platform_url: str) -> None:
    unknown_role = findings(as_role(platform_url, "nobody_" + uuid.uuid4().hex[:6]))["connect"]
    assert unknown_role == (
        False,
        "source 'platform': the server refused this role (pg_hba.conf or a missing role)",
    )
    missing_db = findings(platform_url.rsplit("/", 1)[0] + "/no_such_db_" + uuid.uuid4().hex[:6])[
        "connect"
    ]
    assert missing_db == (False, "source 'platform': the database named in the URL does not exist")
