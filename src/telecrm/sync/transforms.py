"""The values a mapping may read (record attributes, catalog fields) and the transforms on them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Literal

from telecrm.domain.fields import FIELDS

Kind = Literal["str", "int", "float", "bool", "date", "datetime", "list", "object"]

# What `from:` can name, per record source. Patient attributes are available on every record.
ATTRIBUTES: dict[str, dict[str, Kind]] = {
    "patient": {
        "patient_id": "str",
        "stage": "str",  # the current lifecycle stage (10 values)
        "crm_status": "str",  # its CRM status label ("Qualified Lead", ...)
        "max_stage": "str",  # the highest acquisition stage reached: never moves backwards
        "churn_risk": "float",
        "registered_at": "datetime",
        "stage_since": "datetime",
    },
    "consultation": {
        "record_id": "str",
        "status": "str",  # submitted | assigned | accepted | prescribed | paid
        "amount": "float",
        "submitted_at": "datetime",
        "closed_at": "datetime",
        "closed": "bool",
        "close_date": "date",  # when it closed, or 30 days after submission while open
    },
    "support_ticket": {
        "record_id": "str",
        "category": "str",
        "priority": "str",  # low | normal | high | urgent
        "created_at": "datetime",
    },
}

_FIELD_KINDS: dict[str, Kind] = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "date": "date",
    "datetime": "datetime",
    "list": "list",
    "object": "object",
}


def kind_of_field(name: str) -> Kind:
    return _FIELD_KINDS[FIELDS[name].kind]


# transform name -> (input kinds it takes, output kind)
TRANSFORMS: dict[str, tuple[frozenset[str], Kind]] = {
    "money": (frozenset({"int", "float"}), "float"),
    "date": (frozenset({"date", "datetime"}), "date"),
    "datetime": (frozenset({"datetime"}), "datetime"),
    "map": (frozenset({"str", "bool"}), "str"),
    "upper": (frozenset({"str"}), "str"),
    "lower": (frozenset({"str"}), "str"),
    "join": (frozenset({"list"}), "str"),
    "text": (frozenset({"str", "int", "float", "bool", "date", "datetime"}), "str"),
}


def transform_output(name: str, kind: str) -> Kind | None:
    takes, out = TRANSFORMS[name]
    return out if kind in takes else None


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _join(value: Any) -> str:
    return "; ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value)


APPLY: dict[str, Callable[[Any, dict[str, str] | None], Any]] = {
    "money": lambda v, _: round(float(v), 2),
    "date": lambda v, _: _as_datetime(v).date().isoformat(),
    "datetime": lambda v, _: _as_datetime(v).astimezone(UTC).isoformat().replace("+00:00", "Z"),
    "map": lambda v, table: (table or {}).get(str(v).lower() if isinstance(v, bool) else v),
    "upper": lambda v, _: str(v).upper(),
    "lower": lambda v, _: str(v).lower(),
    "join": lambda v, _: _join(v),
    "text": lambda v, _: v.isoformat() if isinstance(v, date | datetime) else str(v),
}


def apply_transform(name: str | None, value: Any, table: dict[str, str] | None) -> Any:
    if value is None or name is None:
        return value
    return APPLY[name](value, table)
