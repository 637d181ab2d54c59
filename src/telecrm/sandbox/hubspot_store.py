"""The HubSpot sandbox's account: objects, properties, records and associations, in memory.

Plain Python under one lock, no HTTP: `hubspot.py` turns requests into calls here and the
answers into HubSpot's JSON. Validation follows HubSpot's own rules as the research notes give
them (docs/research crm-apis.md §1.2): unique id properties, enumeration options, pipeline
stages, and a `lifecyclestage` that never moves backwards.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

OBJECT_TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-3": "deals", "0-5": "tickets"}
OBJECT_ALIASES = {
    "contact": "contacts",
    "company": "companies",
    "deal": "deals",
    "ticket": "tickets",
}
OBJECTS = ("contacts", "companies", "deals", "tickets")
DEFAULT_GROUPS = {
    "contacts": "contactinformation",
    "companies": "companyinformation",
    "deals": "dealinformation",
    "tickets": "ticketinformation",
}
# Default lifecycle stages in HubSpot's order (crm-apis.md §1.2; per-account customisation ignored).
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
TICKET_STAGES = ("1", "2", "3", "4")
PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}
FIELD_TYPES = {
    "text", "textarea", "number", "date", "select", "radio", "checkbox", "booleancheckbox",
    "file", "calculation_equation", "phonenumber", "html",
}  # fmt: skip
DATA_SENSITIVITIES = {"non_sensitive", "sensitive", "highly_sensitive"}
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# HUBSPOT_DEFINED default association type ids (crm-apis.md §1.2 table; others UNCONFIRMED).
ASSOCIATION_TYPE_IDS = {
    ("contacts", "companies"): 279,
    ("companies", "contacts"): 280,
    ("contacts", "deals"): 4,
    ("deals", "contacts"): 3,
    ("contacts", "tickets"): 15,
    ("tickets", "contacts"): 16,
    ("deals", "companies"): 341,
    ("companies", "deals"): 342,
    ("tickets", "companies"): 339,
    ("companies", "tickets"): 340,
    ("deals", "tickets"): 27,
    ("tickets", "deals"): 28,
}

_BUILT_IN: dict[str, list[tuple[str, str, str, tuple[str, ...]]]] = {
    "contacts": [
        ("email", "string", "text", ()),
        ("firstname", "string", "text", ()),
        ("lastname", "string", "text", ()),
        ("phone", "string", "phonenumber", ()),
        ("city", "string", "text", ()),
        ("state", "string", "text", ()),
        ("zip", "string", "text", ()),
        ("lifecyclestage", "enumeration", "radio", LIFECYCLE_STAGES),
        ("hs_language", "enumeration", "select", ("en", "es", "fr", "de", "pt", "zh", "vi")),
    ],
    "companies": [("name", "string", "text", ()), ("domain", "string", "text", ())],
    "deals": [
        ("dealname", "string", "text", ()),
        ("amount", "number", "number", ()),
        ("dealstage", "enumeration", "radio", DEAL_STAGES),
        ("pipeline", "enumeration", "select", ("default",)),
        ("closedate", "datetime", "date", ()),
    ],
    "tickets": [
        ("subject", "string", "text", ()),
        ("content", "string", "textarea", ()),
        ("hs_pipeline", "enumeration", "select", ("0",)),
        ("hs_pipeline_stage", "enumeration", "radio", TICKET_STAGES),
        ("hs_ticket_priority", "enumeration", "select", ("LOW", "MEDIUM", "HIGH")),
    ],
}


def iso(ts: float) -> str:
    """HubSpot's timestamp form: ISO 8601, UTC, milliseconds."""
    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ts * 1000) % 1000:03d}Z"
    )


def object_name(raw: str) -> str | None:
    """`contacts`, `contact` or `0-1` → `contacts`; None for an object the sandbox lacks."""
    name = OBJECT_TYPE_IDS.get(raw) or OBJECT_ALIASES.get(raw.lower()) or raw.lower()
    return name if name in OBJECTS else None


@dataclass(slots=True)
class Record:
    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class PropertyError:
    """Why one value was refused: HubSpot's code, the property name, and its message."""

    code: str
    name: str
    message: str  # may echo the value, as HubSpot's does


@dataclass(slots=True)
class Account:
    """Everything one HubSpot account holds. Callers hold `lock` around every use."""

    born: float  # when the account was made (built-in property timestamps)
    lock: threading.RLock = field(default_factory=threading.RLock)
    properties: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    records: dict[str, dict[str, Record]] = field(default_factory=dict)
    associations: set[tuple[str, str, str, str]] = field(default_factory=set)
    next_id: int = 101
    # (object, unique property) -> value -> record id: upserts find records in O(1), and a value
    # another record already holds is refused, as HubSpot refuses it.
    unique_values: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in OBJECTS:
            self.records[obj] = {}
            group = DEFAULT_GROUPS[obj]
            self.groups[obj] = {
                group: {"name": group, "label": group, "displayOrder": -1, "archived": False}
            }
            self.properties[obj] = {}
            for name, ptype, field_type, options in _BUILT_IN[obj]:
                self.properties[obj][name] = property_json(
                    {"name": name, "label": name, "type": ptype, "fieldType": field_type,
                     "groupName": group, "options": [{"label": o, "value": o} for o in options]},
                    self.born, hubspot_defined=True,
                )  # fmt: skip

    # -- records ------------------------------------------------------------------------------
    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def _unique_key(self, obj: str, name: str, value: str) -> str:
        return value.lower() if (obj, name) == ("contacts", "email") else value

    def find_by(self, obj: str, id_property: str, value: str) -> Record | None:
        if id_property == "hs_object_id":
            return self.records[obj].get(value)
        if self.is_id_property(obj, id_property):
            found = self.unique_values.get((obj, id_property), {}).get(
                self._unique_key(obj, id_property, value)
            )
            return None if found is None else self.records[obj].get(found)
        for record in self.records[obj].values():
            if record.properties.get(id_property) == value:
                return record
        return None

    def is_id_property(self, obj: str, name: str) -> bool:
        prop = self.properties[obj].get(name)
        if prop is None:
            return False
        return bool(prop.get("hasUniqueValue")) or (obj == "contacts" and name == "email")

    def check_values(
        self, obj: str, values: dict[str, Any]
    ) -> tuple[dict[str, str], list[PropertyError]]:
        """Normalise values to HubSpot's strings and collect what HubSpot would refuse."""
        clean: dict[str, str] = {}
        errors: list[PropertyError] = []
        for name, raw in values.items():
            prop = self.properties[obj].get(name)
            if prop is None:
                errors.append(
                    PropertyError(
                        "PROPERTY_DOESNT_EXIST", name, f'Property "{name}" does not exist'
                    )
                )
                continue
            value = _as_string(raw)
            problem = _value_problem(obj, prop, value)
            if problem is not None:
                errors.append(PropertyError(problem[0], name, problem[1]))
            else:
                clean[name] = value
        return clean, errors

    def unique_conflicts(
        self, obj: str, record_id: str | None, values: dict[str, str]
    ) -> list[PropertyError]:
        """Unique values (and a contact's email) that another record already holds."""
        conflicts = []
        for name, value in values.items():
            if not value or not self.is_id_property(obj, name):
                continue
            holder = self.unique_values.get((obj, name), {}).get(self._unique_key(obj, name, value))
            if holder is not None and holder != record_id:
                conflicts.append(
                    PropertyError("CONFLICT", name, f"{value} already exists on record {holder}")
                )
        return conflicts

    def _index(self, obj: str, record: Record, name: str, value: str | None) -> None:
        index = self.unique_values.setdefault((obj, name), {})
        old = record.properties.get(name)
        if old:
            index.pop(self._unique_key(obj, name, old), None)
        if value:
            index[self._unique_key(obj, name, value)] = record.id

    def apply(self, record: Record, obj: str, values: dict[str, str], now: float) -> None:
        """Write checked values; `lifecyclestage` only moves forward, "" clears it."""
        for name, value in values.items():
            if self.is_id_property(obj, name):
                self._index(obj, record, name, value)
            if obj in ("contacts", "companies") and name == "lifecyclestage" and value:
                current = record.properties.get(name, "")
                if current and LIFECYCLE_STAGES.index(value) < LIFECYCLE_STAGES.index(current):
                    continue  # HubSpot ignores a backwards move without an error
            record.properties[name] = value
        record.properties["lastmodifieddate"] = iso(now)
        record.updated_at = now

    def create(self, obj: str, values: dict[str, str], now: float) -> Record:
        record = Record(self.new_id(), {}, now, now)
        record.properties["hs_object_id"] = record.id
        record.properties["createdate"] = iso(now)
        self.apply(record, obj, values, now)
        self.records[obj][record.id] = record
        return record

    def associate(self, from_obj: str, from_id: str, to_obj: str, to_id: str) -> bool:
        if from_id not in self.records[from_obj] or to_id not in self.records[to_obj]:
            return False
        self.associations.add((from_obj, from_id, to_obj, to_id))
        self.associations.add((to_obj, to_id, from_obj, from_id))  # HubSpot links both ways
        return True

    def associated(self, from_obj: str, from_id: str, to_obj: str) -> list[str]:
        return sorted(
            t for f, fid, o, t in self.associations if (f, fid, o) == (from_obj, from_id, to_obj)
        )

    def archive(self, obj: str, record_id: str) -> None:
        record = self.records[obj].get(record_id)
        if record is not None:
            for name in list(record.properties):
                if self.is_id_property(obj, name):
                    self._index(obj, record, name, None)
        if self.records[obj].pop(record_id, None) is not None:
            self.associations = {
                a
                for a in self.associations
                if (a[0], a[1]) != (obj, record_id) and (a[2], a[3]) != (obj, record_id)
            }

    # -- properties ---------------------------------------------------------------------------
    def property_problem(self, obj: str, body: dict[str, Any]) -> tuple[int, str, str] | None:
        """(status, category, message) when HubSpot would refuse this property definition."""
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            return 400, "VALIDATION_ERROR", f"Missing required fields: {', '.join(missing)}"
        if body["type"] not in PROPERTY_TYPES:
            return 400, "VALIDATION_ERROR", f"Unknown property type {body['type']}"
        if body["fieldType"] not in FIELD_TYPES:
            return 400, "VALIDATION_ERROR", f"Unknown fieldType {body['fieldType']}"
        if body["type"] == "enumeration" and not body.get("options"):
            return 400, "VALIDATION_ERROR", "Enumeration properties require at least one option"
        sensitivity = body.get("dataSensitivity", "non_sensitive")
        if sensitivity not in DATA_SENSITIVITIES:
            return 400, "VALIDATION_ERROR", f"Unknown dataSensitivity {sensitivity}"
        if body["groupName"] not in self.groups[obj]:
            return 400, "VALIDATION_ERROR", f"Property group {body['groupName']} does not exist"
        if body["name"] in self.properties[obj]:
            return 409, "CONFLICT", f"Property named '{body['name']}' already exists."
        return None


def property_json(
    body: dict[str, Any], now: float, *, hubspot_defined: bool = False
) -> dict[str, Any]:
    """A stored property in the shape GET /crm/v3/properties answers with."""
    options = [
        {"label": o.get("label", o["value"]), "value": o["value"], "displayOrder": o.get("displayOrder", i),
         "hidden": bool(o.get("hidden", False)), "description": o.get("description", "")}
        for i, o in enumerate(body.get("options") or [])
    ]  # fmt: skip
    return {
        "name": body["name"],
        "label": body["label"],
        "type": body["type"],
        "fieldType": body["fieldType"],
        "groupName": body["groupName"],
        "description": body.get("description", ""),
        "options": options,
        "displayOrder": body.get("displayOrder", -1),
        "hasUniqueValue": bool(body.get("hasUniqueValue", False)),
        "hidden": bool(body.get("hidden", False)),
        "formField": bool(body.get("formField", False)),
        "hubspotDefined": hubspot_defined,
        "calculated": False,
        "externalOptions": False,
        "archived": False,
        "dataSensitivity": body.get("dataSensitivity", "non_sensitive"),
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": False,
        },
    }


def _as_string(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _value_problem(obj: str, prop: dict[str, Any], value: str) -> tuple[str, str] | None:
    """HubSpot's (code, message) for a value its property refuses; "" always clears."""
    if value == "":
        return None
    name, ptype = prop["name"], prop["type"]
    if obj == "contacts" and name == "email" and not EMAIL_PATTERN.match(value):
        return "INVALID_EMAIL", f"Email address {value} is invalid"
    if ptype == "number":
        try:
            float(value)
        except ValueError:
            return "INVALID_DECIMAL", f"{value} is not a valid decimal"
    elif ptype == "enumeration":
        allowed = [o["value"] for o in prop["options"]]
        chosen = value.split(";") if prop["fieldType"] == "checkbox" else [value]
        if any(c not in allowed for c in chosen):
            return "INVALID_OPTION", f"{value} was not one of the allowed options: {allowed}"
    elif ptype == "bool" and value not in ("true", "false"):
        return "INVALID_BOOLEAN", f"{value} is not a valid boolean"
    elif ptype in ("date", "datetime") and not _is_date(value, with_time=ptype == "datetime"):
        return "INVALID_DATE", f"{value} is not a valid {ptype}"
    return None


def _is_date(value: str, *, with_time: bool) -> bool:
    if value.isdigit():
        return with_time or int(value) % 86_400_000 == 0  # dates are midnight UTC in ms
    try:
        if with_time:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            date.fromisoformat(value)
    except ValueError:
        return False
    return True
