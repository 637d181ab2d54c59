"""Suite-wide fixtures: every database test runs on SQLite and on PostgreSQL, on a fresh schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, text

from telecrm.domain.clock import FrozenClock
from telecrm.store.engine import make_engine
from telecrm.store.migrate import upgrade_to_head
from telecrm.store.schema import metadata
from tests.support import postgres

if TYPE_CHECKING:
    from telecrm.bootstrap import Runtime
    from telecrm.settings import Settings
    from tests.support.builders import SignedClient

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        admin = postgres.admin_url()
    except postgres.NoPostgres as exc:
        pytest.exit(f"PostgreSQL suite cannot run: {exc}", returncode=3)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"telecrm_test_{worker}_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(admin, name)
    yield url
    postgres.drop_database(admin, name)


@pytest.fixture(scope="session")
def _migrated() -> dict[str, Engine]:
    """Engines already migrated in this test session (migrating once per engine is enough)."""
    return {}


def _migrated_engine(
    kind: str, cache: dict[str, Engine], request: pytest.FixtureRequest, tmp: Path
) -> Engine:
    if kind not in cache:
        if kind == "sqlite":
            engine = make_engine(f"sqlite:///{tmp / 'telecrm.db'}")
        else:
            engine = make_engine(request.getfixturevalue("postgres_url"))
        upgrade_to_head(engine)
        cache[kind] = engine
    return cache[kind]


def _empty(engine: Engine) -> None:
    names = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
        else:
            for name in names:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=ENGINES)
def engine(
    request: pytest.FixtureRequest,
    _migrated: dict[str, Engine],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    """A migrated, empty database: SQLite (WAL, a file) and PostgreSQL, one test each."""
    tmp = tmp_path_factory.getbasetemp() / "sqlite-db"
    tmp.mkdir(exist_ok=True)
    eng = _migrated_engine(request.param, _migrated, request, tmp)
    _empty(eng)
    yield eng


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A command under test may configure logging (level, stream) for the whole process: put the
    root level back afterwards, so a later test's CLI output does not carry INFO lines."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    if root.level != level or root.handlers != handlers:
        from telecrm.observability.logs import configure_logging

        configure_logging(logging.getLevelName(level) if level else "WARNING")


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich sizes tables to the terminal it found at import: give CLI tests room so nothing is cut."""
    from telecrm import cli_support

    monkeypatch.setattr(cli_support.console, "width", 240)
    monkeypatch.setattr(cli_support.err_console, "width", 240)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from pydantic import SecretStr

    from telecrm.settings import Settings
    from tests.support.builders import MASTER_KEY, SECRET

    return Settings(
        home=tmp_path,
        master_key=SecretStr(MASTER_KEY),
        webhook_secrets=[SecretStr(SECRET)],
        embedded_worker=False,
    )


@pytest.fixture
def runtime(engine: Engine, settings: Settings, clock: FrozenClock) -> Runtime:
    from telecrm.bootstrap import bootstrap

    return bootstrap(settings, clock=clock, engine=engine, migrate=False)


@pytest.fixture
def api(runtime: Runtime, clock: FrozenClock) -> Iterator[SignedClient]:
    """The real FastAPI app over httpx's in-process transport, with a signing sender."""
    import httpx
    from fastapi.testclient import TestClient

    from telecrm.api.app import create_app
    from tests.support.builders import SignedClient

    with TestClient(
        create_app(runtime, embedded_worker=False), raise_server_exceptions=False
    ) as client:
        assert isinstance(client, httpx.Client)
        yield SignedClient(client, clock.now())
