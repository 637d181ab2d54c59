"""A model's rows, page by page, from the platform's database (each page its own short read).

Keyset pagination: incremental reads go by `(cursor, primary key)` from a start value, so rows
sharing one cursor value across a page boundary are each read once; rows whose cursor is NULL
get a pass of their own, by key; full scans go by key. Every page is one read-only transaction
with the source's statement timeout (platform_db.read_only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.exc import DBAPIError

from telecrm.sources.config import ModelConfig, SourceConfig
from telecrm.sources.platform_db import (
    describe,
    query_failed,
    quote,
    read_only,
    relation_sql,
    sqlstate,
    unavailable,
)

Row = dict[str, Any]

# Pages of a long read grow from the source's page_size, doubling, up to this many rows (never
# below page_size). Measured (docs/benchmarks.md): a million-row first load took 205 s in
# pages of 1,000 and 135-137 s in pages of 5,000 or 10,000, because each page is one commit in
# the store; a 20,000-patient load was 15 % slower in pages of 5,000 from the first page on.
GROWN_PAGE_ROWS = 5_000


class ModelPages:
    def __init__(self, source: SourceConfig, platform: Engine) -> None:
        self.source, self._platform = source, platform

    def describe(self, model: ModelConfig) -> dict[str, str]:
        """The model's columns and their types, as the database has them now."""
        try:
            with read_only(self._platform, self.source.statement_timeout_seconds) as conn:
                return describe(conn, model)
        except DBAPIError as exc:
            raise self._failure(model, exc) from None

    def estimated_rows(self, model: ModelConfig) -> int:
        """The planner's estimate of the model's rows (no scan); 0 when it cannot say."""
        statement = text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {relation_sql(model)}")  # noqa: S608 (validated identifiers)
        try:
            with read_only(self._platform, self.source.statement_timeout_seconds) as conn:
                plan = conn.execute(statement).scalar_one()
        except DBAPIError:
            return 0
        try:
            return int(plan[0]["Plan"]["Plan Rows"])
        except (KeyError, IndexError, TypeError, ValueError):
            return 0

    def walk(self, model: ModelConfig, start: Any, *, full: bool) -> Iterator[list[Row]]:
        """Pages from `start` (a cursor value, None for all) or, with `full`, every row by key."""
        sql = self._select(model)
        pk = quote(model.primary_key)
        if full or model.cursor is None:
            yield from self._walk(model, sql(f"{pk} > :k", pk), sql("true", pk), by_cursor=False)
            return
        cur = quote(model.cursor)
        order = f"{cur}, {pk}"
        first = (
            sql(f"{cur} IS NOT NULL", order) if start is None else sql(f"{cur} >= :start", order)
        )
        after = sql(f"({cur} > :c OR ({cur} = :c AND {pk} > :k))", order)
        yield from self._walk(model, after, first, by_cursor=True, start=start)
        # Rows with no cursor value never match a comparison: a pass of their own, by key.
        yield from self._walk(
            model,
            sql(f"{cur} IS NULL AND {pk} > :k", pk),
            sql(f"{cur} IS NULL", pk),
            by_cursor=False,
        )

    def by_key(self, model: ModelConfig, keys: Sequence[str]) -> Iterator[list[Row]]:
        """The rows `keys` name (text, as logical replication gives them), a page at a time."""
        cols = ", ".join(quote(c) for c in model.columns())
        statement = text(
            f"SELECT {cols} FROM {relation_sql(model)} WHERE {quote(model.primary_key)} IN :keys"  # noqa: S608 (validated identifiers)
        ).bindparams(bindparam("keys", expanding=True))
        n = self.source.page_size
        for start in range(0, len(keys), n):
            yield self._read(model, statement, {"keys": list(keys[start : start + n])})

    def _select(self, model: ModelConfig) -> Any:
        cols = ", ".join(quote(c) for c in model.columns())
        rel = relation_sql(model)

        def sql(where: str, order: str) -> Any:
            # Identifiers are validated and quoted; the relation is a table or the user's own
            # SELECT; values go as bound parameters.
            return text(f"SELECT {cols} FROM {rel} WHERE {where} ORDER BY {order} LIMIT :limit")  # noqa: S608

        return sql

    def _walk(
        self, model: ModelConfig, after: Any, first: Any, *, by_cursor: bool, start: Any = None
    ) -> Iterator[list[Row]]:
        limit = self.source.page_size
        params: dict[str, Any] = {"start": start} if start is not None else {}
        statement = first
        while True:
            rows = self._read(model, statement, {**params, "limit": limit})
            if not rows:
                return
            yield rows
            if len(rows) < limit:
                return
            # A long read's pages double up to GROWN_PAGE_ROWS: each page is one transaction in
            # the store, and at a million rows fewer, larger commits load ~1.5x faster, while
            # small first pages keep a short read (and the helper's first page) quick.
            limit = max(limit, min(limit * 2, GROWN_PAGE_ROWS))
            last = rows[-1]
            statement, params = after, {"k": last[model.primary_key]}
            if by_cursor:
                assert model.cursor is not None
                params["c"] = last[model.cursor]

    def _read(self, model: ModelConfig, statement: Any, params: dict[str, Any]) -> list[Row]:
        """One page in its own read-only transaction. A connection that dies under the query (a
        restart, a terminated backend) is replaced and the page read once more; a second
        failure is the error. A read changes nothing, so reading again is always safe."""
        for attempt in (1, 2):
            try:
                with read_only(self._platform, self.source.statement_timeout_seconds) as conn:
                    result = conn.execute(statement, params)
                    names = tuple(result.keys())
                    return [dict(zip(names, r, strict=True)) for r in result]
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise self._failure(model, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, model: ModelConfig, exc: DBAPIError) -> Exception:
        state = sqlstate(exc)
        if (
            exc.connection_invalidated
            or state is None
            or state.startswith(("08", "28", "3D", "57P"))
        ):
            return unavailable(self.source.name, exc)
        return query_failed(model.name, exc, self.source.statement_timeout_seconds)
