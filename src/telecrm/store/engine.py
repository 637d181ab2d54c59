"""Engines for the two supported databases: SQLite (embedded, WAL) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class StoreError(RuntimeError):
    """The database cannot be reached or used; the message says what to fix."""


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def read_only(engine: Engine) -> Engine:
    """The same engine for long read-only work: on SQLite it does not hold the write lock."""
    return engine.execution_options(sqlite_deferred=True)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings telecrm relies on (WAL and a busy timeout on SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # We issue BEGIN ourselves (below); pysqlite's implicit BEGIN would be DEFERRED.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only a power loss can
            # drop the last transactions (sqlite.org/wal.html). FULL is one setting away.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 64 MiB of page cache (the default is 2 MiB): the event-id and per-patient indexes
            # are written in no particular order, and at a million events they outgrow 2 MiB.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # BEGIN IMMEDIATE takes the write lock up front. A DEFERRED transaction that reads and
            # then writes fails at once (SQLITE_BUSY_SNAPSHOT, no busy wait) when another writer
            # committed in between, and two queue claimers would both read the same rows.
            # Long read-only work opts out with execution_options(sqlite_deferred=True).
            deferred = conn.get_execution_options().get("sqlite_deferred", False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)
    raise StoreError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://"
    )
