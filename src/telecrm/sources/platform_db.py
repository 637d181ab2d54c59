"""The platform's database, as the source sees it: read-only transactions, column types, errors.

Every read runs in its own short transaction that starts with `SET TRANSACTION READ ONLY` and a
`SET LOCAL statement_timeout`, so a mistaken query can neither write nor hold the platform's
database for long. PostgreSQL's error texts can quote row values (`invalid input syntax for
type integer: "..."`), so errors are reported by SQLSTATE and our own words, never by the
server's message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from telecrm.security.secret_files import resolve_secret
from telecrm.sources.config import ModelConfig, SourceConfig
from telecrm.sources.errors import ModelStopped, SourceUnavailable

CONNECT_TIMEOUT_SECONDS = 10

_CONNECT_PROBLEMS = {
    "28P01": "authentication failed: check the user and password in the URL",
    "28000": "the server refused this role (pg_hba.conf or a missing role)",
    "3D000": "the database named in the URL does not exist",
    "53300": "the server has no free connection slots",
    "57P03": "the server is starting up or shutting down",
}


def source_url(source: SourceConfig, environ: Mapping[str, str | None] | None = None) -> str:
    """The source's URL from `url_env` (or the file `<url_env>_FILE` names); never logged."""
    url = resolve_secret(source.url_env, environ)
    if not url:
        raise SourceUnavailable(
            f"source {source.name!r}: {source.url_env} is not set: put the platform database "
            f"URL in it (or in a file named by {source.url_env}_FILE)"
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SourceUnavailable(
            f"source {source.name!r}: {source.url_env} is not a database URL "
            "(postgresql://user:password@host:5432/dbname)"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise SourceUnavailable(
            f"source {source.name!r}: only PostgreSQL databases can be a source "
            f"({source.url_env} names {parsed.get_backend_name()!r})"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def platform_engine(
    source: SourceConfig, environ: Mapping[str, str | None] | None = None
) -> Engine:
    return create_engine(
        source_url(source, environ),
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "telecrm-source",
        },
    )


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


def unavailable(source: str, exc: BaseException) -> SourceUnavailable:
    """A connection failure in our words: SQLSTATE-specific advice, never the server's text."""
    state = sqlstate(exc) or _connect_state(exc)
    problem = _CONNECT_PROBLEMS.get(state or "")
    if problem is None:
        problem = (
            f"cannot reach the database (SQLSTATE {state})"
            if state
            else "cannot reach the database: check host, port and that the server is up"
        )
    return SourceUnavailable(f"source {source!r}: {problem}")


def _connect_state(exc: BaseException) -> str | None:
    """libpq reports a refused connection without a SQLSTATE: read its fixed wording (never
    shown; the message quotes the role and database names back)."""
    message = str(getattr(exc, "orig", exc))
    if "password authentication failed" in message:
        return "28P01"
    if "does not exist" in message and 'FATAL:  role "' in message:
        return "28000"
    if "does not exist" in message and 'FATAL:  database "' in message:
        return "3D000"
    if "no pg_hba.conf entry" in message:
        return "28000"
    return None


def query_failed(model: str, exc: BaseException, timeout: float) -> ModelStopped:
    state = sqlstate(exc)
    if state == "57014":
        return ModelStopped(
            model,
            f"a read took longer than the statement timeout ({timeout:g} s): index the cursor "
            "column or raise statement_timeout_seconds",
        )
    if state == "42501":
        return ModelStopped(model, "permission denied: grant the source role SELECT on it")
    return ModelStopped(model, f"the model's query failed (SQLSTATE {state or 'unknown'})")


@contextmanager
def read_only(engine: Engine, timeout_seconds: float) -> Iterator[Connection]:
    """A short read-only transaction with a statement timeout."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_seconds * 1000)}")
        yield conn


def quote(name: str) -> str:
    """A validated identifier (config patterns allow only [A-Za-z0-9_] and one dot), quoted."""
    return ".".join(f'"{part}"' for part in name.split("."))


def relation_sql(model: ModelConfig) -> str:
    """What a model reads FROM: its table, or its query as a subselect."""
    if model.table is not None:
        return quote(model.table)
    assert model.query is not None
    return f"({model.query.strip().rstrip(';')}) AS model_query"


def describe(conn: Connection, model: ModelConfig) -> dict[str, str]:
    """Every column the model's relation has, in order, with its PostgreSQL type name."""
    result = conn.execute(text(f"SELECT * FROM {relation_sql(model)} LIMIT 0"))  # noqa: S608 (validated identifiers / the user's own SELECT)
    cursor: Any = result.cursor
    description = cursor.description if cursor is not None else []
    oids = sorted({col.type_code for col in description})
    names: dict[int, str] = {}
    if oids:
        names = dict(
            conn.execute(
                text("SELECT oid::int, format_type(oid, NULL) FROM pg_type WHERE oid = ANY(:oids)"),
                {"oids": oids},
            ).all()
        )
    result.close()
    return {col.name: names.get(col.type_code, str(col.type_code)) for col in description}


def is_db_error(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError)
