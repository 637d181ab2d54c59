"""Doctor's checks of the database: reachable, schema at this telecrm's head, SQLite in WAL mode,
clocks that agree, data keys that the configured master keys can unwrap.

No migration runs: the schema is compared with Alembic's head (every other command migrates on
start). A SQLite file that does not exist is not created; one that does is opened as every
command opens it (`make_engine` asks for WAL), so the journal mode reported is the one that
telecrm gets there.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from telecrm.doctor.findings import Context, Finding
from telecrm.security.errors import SecurityError
from telecrm.security.keyring import kek_id, parse_master_key
from telecrm.security.tables import data_keys
from telecrm.store.engine import StoreError, make_engine, read_only
from telecrm.store.migrate import alembic_config

DATABASE_SETTING = "TELECRM_DATABASE_URL"
CONNECT_TIMEOUT_S = 5  # a doctor that hangs on a dead host diagnoses nothing
# Leases (120-300 s) and webhook timestamps (300 s) break at minutes of skew; the shared
# per-second rate budgets already drift at seconds.
CLOCK_SKEW_WARN_S = 1.0
CLOCK_SKEW_FAIL_S = 30.0
UPGRADE = "run `telecrm db upgrade` (serve and worker also migrate on start)"


def open_database(ctx: Context) -> tuple[Engine | None, list[Finding]]:
    """An engine on the configured database if it answers, and what was found getting there."""
    name = "database"
    try:
        url = make_url(ctx.settings.resolved_database_url)
    except ArgumentError:
        return None, [
            Finding(
                name,
                "fail",
                f"{DATABASE_SETTING} is not a database URL",
                "sqlite:///path/telecrm.db or postgresql+psycopg://user@host:5432/db",
            )
        ]
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    on_disk = backend == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).exists():
        return None, [
            Finding(
                name,
                "warn",
                f"no database yet at {url.database}",
                "`telecrm db upgrade` creates it (so does the first `telecrm serve`)",
            )
        ]
    try:
        if backend == "postgresql":
            engine = make_engine(
                url.render_as_string(hide_password=False),
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            )
        else:
            engine = make_engine(url.render_as_string(hide_password=False))
    except StoreError as exc:
        return None, [Finding(name, "fail", str(exc))]
    try:
        with read_only(engine).connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = _driver_reason(exc, url.password)
        return None, [
            Finding(
                name,
                "fail",
                f"{shown} cannot be reached or used: {reason}",
                f"check {DATABASE_SETTING} and that the server is up",
            )
        ]
    return engine, [Finding(name, "ok", f"{shown} answers")]


def _driver_reason(exc: SQLAlchemyError, password: str | object | None) -> str:
    original = getattr(exc, "orig", None) or exc
    first = (str(original).strip().splitlines() or [type(original).__name__])[0]
    if isinstance(password, str) and password:
        first = first.replace(password, "***")
    return first[:200]


SchemaState = Literal["none", "head", "behind", "ahead"]


def check_schema(engine: Engine) -> tuple[list[Finding], SchemaState]:
    """The schema's revision against this telecrm's Alembic head."""
    name = "schema"
    script = ScriptDirectory.from_config(alembic_config(engine))
    heads = set(script.get_heads())
    with read_only(engine).connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if not current:
        return [Finding(name, "warn", "no telecrm schema in this database yet", UPGRADE)], "none"
    if current == heads:
        return [Finding(name, "ok", f"at head ({', '.join(sorted(heads))})")], "head"
    try:
        for revision in current:
            script.get_revision(revision)
    except CommandError:
        return [
            Finding(
                name,
                "fail",
                f"the database is at revision {', '.join(sorted(current))}, which this telecrm "
                "does not know: a newer version migrated it",
                "upgrade telecrm on this host to the version the others run",
            )
        ], "ahead"
    return [
        Finding(
            name,
            "warn",
            f"at {', '.join(sorted(current))}; this telecrm's head is {', '.join(sorted(heads))}",
            UPGRADE,
        )
    ], "behind"


def check_journal_mode(engine: Engine) -> list[Finding]:
    name = "SQLite WAL"
    if engine.dialect.name != "sqlite":
        return [Finding(name, "skip", "not SQLite")]
    with read_only(engine).connect() as conn:
        mode = str(conn.execute(text("PRAGMA journal_mode")).scalar_one()).lower()
    if mode == "wal":
        return [Finding(name, "ok", "journal_mode is wal: readers never wait for the writer")]
    return [
        Finding(
            name,
            "warn",
            f"journal_mode is {mode}, not wal: readers and the writer block each other",
            "keep the database on a local disk (WAL needs shared memory), or use PostgreSQL",
        )
    ]


def check_clock_skew(ctx: Context, engine: Engine) -> list[Finding]:
    name = "clock skew"
    if engine.dialect.name != "postgresql":
        return [Finding(name, "skip", "SQLite runs on this machine's clock: nothing to compare")]
    with read_only(engine).connect() as conn:
        before = ctx.clock.now()
        server: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = ctx.clock.now()
    ours = before + (after - before) / 2
    skew = (server - ours).total_seconds()
    said = f"this host's clock is {abs(skew):.3f} s {'behind' if skew > 0 else 'ahead of'} the database server's"
    advice = (
        "run NTP (chrony, systemd-timesyncd) on every host: leases and rate budgets need one time"
    )
    if abs(skew) > CLOCK_SKEW_FAIL_S:
        return [Finding(name, "fail", said, advice)]
    if abs(skew) > CLOCK_SKEW_WARN_S:
        return [Finding(name, "warn", said, advice)]
    return [Finding(name, "ok", said)]


def check_data_keys(ctx: Context, engine: Engine) -> list[Finding]:
    """Every data key is wrapped by a configured master key; no previous key is kept for nothing."""
    name = "data keys"
    configured = _configured_kek_ids(ctx)
    if configured is None:
        return [Finding(name, "skip", "the master keys above are not usable")]
    current, previous = configured
    with read_only(engine).connect() as conn:
        used = set(conn.execute(select(data_keys.c.kek_id).distinct()).scalars())
    if not used:
        return [Finding(name, "ok", "none yet: the first start makes them")]
    unknown = sorted(used - {current} - set(previous))
    if unknown:
        return [
            Finding(
                name,
                "fail",
                f"data keys are wrapped by master key(s) {', '.join(unknown)}, which are not "
                "configured: PHI cannot be read",
                "set TELECRM_MASTER_KEY (or add to TELECRM_PREVIOUS_MASTER_KEYS) the key with "
                "that id; `telecrm keys list` shows which key wraps which data key",
            )
        ]
    if used - {current}:
        return [
            Finding(
                name,
                "warn",
                "a rotation is under way: some data keys are still wrapped by a previous key",
                "run `telecrm keys rotate`, then remove TELECRM_PREVIOUS_MASTER_KEYS",
            )
        ]
    idle = [n for n, k in enumerate(previous, start=1) if k not in used]
    if idle:
        entries = ", ".join(str(n) for n in idle)
        return [
            Finding(
                name,
                "warn",
                f"TELECRM_PREVIOUS_MASTER_KEYS entry {entries} wraps no data key any more",
                "remove it: the rotation is finished",
            )
        ]
    return [Finding(name, "ok", "every data key is wrapped by the current master key")]


def _configured_kek_ids(ctx: Context) -> tuple[str, list[str]] | None:
    if ctx.settings.master_key is None:
        return None
    try:
        current = kek_id(parse_master_key(ctx.settings.master_key.get_secret_value()))
        previous = [
            kek_id(parse_master_key(k.get_secret_value()))
            for k in ctx.settings.previous_master_keys
        ]
    except SecurityError:
        return None
    return current, previous
