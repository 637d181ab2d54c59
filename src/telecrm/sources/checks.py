"""`telecrm sources check`: can we read this source, does every model fit it, and can we NOT write?

A source role must be read-only: telecrm only reads, and a role that can write is one mistake
(or one leaked URL) away from changing the platform's records. The check asks PostgreSQL for the
role's attributes and table privileges, then tries a write that changes nothing
(`UPDATE t SET key = key WHERE false`, and a `CREATE TABLE`) inside a transaction it rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from telecrm.sources.config import SourceConfig
from telecrm.sources.drift import check_drift
from telecrm.sources.errors import ModelStopped
from telecrm.sources.platform_db import describe, quote, read_only, sqlstate, unavailable


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    detail: str


def check_source(source: SourceConfig, engine: Engine) -> list[Finding]:
    findings: list[Finding] = []
    try:
        with read_only(engine, source.statement_timeout_seconds) as conn:
            role = conn.execute(text("SELECT current_user, current_database()")).one()
    except DBAPIError as exc:
        return [Finding("connect", False, str(unavailable(source.name, exc)))]
    findings.append(Finding("connect", True, f"connected as role {role[0]!r} to {role[1]!r}"))
    for model in source.models:
        try:
            with read_only(engine, source.statement_timeout_seconds) as conn:
                columns = describe(conn, model)
            check_drift(model.name, model.columns(), None, columns)
            findings.append(
                Finding(f"model {model.name}", True, f"all {len(model.columns())} columns found")
            )
        except ModelStopped as exc:
            findings.append(Finding(f"model {model.name}", False, exc.problem))
        except DBAPIError as exc:
            findings.append(
                Finding(
                    f"model {model.name}",
                    False,
                    f"cannot read it (SQLSTATE {sqlstate(exc) or 'unknown'}): check the table "
                    "name or query and that the role may SELECT it",
                )
            )
    findings.append(_cannot_write(source, engine))
    return findings


def _cannot_write(source: SourceConfig, engine: Engine) -> Finding:
    problems: list[str] = []
    with engine.connect() as conn:
        attrs = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).first()
        if attrs is not None and attrs[0]:
            problems.append("the role is a superuser")
        writable = (
            conn.execute(
                text(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind IN ('r', 'p')"
                    " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    " AND n.nspname NOT LIKE 'pg_toast%'"
                    " AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')"
                    " ORDER BY 1 LIMIT 6"
                )
            )
            .scalars()
            .all()
        )
        if writable:
            shown = ", ".join(writable[:5]) + (", ..." if len(writable) > 5 else "")
            problems.append(f"it may write to tables ({shown})")
        conn.rollback()
        for model in source.models:
            if model.table is None:
                continue
            if _write_succeeds(
                conn,
                f"UPDATE {quote(model.table)} SET {quote(model.primary_key)} = "  # noqa: S608 (validated identifiers)
                f"{quote(model.primary_key)} WHERE false",
            ):
                problems.append(f"a test UPDATE of {model.table} was allowed")
                break
        if _write_succeeds(conn, "CREATE TABLE telecrm_write_probe (x int)"):
            problems.append("a test CREATE TABLE was allowed")
    if problems:
        return Finding(
            "read-only role",
            False,
            "the role can write: " + "; ".join(problems) + ". Give telecrm a role with SELECT "
            "only (docs/sources.md shows the GRANTs)",
        )
    return Finding(
        "read-only role", True, "writes are refused (tried in a rolled-back transaction)"
    )


def _write_succeeds(conn: Connection, statement: str) -> bool:
    """Run `statement` in a transaction that is always rolled back; True if it was allowed."""
    trans = conn.begin()
    try:
        conn.exec_driver_sql(statement)
        return True
    except DBAPIError:
        return False
    finally:
        trans.rollback()
