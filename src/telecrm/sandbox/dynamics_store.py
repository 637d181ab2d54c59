"""The Dataverse sandbox's rows: upsert by GUID or alternate key, lookups, deletes, change-set undo.

Plain Python, no HTTP: `dynamics.py` turns requests into calls here and `OdataError`s into
`{"error": {"code", "message"}}` bodies (crm-apis.md §4.4). Messages read like Dataverse's and,
like some of Dataverse's, may echo a value (a key value, a literal that failed to convert), so a
client that copies messages into logs is caught. Writes inside `transaction()` roll back
together: that is what a `$batch` change set gives (§4.2).
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from telecrm.sandbox.dynamics_schema import (
    BAD_PROPERTY,
    DOES_NOT_EXIST,
    DUPLICATE_KEY,
    INVALID_ARGUMENT,
    METADATA_EXISTS,
    NOT_FOUND_SEGMENT,
    TOO_LONG,
    AlternateKey,
    Column,
    OdataError,
    Relationship,
    Table,
    entity_set_of,
    standard_tables,
)


@dataclass
class DataverseStore:
    """One environment's tables, keys and rows; `now` drives key activation and timestamps."""

    now: Callable[[], float]
    publisher_prefix: str = "telecrm"
    key_activation_seconds: float = 0.0
    tables: dict[str, Table] = field(init=False)
    keys: dict[str, dict[str, AlternateKey]] = field(init=False)
    rows: dict[str, dict[str, dict[str, Any]]] = field(init=False)
    relationships: dict[str, Relationship] = field(init=False)
    _undo: list[tuple[str, str, dict[str, Any] | None]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tables = standard_tables()
        self.keys = {name: {} for name in self.tables}
        self.rows = {name: {} for name in self.tables}
        self.relationships = {}
        # (table, key attributes) -> {case-folded key values: row id}: a lookup by alternate key
        # is a dict get, as an indexed key is in Dataverse, not a scan of every row.
        self._index: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], str]] = {}
        self._version = 1_000_000
        self._undo = None

    # -- names -----------------------------------------------------------------------------
    def table_by_set(self, entity_set: str) -> Table:
        for t in self.tables.values():
            if t.entity_set == entity_set:
                return t
        raise OdataError(
            404, NOT_FOUND_SEGMENT, f"Resource not found for the segment '{entity_set}'."
        )

    def table(self, logical: str) -> Table:
        if logical not in self.tables:
            raise OdataError(404, DOES_NOT_EXIST, f"Could not find entity with name '{logical}'.")
        return self.tables[logical]

    # -- transactions (change sets) --------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside succeed together or are undone together."""
        self._undo = []
        try:
            yield
        except BaseException:
            for logical, row_id, before in reversed(self._undo):
                self._put(logical, row_id, before)
            raise
        finally:
            self._undo = None

    def _put(self, logical: str, row_id: str, row: dict[str, Any] | None) -> None:
        old = self.rows[logical].get(row_id)
        if self._undo is not None:
            self._undo.append((logical, row_id, copy.deepcopy(old) if old else None))
        for (table, attrs), index in self._index.items():
            if table != logical:
                continue
            if old is not None:
                index.pop(_key_values(old, attrs), None)
            if row is not None:
                index[_key_values(row, attrs)] = row_id
        if row is None:
            self.rows[logical].pop(row_id, None)
        else:
            self.rows[logical][row_id] = row

    # -- rows ------------------------------------------------------------------------------
    def find(self, table: Table, key: str | dict[str, str]) -> str | None:
        """The row id a GUID or alternate-key value names, or None."""
        if isinstance(key, str):
            return key if key in self.rows[table.logical] else None
        attrs = tuple(sorted(key))
        self._require_key(table, attrs)
        index = self._index.get((table.logical, attrs))
        if index is None:
            index = {_key_values(r, attrs): i for i, r in self.rows[table.logical].items()}
            self._index[(table.logical, attrs)] = index
        return index.get(tuple(str(key[a]).casefold() for a in attrs))

    def _require_key(self, table: Table, attributes: tuple[str, ...]) -> None:
        for k in self.keys[table.logical].values():
            if tuple(sorted(k.attributes)) == attributes:
                if k.status(self.now()) != "Active":
                    raise OdataError(
                        400,
                        INVALID_ARGUMENT,
                        f"The alternate key '{k.name}' of entity '{table.logical}' is not active yet.",
                    )
                return
        raise OdataError(
            400,
            INVALID_ARGUMENT,
            f"The key attribute(s) {', '.join(attributes)} is not defined as an alternate key for entity '{table.logical}'.",
        )

    def get(self, table: Table, key: str | dict[str, str]) -> dict[str, Any]:
        row_id = self.find(table, key)
        if row_id is None:
            raise self._missing(table, key)
        return self.rows[table.logical][row_id]

    def upsert(
        self,
        table: Table,
        key: str | dict[str, str],
        body: dict[str, Any],
        *,
        if_match: bool = False,
        if_none_match: bool = False,
        resolve: Callable[[str], tuple[Table, str | dict[str, str]]],
    ) -> tuple[str, bool]:
        """PATCH by GUID or alternate key: (row id, created). If-Match/If-None-Match `*` per §4.2."""
        row_id = self.find(table, key)
        if row_id is not None and if_none_match:
            raise OdataError(
                412, DUPLICATE_KEY, "A record with matching key values already exists."
            )
        if row_id is None and if_match:
            raise self._missing(table, key)
        values = self._validated(table, body, resolve)
        created = row_id is None
        if created:
            row_id = key if isinstance(key, str) else str(uuid.uuid4())
            values |= {} if isinstance(key, str) else dict(key)
            if table.requires and f"_{table.requires}_value" not in values:
                raise OdataError(
                    400, INVALID_ARGUMENT, "You should specify a parent contact or account."
                )
            stamp = self._timestamp()
            row: dict[str, Any] = {table.primary_id: row_id, "statecode": 0, "createdon": stamp}
        else:
            assert row_id is not None
            row = copy.deepcopy(self.rows[table.logical][row_id])
        self._version += 1
        row |= values | {"modifiedon": self._timestamp(), "versionnumber": self._version}
        self._put(table.logical, row_id, row)
        return row_id, created

    def delete(self, table: Table, key: str | dict[str, str]) -> None:
        row_id = self.find(table, key)
        if row_id is None:
            raise self._missing(table, key)
        self._put(table.logical, row_id, None)

    def _missing(self, table: Table, key: str | dict[str, str]) -> OdataError:
        if isinstance(key, str):
            return OdataError(
                404, DOES_NOT_EXIST, f"{table.logical} With Id = {key} Does Not Exist"
            )
        return OdataError(
            404,
            DOES_NOT_EXIST,
            f"A record with the specified key values does not exist in {table.logical} entity",
        )

    def _timestamp(self) -> str:
        return dt.datetime.fromtimestamp(self.now(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _validated(
        self,
        table: Table,
        body: dict[str, Any],
        resolve: Callable[[str], tuple[Table, str | dict[str, str]]],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in body.items():
            if name.startswith("@odata."):
                continue
            if name.endswith("@odata.bind"):
                nav = name.removesuffix("@odata.bind")
                if nav not in table.lookups or not isinstance(value, str):
                    raise OdataError(
                        400,
                        BAD_PROPERTY,
                        f"An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload.",
                    )
                column, target_name = table.lookups[nav]
                target, target_key = resolve(value)
                if target.logical != target_name:
                    raise OdataError(
                        400,
                        BAD_PROPERTY,
                        f"The navigation property '{nav}' does not point to entity '{target.logical}'.",
                    )
                target_id = self.find(target, target_key)
                if target_id is None:
                    raise self._missing(target, target_key)
                out[f"_{column}_value"] = target_id
                continue
            column_spec = table.columns.get(name)
            if column_spec is None:
                raise OdataError(
                    400,
                    BAD_PROPERTY,
                    f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical}'.",
                )
            out[name] = self._checked(table, name, column_spec, value)
        return out

    @staticmethod
    def _checked(table: Table, name: str, col: Column, value: Any) -> Any:
        if value is None:
            return None
        edm = {
            "String": "Edm.String",
            "Memo": "Edm.String",
            "Integer": "Edm.Int32",
            "Picklist": "Edm.Int32",
            "Decimal": "Edm.Decimal",
            "Money": "Edm.Decimal",
            "Double": "Edm.Double",
            "Boolean": "Edm.Boolean",
            "DateTime": "Edm.DateTimeOffset",
        }[col.kind]
        ok = {
            "Edm.String": isinstance(value, str),
            "Edm.Int32": isinstance(value, int) and not isinstance(value, bool),
            "Edm.Decimal": isinstance(value, int | float) and not isinstance(value, bool),
            "Edm.Double": isinstance(value, int | float) and not isinstance(value, bool),
            "Edm.Boolean": isinstance(value, bool),
            "Edm.DateTimeOffset": isinstance(value, str) and _is_date(value),
        }[edm]
        if not ok:
            # Like the Web API, the message quotes the literal: a value, possibly PHI.
            raise OdataError(
                400,
                BAD_PROPERTY,
                f"Error identified in Payload provided by the user for Entity :'{table.logical}', Property: '{name}'. Cannot convert the literal '{value}' to the expected type '{edm}'.",
            )
        if col.kind in ("String", "Memo") and len(value) > col.max_length:
            raise OdataError(
                400,
                TOO_LONG,
                f"A validation error occurred.  The length of the '{name}' attribute of the '{table.logical}' entity exceeded the maximum allowed length of '{col.max_length}'.",
            )
        if col.kind == "Picklist" and value not in col.options:
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                f"A validation error occurred. The value {value} of '{name}' on record of type '{table.logical}' is outside the valid range.",
            )
        return value

    # -- metadata (EntityDefinitions) ------------------------------------------------------
    def add_column(self, logical: str, name: str, column: Column) -> None:
        table = self.table(logical)
        if name in table.columns or name in table.lookups or name == table.primary_id:
            raise OdataError(
                400, METADATA_EXISTS, f"An attribute with the specified name {name} already exists."
            )
        self._prefixed(name, "Attribute")
        table.columns[name] = column

    def _prefixed(self, name: str, kind: str) -> None:
        if not name.startswith(self.publisher_prefix + "_"):
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                f"The schema name {name} for type {kind} is not prefixed with the publisher prefix '{self.publisher_prefix}_'.",
            )

    def add_table(self, logical: str, primary_name: str, max_length: int) -> Table:
        """A new custom table with its primary name column (CreateEntity)."""
        entity_set = entity_set_of(logical)
        if logical in self.tables or any(t.entity_set == entity_set for t in self.tables.values()):
            raise OdataError(  # message and code UNCONFIRMED
                400,
                METADATA_EXISTS,
                f"An entity with the specified name {logical} already exists. Specify a unique name.",
            )
        self._prefixed(logical, "Entity")
        self._prefixed(primary_name, "Attribute")
        columns = {primary_name: Column("String", max_length, custom=True)}
        table = Table(logical, entity_set, columns, {}, primary_name=primary_name, custom=True)
        self.tables[logical] = table
        self.keys[logical] = {}
        self.rows[logical] = {}
        return table

    def add_relationship(self, r: Relationship) -> None:
        """A one-to-many: the lookup column and its navigation property on `r.referencing`."""
        if r.schema_name in self.relationships:
            raise OdataError(  # message UNCONFIRMED
                400,
                METADATA_EXISTS,
                f"A relationship with the specified name {r.schema_name} already exists.",
            )
        self._prefixed(r.schema_name, "Relationship")
        self._prefixed(r.lookup, "Attribute")
        self.table(r.referenced)
        table = self.table(r.referencing)
        if r.lookup in table.columns or r.navigation in table.lookups:
            raise OdataError(
                400,
                METADATA_EXISTS,
                f"An attribute with the specified name {r.lookup} already exists.",
            )
        table.lookups[r.navigation] = (r.lookup, r.referenced)
        self.relationships[r.schema_name] = r

    def add_key(self, logical: str, name: str, attributes: tuple[str, ...]) -> AlternateKey:
        table = self.table(logical)
        if name in self.keys[logical]:
            raise OdataError(
                400,
                METADATA_EXISTS,
                f"An entity key with the specified name {name} already exists.",
            )
        for a in attributes:
            col = table.columns.get(a)
            if col is None or col.kind not in ("String", "Integer", "Decimal", "DateTime"):
                raise OdataError(
                    400,
                    INVALID_ARGUMENT,
                    f"Attribute {a} cannot be part of an alternate key of entity '{logical}'.",
                )
        key = AlternateKey(name, attributes, self.now() + self.key_activation_seconds)
        self.keys[logical][name] = key
        return key


def _key_values(row: dict[str, Any], attrs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(row.get(a, "")).casefold() for a in attrs)


def _is_date(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
