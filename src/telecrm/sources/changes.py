"""From a row and what was known of it before to the events its change means, and its new snapshot.

Pure: no I/O. What was known before is a `Snapshot`: keyed digests only (see tables.py). A row
whose digest equals the snapshot's is a re-read and means nothing. A new row emits `on_insert`
and every `on_change` rule whose condition already holds (an initial load tells what already
happened); a changed row emits the `on_change` rules whose condition now holds and did not before,
`on_update` with the mapped fields that changed, and `on_delete` when its soft-delete column is
set. Event ids are `db:<source>:<model>:<key>:<rule>`, so the same change read twice is the same
event, and the intake stores it once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from telecrm.security.blind_index import BlindIndex
from telecrm.sources.config import (
    PATIENT_DATA_PATH,
    PATIENT_EVENTS,
    Constant,
    DataSpec,
    ModelConfig,
)

COLUMN_DIGEST_HEX = (
    16  # 64 bits per watched column: a wrong "unchanged" needs a collision in one row
)
_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_NULL = "\x00null"


def canonical(value: Any) -> str:
    """One spelling per value, shared by the digests and by a rule's `to:` / `from:`."""
    if type(value) is str:  # most values: first, and cheaply
        return value
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


class Snapshot(NamedTuple):
    """What telecrm keeps of a row it has read. A named tuple, so the helper process sends it as
    the plain tuple of its fields, rebuilt with `tuple.__new__(Snapshot, t)` (prepare.py)."""

    row_key: str
    patient_id: str | None
    generation: int
    row_digest: str | None  # None: a tombstone (the row was deleted)
    columns: Mapping[str, str]
    deleted: bool

    def columns_json(self) -> str:
        return orjson.dumps(dict(self.columns), option=orjson.OPT_SORT_KEYS).decode()


DIGEST_SCHEME = "b2:"  # row digests of this scheme start with it; older snapshots are HMAC ones


def digest_key(index: BlindIndex, source: str, model: str) -> bytes:
    """The 32-byte key a model's row digests are made with (a subkey of the blind-index key)."""
    return index.subkey(f"source-digest:{source}:{model}")


class RowDigester:
    """Keyed BLAKE2b digests of a model's rows: one over every column it reads (but the cursor)
    and a short one per watched column, under a key derived per source and model.

    BLAKE2b in keyed mode is a MAC by design, so no HMAC construction is needed around it; the
    keyed states are made once and copied per value (a copy costs less than re-keying)."""

    def __init__(self, key: bytes, model: ModelConfig) -> None:
        self._model = model
        self._row = hashlib.blake2b(key=key, digest_size=16, person=b"telecrm/row")
        self._col: dict[str, Any] = {}
        for c in model.watched():
            h = hashlib.blake2b(key=key, digest_size=COLUMN_DIGEST_HEX // 2, person=b"telecrm/col")
            h.update(c.encode() + b"\x00")
            self._col[c] = h
        # The cursor moves on every write; alone it changes nothing a rule can see, so a row whose
        # only change is its updated_at is a re-read, not a change.
        self._columns = [c for c in model.columns() if c != model.cursor]

    def row(self, row: Mapping[str, Any]) -> str:
        h = self._row.copy()
        values = map(row.get, self._columns)
        h.update(orjson.dumps([v if type(v) is str else canonical(v) for v in values]))
        return DIGEST_SCHEME + h.hexdigest()

    def column(self, column: str, value: Any) -> str:
        h = self._col[column].copy()
        h.update(canonical(value).encode())
        return h.hexdigest()

    def columns(self, row: Mapping[str, Any]) -> dict[str, str]:
        return {c: self.column(c, row.get(c)) for c in self._col}


class LegacyDigester(RowDigester):
    """The first scheme (an HMAC-SHA256 per value through the blind index): read only, to compare
    a row with a snapshot written before the BLAKE2b digests; what is saved is always new."""

    def __init__(self, index: BlindIndex, source: str, model: ModelConfig) -> None:
        self._index, self._model = index, model
        self._row_label = f"source-row:{source}:{model.name}"
        self._col_label = {c: f"source-col:{source}:{model.name}:{c}" for c in model.watched()}
        self._col = dict.fromkeys(model.watched())
        self._columns = [c for c in model.columns() if c != model.cursor]

    def row(self, row: Mapping[str, Any]) -> str:
        text = "\x1f".join(f"{c}={canonical(row.get(c))}" for c in self._columns)
        return self._index.of(self._row_label, text)

    def column(self, column: str, value: Any) -> str:
        return self._index.of(self._col_label[column], "v:" + canonical(value))[:COLUMN_DIGEST_HEX]


def is_legacy(snapshot: Snapshot | None) -> bool:
    return (
        snapshot is not None
        and snapshot.row_digest is not None
        and not snapshot.row_digest.startswith(DIGEST_SCHEME)
    )


def row_key(row: Mapping[str, Any], model: ModelConfig) -> str:
    return canonical(row[model.primary_key])


def event_id(source: str, model: str, key: str, generation: int, suffix: str) -> str:
    part = key if _SAFE_KEY.fullmatch(key) else "h" + hashlib.sha256(key.encode()).hexdigest()[:32]
    gen = f"g{generation}:" if generation else ""
    return f"db:{source}:{model}:{part}:{gen}{suffix}"[:128]


@dataclass
class RowOutcome:
    events: list[dict[str, Any]] = field(default_factory=list)
    snapshot: Snapshot | None = None  # None: nothing changed (a re-read)


def _nest(out: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _data(spec: DataSpec, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, source in spec.items():
        value = source.value if isinstance(source, Constant) else json_value(row.get(source))
        if value is not None:
            _nest(out, tuple(key.split(".")), value)
    return out


def patient_data(
    model: ModelConfig, row: Mapping[str, Any], only: set[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, name in model.fields.items():
        if only is not None and column not in only:
            continue
        value = json_value(row.get(column))
        if value is not None and name in PATIENT_DATA_PATH:
            _nest(out, PATIENT_DATA_PATH[name], value)
    return out


class RowChanges:
    """Turns a model's rows into events and snapshots; `now` caps timestamps from a fast clock."""

    def __init__(
        self,
        source: str,
        model: ModelConfig,
        digester: RowDigester,
        now: Callable[[], datetime],
        legacy: RowDigester | None = None,
    ) -> None:
        self.source, self.model, self.digester, self._now = source, model, digester, now
        self.legacy = legacy  # compares with snapshots of the first digest scheme

    def _when(self, row: Mapping[str, Any], *columns: str | None) -> str:
        for column in (*columns, self.model.cursor, self.model.created_at):
            value = row.get(column) if column else None
            if isinstance(value, datetime):
                at = value if value.tzinfo else value.replace(tzinfo=UTC)
                # The database's clock may run ahead of ours: an instant from our future is
                # clamped to now rather than refused (the intake refuses > 5 minutes ahead).
                return min(at, self._now()).isoformat()
        return self._now().isoformat()

    def _event(
        self,
        type_: str,
        key: str,
        generation: int,
        suffix: str,
        patient: Any,
        at: str,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "id": event_id(self.source, self.model.name, key, generation, suffix),
            "type": type_,
            "occurred_at": at,
            "patient": {"id": None if patient is None else canonical(patient)},
            "data": data,
        }

    def outcome(self, row: Mapping[str, Any], before: Snapshot | None) -> RowOutcome:
        m = self.model
        key = row_key(row, m)
        digest = self.digester.row(row)
        compare = self.digester
        if is_legacy(before):
            assert before is not None
            if self.legacy is None:
                raise ValueError("a snapshot of the first digest scheme needs the legacy digester")
            compare = self.legacy
            if compare.row(row) == before.row_digest:
                return RowOutcome()
        elif before is not None and before.row_digest == digest:
            return RowOutcome()
        columns = self.digester.columns(row)
        known = columns if compare is self.digester else compare.columns(row)
        deleted_now = m.soft_delete is not None and row.get(m.soft_delete) is not None
        patient = row.get(m.patient_id)
        alive_before = before is not None and before.row_digest is not None and not before.deleted
        generation = before.generation if before is not None else 0
        if (
            before is not None
            and before.row_digest is not None
            and before.deleted
            and not deleted_now
        ):
            generation += 1  # undeleted: from here on a new row under the same key
        snapshot = Snapshot(
            key,
            None if patient is None else canonical(patient),
            generation,
            digest,
            columns,
            deleted_now,
        )
        out = RowOutcome(snapshot=snapshot)
        if deleted_now:
            if alive_before and m.on_delete is not None:
                out.events.append(
                    self._event(
                        m.on_delete.type,
                        key,
                        generation,
                        "deleted",
                        patient,
                        self._when(row, m.soft_delete),
                        _data(m.on_delete.data, row),
                    )
                )
            return out
        if not alive_before:
            if m.on_insert is not None:
                rule = m.on_insert
                data = patient_data(m, row) if rule.type in PATIENT_EVENTS else {}
                data.update(_data(rule.data, row))
                out.events.append(
                    self._event(
                        rule.type,
                        key,
                        generation,
                        "created",
                        patient,
                        self._when(row, rule.occurred_at, m.created_at),
                        data,
                    )
                )
            for change in m.on_change:
                if self._holds(change, row):
                    out.events.append(self._change_event(change, key, generation, patient, row))
            return out
        assert before is not None
        for change in m.on_change:
            if self._holds(change, row) and self._fires(change, before, compare):
                out.events.append(self._change_event(change, key, generation, patient, row))
        if m.on_update is not None:
            changed = {c for c in m.fields if before.columns.get(c) not in (None, known[c])}
            data = patient_data(m, row, only=changed)
            if data:
                suffix = f"updated:{digest.removeprefix(DIGEST_SCHEME)[:16]}"
                out.events.append(
                    self._event(
                        m.on_update.type,
                        key,
                        generation,
                        suffix,
                        patient,
                        self._when(row, m.on_update.occurred_at),
                        data,
                    )
                )
        return out

    def _change_event(
        self, rule: Any, key: str, generation: int, patient: Any, row: Mapping[str, Any]
    ) -> dict[str, Any]:
        data = patient_data(self.model, row) if rule.type in PATIENT_EVENTS else {}
        data.update(_data(rule.data, row))
        return self._event(
            rule.type, key, generation, rule.name, patient, self._when(row, rule.occurred_at), data
        )

    @staticmethod
    def _holds(rule: Any, row: Mapping[str, Any]) -> bool:
        value = row.get(rule.column)
        if rule.not_null:
            return value is not None
        return value is not None and canonical(value) == canonical(rule.to)

    @staticmethod
    def _fires(rule: Any, before: Snapshot, digester: RowDigester) -> bool:
        """The condition did not hold before (and `from`, if given, matched the old value).
        A column with no digest from before (the rule is newer than the snapshot) stays quiet."""
        old = before.columns.get(rule.column)
        if old is None:
            return False
        col = digester.column
        held = old != col(rule.column, None) if rule.not_null else old == col(rule.column, rule.to)
        if held:
            return False
        if rule.from_ is not None:
            return old in {col(rule.column, v) for v in rule.from_}
        return True

    def tombstone(self, before: Snapshot, now_us: int) -> tuple[list[dict[str, Any]], Snapshot]:
        """A row gone from the table (key diff): its delete event, and the tombstone to keep."""
        m = self.model
        events: list[dict[str, Any]] = []
        if m.on_delete is not None and not before.deleted:
            events.append(
                self._event(
                    m.on_delete.type,
                    before.row_key,
                    before.generation,
                    "deleted",
                    before.patient_id,
                    self._now().isoformat(),
                    _data(m.on_delete.data, {}),
                )
            )
        return events, Snapshot(
            before.row_key, before.patient_id, before.generation + 1, None, {}, True
        )
