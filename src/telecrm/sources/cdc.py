"""Change data capture through PostgreSQL logical replication, with polling as the fallback.

A publication (`telecrm_<source>`, the models' tables) and a `pgoutput` replication slot of the
same name tell telecrm which rows changed, within a second of their commit. telecrm peeks at the
slot's changes (`pg_logical_slot_peek_binary_changes`), re-reads the rows they name through the
reader (`SourceReader.apply_keys`: the same snapshots, the same event ids, the same transaction
with the checkpoint), and only then advances the slot past them (`pg_replication_slot_advance`).
A crash between the two re-reads the same rows and emits nothing new.

The slot holds WAL back until it is advanced: its lag is exported as
`telecrm_source_slot_lag_bytes{source}` and a warning is logged past `max_lag_bytes`. When the
server is not at `wal_level=logical`, the publication is missing and cannot be created, or the
role may not create a slot (it needs REPLICATION, which still cannot write a table), `start()`
says why and the caller polls instead. Query models always poll (a query names no table).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from telecrm.sources.config import ModelConfig, SourceConfig
from telecrm.sources.pgoutput import Commit, Relation, RowChange, decode
from telecrm.sources.platform_db import quote, sqlstate
from telecrm.sources.reader import ModelReport, SourceReader

log = structlog.get_logger("telecrm.sources.cdc")

PEEK_CHANGES = 10_000  # changes per peek; whole transactions are always returned
MAX_LAG_BYTES = 1 << 30  # 1 GiB of WAL held back by the slot: warn, the disk is filling

_gauges: dict[int, Gauge] = {}


def slot_lag_gauge(registry: CollectorRegistry) -> Gauge:
    gauge = _gauges.get(id(registry))
    if gauge is None:
        gauge = Gauge(
            "telecrm_source_slot_lag_bytes",
            "WAL a database source's replication slot holds back (bytes)",
            ["source"],
            registry=registry,
        )
        _gauges[id(registry)] = gauge
    return gauge


@dataclass
class CaptureReport:
    changes: int = 0
    transactions: int = 0
    lag_bytes: int | None = None
    models: list[ModelReport] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(m.events for m in self.models)


def _table_key(name: str) -> str:
    return name if "." in name else f"public.{name}"


class LogicalCapture:
    def __init__(
        self,
        source: SourceConfig,
        platform: Engine,
        reader: SourceReader,
        *,
        registry: CollectorRegistry | None = None,
        max_lag_bytes: int = MAX_LAG_BYTES,
    ) -> None:
        self.source, self._platform, self._reader = source, platform, reader
        self.slot = self.publication = f"telecrm_{source.name}"
        self._gauge = slot_lag_gauge(registry) if registry is not None else None
        self._max_lag = max_lag_bytes
        self.models: dict[str, ModelConfig] = {
            _table_key(m.table): m for m in source.models if m.table is not None
        }
        # Query models name no table the slot could report on: the caller polls these.
        self.polled = [m.name for m in source.models if m.table is None]

    def start(self) -> str | None:
        """Make sure the publication and the slot exist; None if capture can run, else why not."""
        if not self.models:
            return "no model reads a table (query models are polled)"
        try:
            with self._platform.connect() as conn:
                level = conn.execute(text("SHOW wal_level")).scalar_one()
                if level != "logical":
                    return (
                        f"the server runs wal_level={level}; logical replication needs "
                        "wal_level=logical (postgresql.conf, then a restart)"
                    )
                has_pub = conn.execute(
                    text("SELECT 1 FROM pg_publication WHERE pubname = :p"),
                    {"p": self.publication},
                ).first()
                conn.rollback()
                if has_pub is None and not self._try(
                    conn,
                    f"CREATE PUBLICATION {quote(self.publication)} FOR TABLE "
                    + ", ".join(quote(m.table or "") for m in self.models.values()),
                ):
                    return (
                        f"publication {self.publication} does not exist and this role may not "
                        f"create it: as the tables' owner run CREATE PUBLICATION "
                        f"{self.publication} FOR TABLE "
                        + ", ".join(m.table or "" for m in self.models.values())
                    )
                has_slot = conn.execute(
                    text("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s"),
                    {"s": self.slot},
                ).first()
                conn.rollback()
                if has_slot is None and not self._try(
                    conn,
                    "SELECT pg_create_logical_replication_slot(:s, 'pgoutput')",
                    {"s": self.slot},
                ):
                    return (
                        f"replication slot {self.slot} does not exist and this role may not "
                        "create it (it needs the REPLICATION attribute and a free "
                        "max_replication_slots)"
                    )
        except DBAPIError as exc:
            return f"logical replication is not available (SQLSTATE {sqlstate(exc) or 'unknown'})"
        return None

    @staticmethod
    def _try(conn: Any, statement: str, params: dict[str, Any] | None = None) -> bool:
        try:
            with conn.begin():
                conn.execute(text(statement), params or {})
            return True
        except DBAPIError:
            return False

    def poll(self) -> CaptureReport:
        """Apply every committed change the slot holds; then advance the slot past them."""
        report = CaptureReport()
        relations: dict[int, Relation] = {}
        keys: dict[str, set[str]] = defaultdict(set)
        last_commit: int | None = None
        with self._platform.connect() as conn, conn.begin():
            conn.exec_driver_sql(
                f"SET LOCAL statement_timeout = {int(self.source.statement_timeout_seconds * 1000)}"
            )
            rows = conn.execute(
                text(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes(:s, NULL, :n,"
                    " 'proto_version', '1', 'publication_names', :p)"
                ),
                {"s": self.slot, "n": PEEK_CHANGES, "p": self.publication},
            ).all()
        for (data,) in rows:
            message = decode(bytes(data), relations)
            if isinstance(message, RowChange):
                relation = relations.get(message.relation_id)
                model = self.models.get(relation.qualified) if relation is not None else None
                if model is None:
                    continue
                key = message.values.get(model.primary_key)
                if key is not None:
                    keys[model.name].add(key)
                    report.changes += 1
            elif isinstance(message, Commit):
                last_commit = message.end_lsn
                report.transactions += 1
        for model in self.source.models:  # file order: patients first
            if keys.get(model.name):
                report.models.append(self._reader.apply_keys(model, sorted(keys[model.name])))
        if last_commit is not None:
            with self._platform.connect() as conn, conn.begin():
                conn.execute(
                    text("SELECT pg_replication_slot_advance(:s, :lsn)"),
                    {"s": self.slot, "lsn": _lsn_text(last_commit)},
                )
        report.lag_bytes = self.lag_bytes()
        return report

    def lag_bytes(self) -> int | None:
        with self._platform.connect() as conn:
            lag = conn.execute(
                text(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                    " FROM pg_replication_slots WHERE slot_name = :s"
                ),
                {"s": self.slot},
            ).scalar()
        if lag is None:
            return None
        if self._gauge is not None:
            self._gauge.labels(self.source.name).set(int(lag))
        if lag > self._max_lag:
            log.warning(
                "source.slot_lag_high",
                source=self.source.name,
                slot=self.slot,
                lag_bytes=int(lag),
                hint="telecrm is not keeping up or is stopped; the slot holds WAL back "
                "(drop it with pg_drop_replication_slot if the source is retired)",
            )
        return int(lag)

    def drop(self) -> None:
        """Remove the slot (the source is retired): it would hold WAL back forever."""
        with self._platform.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": self.slot})


def _lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
