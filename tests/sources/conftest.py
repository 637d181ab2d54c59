"""Fixtures for the database source: a fresh platform database per test (always PostgreSQL),
written by the simulator, and a reader over the runtime's own store (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from telecrm.bootstrap import Runtime
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.to_postgres import PlatformDatabase
from telecrm.sources.config import SourceConfig, load_sources
from telecrm.sources.platform_db import platform_engine
from telecrm.sources.reader import SourceReader
from tests.support import postgres

EXAMPLE = Path(__file__).resolve().parents[2] / "src/telecrm/sources/examples/sources.yaml"
URL_ENV = "TELECRM_PLATFORM_DATABASE_URL"
SMALL_WORLD = SimulationConfig(patients=60, months=3, seed=11, start=date(2025, 1, 1))


@pytest.fixture
def platform_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for the platform, dropped after the test."""
    admin = postgres.admin_url()
    name = f"telecrm_platform_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(admin, name)
    yield url.replace("postgresql+psycopg://", "postgresql://", 1)
    postgres.drop_database(admin, name)


@pytest.fixture
def world(platform_url: str) -> PlatformDatabase:
    """The simulator's platform tables, written up to the middle of the period."""
    db = PlatformDatabase(platform_url, SMALL_WORLD, batch=300)
    db.create()
    db.advance(SMALL_WORLD.start_at.replace(month=2, day=15))
    return db


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def newest(url: str, table: str) -> Any:
    """The latest `updated_at` in a platform table (to write a change after it)."""
    return sql(url, f"SELECT max(updated_at) FROM {table}")[0][0]


def first_patient(url: str) -> Any:
    return sql(url, "SELECT id FROM patients ORDER BY id LIMIT 1")[0][0]


def move_first_patient(url: str, timezone: str = "America/Chicago") -> Any:
    """The first patient moves (a mapped field changes, after every other update); their id."""
    pid = first_patient(url)
    sql(
        url,
        "UPDATE patients SET timezone = %s, updated_at = %s WHERE id = %s",
        (timezone, newest(url, "patients") + timedelta(seconds=1), pid),
    )
    return pid


def example_source(**overrides: Any) -> SourceConfig:
    source = load_sources(EXAMPLE).source("platform")
    return source.model_copy(update=overrides) if overrides else source


ReaderFactory = Callable[..., SourceReader]


@pytest.fixture
def make_reader(runtime: Runtime, platform_url: str) -> ReaderFactory:
    def build(source: SourceConfig | None = None, **kwargs: Any) -> SourceReader:
        src = source or example_source()
        engine = platform_engine(src, {src.url_env: platform_url})
        return SourceReader(
            src,
            engine,
            runtime.engine,
            runtime.intake(),
            runtime.blind_index(),
            runtime.clock,
            **kwargs,
        )

    return build
