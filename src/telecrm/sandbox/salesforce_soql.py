"""The little SOQL the sandbox understands: SELECT a, b FROM Obj [WHERE ...] [LIMIT n]."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telecrm.sandbox.salesforce_schema import RequestRefused

SOQL_PATTERN = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.I | re.S,
)
SOQL_STRING = r"'((?:[^'\\]|\\.)*)'"
SOQL_CONDITION = re.compile(rf"^\s*(\w+)\s*(?:=\s*{SOQL_STRING}|IN\s*\((.*)\))\s*$", re.I | re.S)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class SoqlQuery:
    sobject: str
    fields: tuple[str, ...]
    conditions: tuple[tuple[str, frozenset[str]], ...]
    limit: int | None

    @classmethod
    def parse(cls, soql: str) -> SoqlQuery:
        m = SOQL_PATTERN.match(soql)
        if m is None:
            raise RequestRefused(400, "MALFORMED_QUERY", "unexpected token in query")
        conditions = []
        for part in re.split(r"\s+AND\s+", m["where"] or "", flags=re.I) if m["where"] else []:
            c = SOQL_CONDITION.match(part)
            if c is None:
                raise RequestRefused(400, "MALFORMED_QUERY", "unexpected token in WHERE clause")
            values = [c[2]] if c[2] is not None else re.findall(SOQL_STRING, c[3] or "")
            conditions.append((c[1], frozenset(_unescape(v).casefold() for v in values)))
        fields = tuple(f.strip() for f in m["fields"].split(","))
        return cls(m["obj"], fields, tuple(conditions), int(m["limit"]) if m["limit"] else None)

    def matches(self, row: Mapping[str, Any]) -> bool:
        return all(
            row.get(name) is not None and str(row[name]).casefold() in values
            for name, values in self.conditions
        )
