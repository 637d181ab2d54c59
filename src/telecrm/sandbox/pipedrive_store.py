"""The Pipedrive sandbox's company: records, custom fields, pipelines and stages, in memory.

Plain Python, no HTTP: `pipedrive.py` turns requests into calls here and the answers into
Pipedrive's envelopes. Shapes follow docs/research crm-apis.md §3.2 and the v2 request models of
the official Node client (pipedrive/client-nodejs `src/versions/v2/models/add-person-request.ts`,
`add-deal-request.ts`): custom field values live under `custom_fields`, keyed by the field's
generated 40-character hash. A validation problem is `Invalid(field, message)`; the message may
echo the value, as a real API's may, so connectors must never pass it on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

OBJECTS = ("persons", "organizations", "deals", "activities", "notes")
SEARCHABLE = ("persons", "organizations", "deals")  # v2 /{obj}/search (crm-apis.md §3.2)
FIELD_LISTS = {  # v1 custom field definition endpoints (crm-apis.md §3.2)
    "personFields": "persons",
    "organizationFields": "organizations",
    "dealFields": "deals",
    "activityFields": "activities",
}
# field_type values (crm-apis.md §3.2; the list is UNCONFIRMED there)
FIELD_TYPES = {
    "varchar",
    "varchar_auto",
    "text",
    "double",
    "monetary",
    "date",
    "enum",
    "set",
    "phone",
}
SEARCHABLE_TYPES = {"varchar", "varchar_auto", "text", "phone"}  # what fields=custom_fields scans
EXACT_MATCH_MAX_CHARS = 30  # exact match only works for terms <= 30 chars (crm-apis.md §3.2)
# Writable top-level keys of each v2 object (client-nodejs v2 Add*Request models); notes are v1.
WRITABLE: dict[str, set[str]] = {
    "persons": {"name", "owner_id", "org_id", "emails", "phones", "visible_to", "label_ids",
                "marketing_status", "custom_fields"},
    "organizations": {"name", "owner_id", "address", "visible_to", "label_ids", "custom_fields"},
    "deals": {"title", "owner_id", "person_id", "org_id", "pipeline_id", "stage_id", "value",
              "currency", "status", "probability", "expected_close_date", "visible_to",
              "label_ids", "custom_fields"},
    "activities": {"subject", "type", "owner_id", "deal_id", "person_id", "org_id", "due_date",
                   "due_time", "duration", "busy", "done", "note", "public_description",
                   "priority", "custom_fields"},
    "notes": {"content", "person_id", "deal_id", "org_id", "user_id", "add_time",
              "pinned_to_deal_flag", "pinned_to_person_flag", "pinned_to_organization_flag"},
}  # fmt: skip
# A note is attached to something: one of these is required (v1 AddNoteRequest).
NOTE_PARENTS = ("deal_id", "person_id", "org_id")
# Built-in activity types (key_string of v1 ActivityTypes); a company may add its own.
ACTIVITY_TYPES = {"call", "meeting", "task", "deadline", "email", "lunch"}
TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
REQUIRED = {"persons": "name", "organizations": "name", "deals": "title", "notes": "content"}
DEAL_STATUSES = {"open", "won", "lost"}
DEFAULT_PIPELINE = "Pipeline"
DEFAULT_STAGES = (
    "Lead In",
    "Contact Made",
    "Demo Scheduled",
    "Proposal Made",
    "Negotiations Started",
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BUILT_IN_FIELDS = {
    "persons": [("name", "Name", "varchar"), ("email", "Email", "varchar"),
                ("phone", "Phone", "phone"), ("org_id", "Organization", "org")],
    "organizations": [("name", "Name", "varchar"), ("address", "Address", "address")],
    "deals": [("title", "Title", "varchar"), ("value", "Value", "monetary"),
              ("stage_id", "Stage", "stage"), ("person_id", "Contact person", "people")],
    "activities": [("subject", "Subject", "varchar"), ("type", "Type", "varchar")],
}  # fmt: skip


# telecrm's marker in an activity's note or a note's content (connectors/pipedrive_marked.py);
# the flat view shows it as the field it names, as the agreement check reads records.
MARKED_TEXT = {"activities": "note", "notes": "content"}
MARKER = re.compile(r"\n?\[telecrm:([a-z][a-z0-9_]*):([^\]\s]+)\]")


def split_markers(text: str) -> tuple[str, dict[str, str]]:
    """The text without telecrm's markers, and what they say ({field: key})."""
    return MARKER.sub("", text), {m.group(1): m.group(2) for m in MARKER.finditer(text)}


class Invalid(Exception):
    """A 400: `field` names the offending parameter; `message` may echo its value."""

    def __init__(self, field_name: str, message: str, status: int = 400, code: str = "") -> None:
        super().__init__(message)
        self.field, self.message, self.status, self.code = field_name, message, status, code


@dataclass(slots=True)
class Record:
    id: int
    data: dict[str, Any]
    add_time: float
    update_time: float
    deleted: bool = False


@dataclass(slots=True)
class Company:
    """One Pipedrive company: everything the sandbox stores, keyed by object."""

    now: float
    seed: int = 0
    records: dict[str, dict[int, Record]] = field(default_factory=dict)
    fields: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pipelines: dict[int, dict[str, Any]] = field(default_factory=dict)
    stages: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.records = {obj: {} for obj in OBJECTS}
        self._random = random.Random(self.seed)
        self.fields = {obj: [] for obj in FIELD_LISTS.values()}
        for obj, built_in in _BUILT_IN_FIELDS.items():
            for key, name, field_type in built_in:
                self._add_field(obj, key, name, field_type, [], edit_flag=False)
        pipeline = self.add_pipeline(DEFAULT_PIPELINE)
        for name in DEFAULT_STAGES:
            self.add_stage(pipeline["id"], name)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- custom fields --------------------------------------------------------------------------
    def _add_field(
        self, obj: str, key: str, name: str, field_type: str, labels: list[str], *, edit_flag: bool
    ) -> dict[str, Any]:
        options = [{"id": self._id(), "label": label} for label in labels] or None
        definition = {
            "id": self._id(), "key": key, "name": name, "field_type": field_type,
            "options": options, "edit_flag": edit_flag, "active_flag": True,
        }  # fmt: skip
        self.fields[obj].append(definition)
        return definition

    def create_field(self, obj: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not str(body.get("name") or "").strip():
            raise Invalid("name", "Field name must be given")
        field_type = body.get("field_type")
        if field_type not in FIELD_TYPES:
            raise Invalid("field_type", f"Invalid field_type: {field_type}")
        raw = body.get("options") or []
        labels = [str(o["label"] if isinstance(o, dict) else o) for o in raw]
        if field_type in ("enum", "set") and not labels:
            raise Invalid("options", "Options must be given for enum and set fields")
        key = f"{self._random.getrandbits(160):040x}"  # a generated 40-char hash (§3.2)
        return self._add_field(obj, key, str(body["name"]), field_type, labels, edit_flag=True)

    def field_by_key(self, obj: str, key: str) -> dict[str, Any] | None:
        return next((f for f in self.fields[obj] if f["key"] == key), None)

    # -- pipelines and stages -------------------------------------------------------------------
    def add_pipeline(self, name: str) -> dict[str, Any]:
        pipeline_id = self._id()
        pipeline = {
            "id": pipeline_id,
            "name": name,
            "active": True,
            "order_nr": len(self.pipelines),
        }
        self.pipelines[pipeline_id] = pipeline
        return pipeline

    def add_stage(self, pipeline_id: Any, name: Any) -> dict[str, Any]:
        if not str(name or "").strip():
            raise Invalid("name", "Stage name must be given")
        if pipeline_id not in self.pipelines:
            raise Invalid("pipeline_id", f"Pipeline {pipeline_id} not found")
        order = 1 + sum(1 for s in self.stages.values() if s["pipeline_id"] == pipeline_id)
        stage_id = self._id()
        stage = {"id": stage_id, "name": str(name), "pipeline_id": pipeline_id, "order_nr": order}
        self.stages[stage_id] = stage
        return stage

    def first_stage(self) -> int:
        return min(self.stages)

    # -- records --------------------------------------------------------------------------------
    def get(self, obj: str, record_id: int) -> Record:
        record = self.records[obj].get(record_id)
        if record is None:
            raise Invalid("id", f"{obj[:-1].capitalize()} not found", status=404)
        if record.deleted:
            raise Invalid("id", f"{obj[:-1].capitalize()} is deleted", status=410)
        return record

    def create(self, obj: str, body: Any, now: float) -> Record:
        data = self._validated(obj, body, creating=True)
        if obj == "deals":
            data.setdefault("stage_id", self.first_stage())
            data.setdefault("pipeline_id", self.stages[data["stage_id"]]["pipeline_id"])
            data.setdefault("status", "open")
        record = Record(self._id(), data, now, now)
        self.records[obj][record.id] = record
        return record

    def update(self, obj: str, record_id: int, body: Any, now: float) -> Record:
        record = self.get(obj, record_id)
        data = self._validated(obj, body, creating=False, current=record.data)
        customs = data.pop("custom_fields", None)
        record.data.update(data)
        if customs:
            record.data.setdefault("custom_fields", {}).update(customs)
        record.update_time = now
        return record

    def delete(self, obj: str, record_id: int) -> None:
        self.get(obj, record_id).deleted = True

    def live(self, obj: str) -> list[Record]:
        return [r for r in self.records[obj].values() if not r.deleted]

    def search(
        self, obj: str, term: str, fields: set[str], exact: bool, visible_after: float
    ) -> list[Record]:
        """Records whose searched fields match `term`; created after `visible_after` not indexed yet."""
        if exact and len(term) > EXACT_MATCH_MAX_CHARS:
            return []
        wanted = term.casefold()
        keys = {
            f["key"]
            for f in self.fields[obj]
            if f["edit_flag"] and f["field_type"] in SEARCHABLE_TYPES
        }
        hits = []
        for record in self.live(obj):
            if record.add_time > visible_after:
                continue
            values: list[Any] = []
            if "custom_fields" in fields:
                customs = record.data.get("custom_fields") or {}
                values += [v for k, v in customs.items() if k in keys]
            for name in fields & {"name", "title", "address", "notes"}:
                values.append(record.data.get(name))
            if "email" in fields:
                values += [e.get("value") for e in record.data.get("emails") or []]
            if "phone" in fields:
                values += [p.get("value") for p in record.data.get("phones") or []]
            texts = [str(v).casefold() for v in values if v is not None]
            if any(t == wanted if exact else wanted in t for t in texts):
                hits.append(record)
        return hits

    def record_json(self, obj: str, record: Record) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": record.id,
            **{k: v for k, v in record.data.items() if k != "custom_fields"},
        }
        if obj != "notes":
            customs = record.data.get("custom_fields") or {}
            out["custom_fields"] = {
                f["key"]: customs.get(f["key"]) for f in self.fields[obj] if f["edit_flag"]
            }
        out["add_time"], out["update_time"] = record.add_time, record.update_time
        return out

    # -- validation ----------------------------------------------------------------------------
    def _validated(
        self, obj: str, body: Any, *, creating: bool, current: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("body", "Request body must be a JSON object")
        for key in body:
            if key not in WRITABLE[obj]:
                raise Invalid(key, f"Unknown parameter: {key}")
        required = REQUIRED.get(obj)
        if (
            required
            and (creating or required in body)
            and not str(body.get(required) or "").strip()
        ):
            raise Invalid(required, f"{required} is required and must not be empty")
        data = dict(body)
        for key in ("emails", "phones"):
            if key in data:
                data[key] = self._contact_list(key, data[key])
        for key, target in (
            ("org_id", "organizations"),
            ("person_id", "persons"),
            ("deal_id", "deals"),
        ):
            if data.get(key) is not None and not self._exists(target, data[key]):
                raise Invalid(key, f"{target[:-1].capitalize()} {data[key]} not found")
        if obj == "deals":
            self._check_deal(data, current or {})
        elif obj == "activities":
            self._check_activity(data)
        elif obj == "notes" and creating and all(data.get(k) is None for k in NOTE_PARENTS):
            raise Invalid("deal_id", "One of deal_id, person_id, org_id must be given")
        if "custom_fields" in data:
            data["custom_fields"] = self._customs(obj, data["custom_fields"])
        return data

    def _exists(self, obj: str, record_id: Any) -> bool:
        record = self.records[obj].get(record_id) if isinstance(record_id, int) else None
        return record is not None and not record.deleted

    def _contact_list(self, key: str, raw: Any) -> list[dict[str, Any]]:
        if not isinstance(raw, list) or not all(isinstance(e, dict) and "value" in e for e in raw):
            raise Invalid(key, f"{key} must be an array of objects with a value")
        for i, entry in enumerate(raw):
            if key == "emails" and not EMAIL.match(str(entry["value"])):
                raise Invalid(
                    key, f"{key}[{i}].value is not a valid email address: {entry['value']}"
                )
        return [{"value": e["value"], "primary": bool(e.get("primary", i == 0)), "label": e.get("label", "work")}
                for i, e in enumerate(raw)]  # fmt: skip

    def _check_deal(self, data: dict[str, Any], current: dict[str, Any]) -> None:
        if "status" in data and data["status"] not in DEAL_STATUSES:
            raise Invalid("status", f"Invalid status: {data['status']}")
        if "value" in data and not isinstance(data["value"], int | float):
            raise Invalid("value", f"value must be a number, got {data['value']}")
        if "pipeline_id" in data and data["pipeline_id"] not in self.pipelines:
            raise Invalid("pipeline_id", f"Pipeline {data['pipeline_id']} not found")
        if "stage_id" in data:
            stage = self.stages.get(data["stage_id"])
            if stage is None:
                raise Invalid("stage_id", f"Stage {data['stage_id']} not found")
            pipeline = data.get("pipeline_id", stage["pipeline_id"])
            if stage["pipeline_id"] != pipeline:
                raise Invalid("stage_id", f"Stage {data['stage_id']} is not in pipeline {pipeline}")
            data.setdefault("pipeline_id", pipeline)
        closes = data.get("expected_close_date")
        if closes is not None and not DATE.match(str(closes)):
            raise Invalid("expected_close_date", "expected_close_date must be YYYY-MM-DD")

    def _check_activity(self, data: dict[str, Any]) -> None:
        if "type" in data and data["type"] not in ACTIVITY_TYPES:
            raise Invalid("type", f"Invalid activity type: {data['type']}")
        if data.get("due_date") is not None and not DATE.match(str(data["due_date"])):
            raise Invalid("due_date", "due_date must be YYYY-MM-DD")
        for key in ("due_time", "duration"):
            if data.get(key) is not None and not TIME.match(str(data[key])):
                raise Invalid(key, f"{key} must be HH:MM")
        for key in ("busy", "done"):
            if key in data and not isinstance(data[key], bool):
                raise Invalid(key, f"{key} must be a boolean")
        if "subject" in data and not isinstance(data["subject"], str):
            raise Invalid("subject", "subject must be a string")

    def linked(self, obj: str, filters: dict[str, int]) -> list[Record]:
        """Live records of `obj` whose link fields (person_id, deal_id, ...) equal `filters`."""
        return [r for r in self.live(obj) if all(r.data.get(k) == v for k, v in filters.items())]

    def _customs(self, obj: str, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise Invalid("custom_fields", "custom_fields must be an object")
        out = {}
        for key, value in raw.items():
            definition = self.field_by_key(obj, key)
            if definition is None or not definition["edit_flag"]:
                raise Invalid(key, f"Unknown custom field: {key}")
            out[key] = None if value is None else _custom_value(key, definition, value)
        return out


def _custom_value(key: str, definition: dict[str, Any], value: Any) -> Any:
    kind = definition["field_type"]
    if kind in ("double", "monetary"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(key, f"Value {value!r} of field {key} is not a number")
        return value
    if kind in ("enum", "set"):
        ids = {o["id"] for o in definition["options"] or []}
        chosen = value if kind == "set" and isinstance(value, list) else [value]
        if not chosen or any(v not in ids for v in chosen):
            raise Invalid(key, f"Option {value!r} does not exist in field {key}")
        return value
    if kind == "date" and not DATE.match(str(value)):
        raise Invalid(key, f"Value {value!r} of field {key} is not a date")
    return str(value)
