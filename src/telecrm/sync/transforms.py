"""The values a mapping may read (record attributes, catalog fields) and the transforms on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
        "churn_risk": "float",  # the scores: `telecrm analytics run` (docs/analytics.md)
        "lead_score": "float",
        "engagement_score": "float",
        "predicted_ltv": "float",
        "scored_at": "datetime",
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
    "prescription": {  # no medication: the record says that one was prescribed, and when
        "record_id": "str",
        "status": "str",  # approved
        "prescribed_at": "datetime",
        "days_supply": "int",
        "refills": "int",
        "consultation_id": "str",
        "refill_due_on": "date",
    },
    "subscription": {
        "record_id": "str",
        "tier": "str",
        "interval": "str",  # monthly | quarterly | annual
        "amount": "float",
        "status": "str",  # active | cancelled
        "started_at": "datetime",
        "renewed_at": "datetime",
        "ends_at": "datetime",
    },
    "treatment_plan": {
        "record_id": "str",
        "created_at": "datetime",
        "updated_at": "datetime",
        # From the catalog's treatment_* values, on the patient's current plan only.
        "status": "str",  # created | updated | completed | discontinued
        "outcome": "str",
        "progress": "str",
    },
    # Tasks and cases a journey opened for a care coordinator (journeys crm_task / crm_case):
    # the journey author's fixed subject, never a patient value.
    **{
        source: {
            "record_id": "str",
            "journey": "str",
            "subject": "str",
            "priority": "str",  # low | normal | high | urgent
            "created_at": "datetime",
            "due_date": "date",
        }
        for source in ("care_task", "care_case")
    },
    "provider_relationship": {  # the patient and the provider the profile names now
        "record_id": "str",  # a digest of patient and provider ids (planner.relationship_id)
    },
}

# What a record discloses beyond its properties: a record of these sources exists only because
# of a PHI data point (a prescription tells that a medication was prescribed), so each names the
# catalog field it reveals, and the catalog says whether that is PHI. Mapping an object of such a
# source, or such an attribute, to a destination without `baa: true` is refused at load time.
SOURCE_REVEALS: dict[str, str] = {
    "prescription": "medications",
    "treatment_plan": "treatment_status",
    "provider_relationship": "provider_id",
}
ATTRIBUTE_REVEALS: dict[tuple[str, str], str] = {
    ("treatment_plan", "status"): "treatment_status",
    ("treatment_plan", "outcome"): "treatment_outcome",
    ("treatment_plan", "progress"): "treatment_progress",
}


def revealed_fields(source: str, attributes: Iterable[str] = ()) -> tuple[str, ...]:
    """The catalog fields a record of `source` reveals by existing and through `attributes`."""
    found = [SOURCE_REVEALS[source]] if source in SOURCE_REVEALS else []
    found += [f for a in attributes if (f := ATTRIBUTE_REVEALS.get((source, a))) is not None]
    return tuple(dict.fromkeys(found))


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
