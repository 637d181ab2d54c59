"""Database source, initial load: rows scanned per second and events emitted per second.

1. Writes a simulated platform into a PostgreSQL database with `simulate --to-postgres`'s
   machinery (`PlatformDatabase`), by default 220,000 patients over 12 months: just over
   1,000,000 rows across the platform's tables (setup, timed separately).
2. Times the first `telecrm sources run` over it: the shipped example models file, telecrm's
   store on a fresh SQLite file (or, with `--store postgres`, a fresh PostgreSQL database on
   the same server, dropped afterwards), folding into profiles left out (`--no-process`).
Prints JSON, with the load average before and after (the machine may be shared).

    .venv/bin/python bench/source_initial_load.py
    .venv/bin/python bench/source_initial_load.py --patients 20000 --reuse
    .venv/bin/python bench/source_initial_load.py --patients 20000 --reuse --store postgres

Two experiments on the SQLite store (session 12, neither kept in telecrm): `--pragma NAME=VALUE`
(repeatable) sets a PRAGMA on every connection of the store; `--drop-secondary-indexes` drops the
per-patient event order and the pending queue's time index before the read and builds them after
(timed apart), as a first load into an empty store could.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telecrm.bootstrap import bootstrap
from telecrm.observability.logs import configure_logging
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.to_postgres import TABLES, PlatformDatabase
from telecrm.sources.config import load_sources
from telecrm.sources.demo_source import EXAMPLE_MODELS
from telecrm.sources.platform_db import platform_engine
from telecrm.sources.reader import SourceReader

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "telecrm_bench_platform"
STORE_DATABASE = "telecrm_bench_store"
# (name, how to build it again): indexes an empty store could do without during a first load
SECONDARY_INDEXES = (
    (
        "ix_events_patient_order",
        "CREATE INDEX ix_events_patient_order ON events (patient_key, occurred_us, seq)",
    ),
    (
        "ix_pending_patients_enqueued_us",
        "CREATE INDEX ix_pending_patients_enqueued_us ON pending_patients (enqueued_us)",
    ),
)


def platform_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]  # noqa: S608 (our table names)
            for t in TABLES
            if t != "simulation_state"
        }


def write_platform(
    url: str, database: str, config: SimulationConfig, reuse: bool
) -> dict[str, object]:
    if reuse:
        try:
            with psycopg.connect(url) as conn:
                conn.execute("SELECT 1 FROM simulation_state")
            return {"reused": True}
        except psycopg.Error:
            pass
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    began = time.perf_counter()
    db = PlatformDatabase(url, config)
    db.create(reset=True)
    report = db.advance()
    seconds = time.perf_counter() - began
    return {
        "reused": False,
        "events_applied": report.events_applied,
        "seconds": round(seconds, 1),
        "events_per_second": round(report.events_applied / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=220_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--reuse", action="store_true", help="keep a platform database written before"
    )
    parser.add_argument(
        "--parallel",
        choices=("auto", "on", "off"),
        default="auto",
        help="prepare pages in a helper process (auto: over 20,000 rows, as `sources run` does)",
    )
    parser.add_argument("--page-size", type=int, help="override the models file's page_size")
    parser.add_argument(
        "--database", default=DATABASE, help="the platform database's name (dropped and written)"
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help=f"telecrm's own store: a fresh SQLite file, or a fresh {STORE_DATABASE} database",
    )
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PRAGMA for every connection of a SQLite store (repeatable), e.g. mmap_size=2147483648",
    )
    parser.add_argument(
        "--drop-secondary-indexes",
        action="store_true",
        help="drop two secondary indexes before the read and build them after (SQLite store)",
    )
    args = parser.parse_args()
    if (args.pragma or args.drop_secondary_indexes) and args.store != "sqlite":
        parser.error("--pragma and --drop-secondary-indexes are for the SQLite store")
    for p in args.pragma:
        if not re.fullmatch(r"[a-z_]+=-?\w+", p):
            parser.error(f"--pragma takes NAME=VALUE, got {p!r}")

    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{args.database}"
    config = SimulationConfig(
        patients=args.patients, months=args.months, seed=args.seed, start=date(2025, 1, 1)
    )
    configure_logging("WARNING")  # JSON only on stdout
    load_before_setup = os.getloadavg()
    setup = write_platform(url, args.database, config, args.reuse)
    rows = platform_rows(url)

    home = Path(tempfile.mkdtemp(prefix="telecrm-bench-source-"))
    store_url = f"sqlite:///{home / 'telecrm.db'}"
    if args.store == "postgres":
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{STORE_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{STORE_DATABASE}"')
        store_url = "postgresql+psycopg://postgres@127.0.0.1:5432/" + STORE_DATABASE
    settings = Settings(
        home=home,
        database_url=store_url,
        master_key=generate_master_key(),
        log_level="WARNING",
        embedded_worker=False,
    )
    rt = bootstrap(settings)
    if args.pragma:
        pragmas = list(args.pragma)

        @event.listens_for(rt.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for p in pragmas:
                cur.execute(f"PRAGMA {p}")  # checked NAME=VALUE above
            cur.close()

        rt.engine.dispose()  # connections opened by bootstrap get them too
    if args.drop_secondary_indexes:
        with rt.engine.begin() as conn:
            for name, _ in SECONDARY_INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
    source = load_sources(EXAMPLE_MODELS).source("platform")
    if args.page_size:
        source = source.model_copy(update={"page_size": args.page_size})
    engine = platform_engine(source, {source.url_env: url})
    reader = SourceReader(source, engine, rt.engine, rt.intake(), rt.blind_index(), rt.clock)
    load_before = os.getloadavg()
    began = time.perf_counter()
    report = reader.run(parallel={"auto": None, "on": True, "off": False}[args.parallel])
    seconds = time.perf_counter() - began
    index_seconds = None
    if args.drop_secondary_indexes:
        built = time.perf_counter()
        with rt.engine.begin() as conn:
            for _, ddl in SECONDARY_INDEXES:
                conn.execute(text(ddl))
        index_seconds = round(time.perf_counter() - built, 1)
    load_after = os.getloadavg()
    scanned = sum(m.rows for m in report.models)
    print(
        json.dumps(
            {
                "benchmark": "source_initial_load",
                "world": {"patients": args.patients, "months": args.months, "seed": args.seed},
                "setup": setup,
                "platform_rows_total": sum(rows.values()),
                "platform_rows": rows,
                "store": args.store,
                "pragmas": args.pragma,
                "secondary_indexes_built_after_seconds": index_seconds,
                "parallel": args.parallel,
                "rows_scanned": scanned,
                "events_emitted": report.events,
                "duplicates": sum(m.duplicates for m in report.models),
                "stopped": [m.model for m in report.models if m.stopped],
                "seconds": round(seconds, 1),
                "rows_scanned_per_second": round(scanned / seconds),
                "events_emitted_per_second": round(report.events / seconds),
                "per_model": {
                    m.model: {"rows": m.rows, "events": m.events, "pages": m.pages}
                    for m in report.models
                },
                "loadavg_before_setup": load_before_setup,
                "loadavg_before_read": load_before,
                "loadavg_after_read": load_after,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    if args.store == "postgres":
        rt.engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{STORE_DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
