"""Pipedrive's schema as telecrm needs it: custom fields by name, the consultations pipeline.

Custom fields are addressed on records by a generated 40-char hash `key`, found through the v1
field lists (personFields, dealFields, ...; docs/research crm-apis.md §3.2); mappings name them by
field *name*, resolved here once per object and cached. `provision` creates what is missing, matched
by name: the custom fields, and for deals a pipeline with one stage per consultation status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import httpx

from telecrm.connectors.base import ConfigurationError, CustomProperty, ProvisionStep

FIELDS_PAGE = 500  # v1 list limit (crm-apis.md §3.2: limit up to 500)
FIELD_LISTS = {"persons": "personFields", "organizations": "organizationFields",
               "deals": "dealFields", "activities": "activityFields"}  # v1 (§3.2)  # fmt: skip
# CustomProperty.kind → Pipedrive field_type (§3.2); Pipedrive has no datetime or boolean type.
FIELD_TYPES = {"string": "varchar", "number": "double", "enumeration": "enum", "date": "date",
               "datetime": "varchar", "bool": "enum"}  # fmt: skip
BOOL_OPTIONS = ("true", "false")
PIPELINE_NAME = "telecrm consultations"
PIPELINE_STAGES = ("submitted", "assigned", "accepted", "prescribed", "paid")

Call = Callable[..., httpx.Response]
"""The connector's `_call(method, path, endpoint, *, json=, params=, ok=)`: gate, auth, errors."""


class PipedriveSchema:
    """Field definitions, pipelines and stages of one company, fetched once and cached."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.fields: dict[str, dict[str, dict[str, Any]]] = {}  # obj → field name → definition
        self._stages: dict[tuple[str, str], int] = {}  # (pipeline name, stage name) → stage id
        self._pipelines: dict[str, int] = {}

    def field(self, obj: str, name: str) -> dict[str, Any]:
        """The definition (with `key`, `field_type`, `options`) of `obj`'s field called `name`."""
        if obj not in self.fields:
            self.fields[obj] = {f["name"]: f for f in self._list_fields(obj)}
        definition = self.fields[obj].get(name)
        if definition is None:
            raise ConfigurationError("FIELD_MISSING", f"{obj}.{name}: run `telecrm crm provision`")
        return definition

    def _list_fields(self, obj: str) -> list[dict[str, Any]]:
        if obj not in FIELD_LISTS:
            raise ConfigurationError("UNKNOWN_OBJECT", obj)
        fields, start = [], 0
        while True:
            params = {"start": str(start), "limit": str(FIELDS_PAGE)}
            body = _json(
                self._call(
                    "GET", f"/api/v1/{FIELD_LISTS[obj]}", f"{FIELD_LISTS[obj]}.list", params=params
                )
            )
            fields += [f for f in body.get("data") or [] if isinstance(f, dict)]
            page = (body.get("additional_data") or {}).get("pagination") or {}
            if not page.get("more_items_in_collection"):
                return fields
            start = int(page.get("next_start", start + FIELDS_PAGE))

    def pipeline_id(self, name: str) -> int:
        if name not in self._pipelines:
            listed = (
                _json(self._call("GET", "/api/v1/pipelines", "pipelines.list")).get("data") or []
            )
            self._pipelines.update({str(p["name"]): int(p["id"]) for p in listed})
        if name not in self._pipelines:
            raise ConfigurationError(
                "PIPELINE_MISSING", "deals.pipeline_id: run `telecrm crm provision`"
            )
        return self._pipelines[name]

    def stage_id(self, properties: Mapping[str, Any], stage: str) -> int:
        pipeline = str(properties.get("pipeline_id") or PIPELINE_NAME)
        if (pipeline, stage) not in self._stages:
            self._load_stages(pipeline)
        if (pipeline, stage) not in self._stages:
            raise ConfigurationError("STAGE_MISSING", "deals.stage_id: run `telecrm crm provision`")
        return self._stages[(pipeline, stage)]

    def _load_stages(self, pipeline: str) -> None:
        pipeline_id = self.pipeline_id(pipeline) if not pipeline.isdigit() else int(pipeline)
        params = {"pipeline_id": str(pipeline_id)}
        listed = (
            _json(self._call("GET", "/api/v1/stages", "stages.list", params=params)).get("data")
            or []
        )
        self._stages.update({(pipeline, str(s["name"])): int(s["id"]) for s in listed})

    # -- provisioning -----------------------------------------------------------------------------
    def provision(self, properties: Sequence[CustomProperty]) -> list[ProvisionStep]:
        """Create missing custom fields (matched by name) and, for deals, the telecrm pipeline.

        Pipedrive custom fields cannot be made unique: `unique` is honoured by searching before
        every create instead (see `PipedriveConnector.write`).
        """
        steps: list[ProvisionStep] = []
        for obj in dict.fromkeys(p.crm_object for p in properties):
            existing = {f["name"]: f for f in self._list_fields(obj)}
            steps += [
                self._ensure_field(p, existing.get(p.name))
                for p in properties
                if p.crm_object == obj
            ]
            self.fields.pop(obj, None)  # re-read after creating
        if any(p.crm_object == "deals" for p in properties):
            steps += self._ensure_pipeline()
        return steps

    def _ensure_field(self, prop: CustomProperty, existing: dict[str, Any] | None) -> ProvisionStep:
        target = f"{prop.crm_object}.{prop.name}"
        field_type = FIELD_TYPES[prop.kind]
        options = BOOL_OPTIONS if prop.kind == "bool" else prop.options
        if existing is not None:
            if existing.get("field_type") != field_type:
                return ProvisionStep(
                    target, "failed", f"exists with field_type {existing.get('field_type')}"
                )
            have = {str(o.get("label")) for o in existing.get("options") or []}
            missing = [o for o in options if o not in have]
            if missing:
                return ProvisionStep(target, "failed", f"missing options: {', '.join(missing)}")
            return ProvisionStep(target, "exists")
        body: dict[str, Any] = {"name": prop.name, "field_type": field_type}
        if field_type == "enum":
            body["options"] = [{"label": o} for o in options]
        endpoint = FIELD_LISTS[prop.crm_object]
        made = self._call(
            "POST", f"/api/v1/{endpoint}", f"{endpoint}.create", json=body, ok=(200, 201, 400)
        )
        if made.status_code == 400:
            return ProvisionStep(target, "failed", "refused (HTTP 400)")
        return ProvisionStep(target, "created")

    def _ensure_pipeline(self) -> list[ProvisionStep]:
        target = f"deals.pipeline.{PIPELINE_NAME}"
        try:
            pipeline_id, step = self.pipeline_id(PIPELINE_NAME), ProvisionStep(target, "exists")
        except ConfigurationError:
            made = _json(
                self._call(
                    "POST",
                    "/api/v1/pipelines",
                    "pipelines.create",
                    json={"name": PIPELINE_NAME},
                    ok=(200, 201),
                )
            )
            pipeline_id, step = int(made["data"]["id"]), ProvisionStep(target, "created")
            self._pipelines[PIPELINE_NAME] = pipeline_id
        self._load_stages(PIPELINE_NAME)
        steps = [step]
        for stage in PIPELINE_STAGES:
            if (PIPELINE_NAME, stage) in self._stages:
                steps.append(ProvisionStep(f"deals.stage.{stage}", "exists"))
                continue
            made = _json(self._call("POST", "/api/v1/stages", "stages.create",
                                    json={"name": stage, "pipeline_id": pipeline_id}, ok=(200, 201)))  # fmt: skip
            self._stages[(PIPELINE_NAME, stage)] = int(made["data"]["id"])
            steps.append(ProvisionStep(f"deals.stage.{stage}", "created"))
        return steps


# -- values ---------------------------------------------------------------------------------------
def wire_value(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def custom_value(definition: Mapping[str, Any], value: Any) -> Any:
    """A custom field's wire value: enum labels become option ids (ValueError if not an option)."""
    if value is None:
        return None
    kind = definition.get("field_type")
    if kind in ("enum", "set"):
        ids = {str(o.get("label")): o.get("id") for o in definition.get("options") or []}
        labels = value if isinstance(value, list | tuple) else [value]
        wanted = [str(v).lower() if isinstance(v, bool) else str(v) for v in labels]
        if any(w not in ids for w in wanted):
            raise ValueError("not an option")
        return [ids[w] for w in wanted] if kind == "set" else ids[wanted[0]]
    if kind in ("double", "monetary"):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value  # Pipedrive refuses it with a 400 naming the field
    return str(wire_value(value))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
