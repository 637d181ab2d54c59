"""Where each model's reading got to, and the snapshots of the rows it has seen (tables.py).

`Checkpoints` reads and writes `source_checkpoints` and `source_row_snapshots` for one source.
Writes take the caller's connection: the reader saves them in the transaction that stores the
events they account for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from telecrm.sources.changes import Snapshot, canonical
from telecrm.sources.config import ModelConfig
from telecrm.sources.drift import baseline_json, parse_baseline
from telecrm.sources.tables import source_checkpoints, source_row_snapshots
from telecrm.store.upsert import upsert, upsert_rows_fast

IN_CHUNK = 500  # snapshot lookups per IN (...) list


@dataclass
class ModelState:
    cursor_kind: str | None
    high_water: str | None
    last_full_scan_us: int | None
    schema: dict[str, str] | None
    stopped_reason: str | None
    rows_seen: int
    events_emitted: int

    @property
    def cursor(self) -> Any:
        return decode_cursor(self.cursor_kind, self.high_water)


def encode_cursor(value: Any) -> tuple[str, str]:
    if isinstance(value, datetime):
        return "timestamp", value.isoformat()
    if isinstance(value, int):
        return "number", str(value)
    return "text", canonical(value)


def decode_cursor(kind: str | None, raw: str | None) -> Any:
    if raw is None:
        return None
    if kind == "timestamp":
        return datetime.fromisoformat(raw)
    if kind == "number":
        return int(raw)
    return raw


def cursor_max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return b if b > a else a


class Checkpoints:
    def __init__(self, store: Engine, source: str) -> None:
        self._store, self._source = store, source

    def state(self, model: ModelConfig) -> ModelState:
        t = source_checkpoints
        with self._store.connect() as conn:
            r = conn.execute(
                select(t).where(t.c.source == self._source, t.c.model == model.name)
            ).first()
        if r is None:
            return ModelState(None, None, None, None, None, 0, 0)
        return ModelState(
            r.cursor_kind,
            r.high_water,
            r.last_full_scan_us,
            parse_baseline(r.schema_json),
            r.stopped_reason,
            r.rows_seen,
            r.events_emitted,
        )

    def save(
        self,
        conn: Connection,
        model: ModelConfig,
        state: ModelState,
        now_us: int,
        *,
        high_water: Any = None,
        rows: int = 0,
        events: int = 0,
        full_scan_us: int | None = None,
        stopped_reason: str | None = None,
    ) -> None:
        """Update `state` and write it; a model saved without `stopped_reason` runs again."""
        if high_water is not None:
            state.cursor_kind, state.high_water = encode_cursor(high_water)
        state.rows_seen += rows
        state.events_emitted += events
        if full_scan_us is not None:
            state.last_full_scan_us = full_scan_us
        state.stopped_reason = stopped_reason[:1024] if stopped_reason else None
        values = {
            "cursor_kind": state.cursor_kind,
            "high_water": state.high_water,
            "last_full_scan_us": state.last_full_scan_us,
            "schema_json": baseline_json(state.schema) if state.schema else None,
            "stopped_reason": state.stopped_reason,
            "rows_seen": state.rows_seen,
            "events_emitted": state.events_emitted,
            "updated_us": now_us,
        }
        upsert(
            conn,
            source_checkpoints,
            [{"source": self._source, "model": model.name, **values}],
            ["source", "model"],
            list(values),
        )

    def save_alone(self, model: ModelConfig, state: ModelState, now_us: int, **kwargs: Any) -> None:
        with self._store.begin() as conn:
            self.save(conn, model, state, now_us, **kwargs)

    def forget_schema(self, models: Sequence[str]) -> None:
        """`run --accept-drift`: the next read records the columns afresh."""
        with self._store.begin() as conn:
            conn.execute(
                source_checkpoints.update()
                .where(
                    source_checkpoints.c.source == self._source,
                    source_checkpoints.c.model.in_(list(models)),
                )
                .values(schema_json=None, stopped_reason=None)
            )

    def snapshots(self, model: ModelConfig, keys: Sequence[str]) -> dict[str, Snapshot]:
        t = source_row_snapshots
        found: dict[str, Snapshot] = {}
        with self._store.connect() as conn:
            for start in range(0, len(keys), IN_CHUNK):
                part = list(keys[start : start + IN_CHUNK])
                for r in conn.execute(
                    select(t).where(
                        t.c.source == self._source, t.c.model == model.name, t.c.row_key.in_(part)
                    )
                ):
                    found[r.row_key] = _snapshot(r)
        return found

    def live_snapshots(self, model: ModelConfig) -> list[Snapshot]:
        """Every row the model has seen and not seen deleted (for the key diff)."""
        t = source_row_snapshots
        with self._store.connect() as conn:
            return [
                _snapshot(r)
                for r in conn.execute(
                    select(t).where(
                        t.c.source == self._source,
                        t.c.model == model.name,
                        t.c.row_digest.is_not(None),
                    )
                )
            ]

    def has_snapshots(self, model: ModelConfig) -> bool:
        t = source_row_snapshots
        with self._store.connect() as conn:
            return (
                conn.execute(
                    select(t.c.row_key)
                    .where(t.c.source == self._source, t.c.model == model.name)
                    .limit(1)
                ).first()
                is not None
            )

    def save_snapshots(
        self, conn: Connection, model: ModelConfig, snapshots: Sequence[Snapshot], now_us: int
    ) -> None:
        upsert_rows_fast(
            conn,
            source_row_snapshots,
            [
                {
                    "source": self._source,
                    "model": model.name,
                    "row_key": s.row_key,
                    "patient_id": s.patient_id,
                    "generation": s.generation,
                    "row_digest": s.row_digest,
                    "column_digests": s.columns_json(),
                    "deleted": s.deleted,
                    "updated_us": now_us,
                }
                for s in snapshots
            ],
            ["source", "model", "row_key"],
            ["patient_id", "generation", "row_digest", "column_digests", "deleted", "updated_us"],
        )


def _snapshot(r: Any) -> Snapshot:
    return Snapshot(
        r.row_key,
        r.patient_id,
        r.generation,
        r.row_digest,
        orjson.loads(r.column_digests),
        r.deleted,
    )
