"""The Pipedrive connector: upsert by a custom field, one record per call, fields and pipeline setup.

A thin client of Pipedrive's API (docs/research crm-apis.md §3). Pipedrive has no batch write and
no upsert (§3.2, absence UNCONFIRMED), so `write()` takes one record: it PATCHes the Pipedrive id
it already knows (the sync engine's `crm_id`, or one this connector created or found), else
searches the id custom field once for that key, then PATCHes what it found or POSTs a new record.
Custom fields are addressed by the 40-char hash key Pipedrive generated for them; the mapping
names them by field *name*, which this connector resolves once per object (personFields, ...).
Pipedrive's error texts may echo a value, so only HTTP statuses, Pipedrive's `code` and field
names we sent ever reach an outcome or exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    CallGate,
    CallStats,
    ConfigurationError,
    ConnectorError,
    CustomProperty,
    OpenGate,
    ProvisionStep,
    RateLimited,
    RecordOutcome,
    RecordWrite,
    TransientFailure,
    WriteMode,
)
from telecrm.connectors.pipedrive_auth import OAuthTokens, PipedriveConfig
from telecrm.connectors.pipedrive_marked import MARKED_TEXT, PATHS, MarkedRecords
from telecrm.connectors.pipedrive_schema import PipedriveSchema, custom_value, wire_value

PIPEDRIVE_BATCH_MAX = 1  # no batch create/update endpoint (crm-apis.md §3.2, UNCONFIRMED absence)
PIPEDRIVE_BURST_WINDOW_S = 2.0  # burst limits are per 2-second window (crm-apis.md §3.3, §5)
DAILY_RETRY_THRESHOLD_S = 60.0  # a 429 asking for longer than this is the daily budget (§3.3)
EXACT_MATCH_MAX_CHARS = 30  # exact-match search only works for terms <= 30 chars (§3.2)
SEARCHABLE = {"persons", "organizations", "deals"}  # v2 /{obj}/search (§3.2)
# Top-level keys of the v2 objects (pipedrive/client-nodejs v2 Add*Request models); `email` and
# `phone` are ours: one address, sent as Pipedrive's `emails` / `phones` list.
STANDARD: dict[str, set[str]] = {
    "persons": {"name", "owner_id", "org_id", "emails", "phones", "email", "phone", "visible_to",
                "label_ids", "marketing_status"},
    "organizations": {"name", "owner_id", "address", "visible_to", "label_ids"},
    "deals": {"title", "owner_id", "person_id", "org_id", "pipeline_id", "stage_id", "value",
              "currency", "status", "probability", "expected_close_date", "visible_to", "label_ids"},
    "activities": {"subject", "type", "owner_id", "deal_id", "person_id", "org_id", "due_date",
                   "due_time", "duration", "busy", "done", "note", "priority"},
    "notes": {"content", "deal_id", "person_id", "org_id"},  # v1 AddNoteRequest
}  # fmt: skip
# (from, to) → the id field on the from-record that links it (v2 request models)
LINKS = {("deals", "persons"): "person_id", ("deals", "organizations"): "org_id",
         ("persons", "organizations"): "org_id", ("activities", "deals"): "deal_id",
         ("activities", "persons"): "person_id", ("notes", "deals"): "deal_id",
         ("notes", "persons"): "person_id"}  # fmt: skip
# A link property (person_id, ...) holds a Pipedrive id (an int), or our key of the linked record:
# a mapping's `relation:` ({id field: key}) or a bare key (a str, found by the object's id field).
LINK_TARGETS = {"person_id": "persons", "deal_id": "deals", "org_id": "organizations"}
PARENT_FIELDS = {obj: field for field, obj in LINK_TARGETS.items()}  # persons -> person_id

__all__ = ["PIPEDRIVE_BATCH_MAX", "PipedriveConfig", "PipedriveConnector"]


class PipedriveConnector:
    """One Pipedrive company, through an injected httpx.Client and the company's CallGate."""

    kind = "pipedrive"

    def __init__(
        self,
        config: PipedriveConfig,
        client: httpx.Client | None = None,
        *,
        gate: CallGate | None = None,
        now: Callable[[], float] = time.time,
        on_refresh: Callable[[str], None] | None = None,
        id_fields: Mapping[str, str] | None = None,
        search_gate: CallGate | None = None,
    ) -> None:
        """`id_fields`: each object's id custom field (persons: telecrm_patient_id, ...), to find
        a linked record by our key; `search_gate`: the separate budget of search calls."""
        self.config = config
        self.stats = CallStats()
        self._client = client or httpx.Client(timeout=config.timeout_seconds)
        self._gate: CallGate = gate or OpenGate()
        self._base = config.base_url.rstrip("/")
        self._oauth = (
            OAuthTokens(config, self._client, self.stats, now, on_refresh)
            if config.uses_oauth
            else None
        )
        self._schema = PipedriveSchema(self._call)
        self._ids: dict[tuple[str, str], str] = {}  # (obj, key) → Pipedrive id
        self._searched: set[tuple[str, str]] = set()  # searched, and absent when we looked
        self._id_fields: dict[str, str] = dict(id_fields or {})  # obj -> its id custom field
        self._linked: dict[tuple[str, str, str], str] = {}  # (obj, id, link field) -> id we sent
        self._marked = MarkedRecords(self._call, self._ids, self._outcome)
        self._search_gate = search_gate

    @property
    def refresh_token(self) -> str | None:
        """The newest OAuth refresh token (the configured one is single-use): persist it."""
        return self._oauth.refresh_token if self._oauth else None

    def batch_max(self, crm_object: str) -> int:
        return PIPEDRIVE_BATCH_MAX

    def close(self) -> None:
        self._client.close()

    # -- records ----------------------------------------------------------------------------------
    def write(
        self,
        crm_object: str,
        id_property: str,
        records: Sequence[RecordWrite],
        *,
        mode: WriteMode = "upsert",
    ) -> list[RecordOutcome]:
        """Upsert (or update) one record: PATCH a known id, else search once, then PATCH or POST."""
        if len(records) > PIPEDRIVE_BATCH_MAX:
            raise ValueError(f"Pipedrive takes one record per call, got {len(records)}")
        if crm_object in MARKED_TEXT:
            return [self._write_marked(crm_object, id_property, r, mode) for r in records]
        self._id_fields.setdefault(crm_object, id_property)
        return [self._write_one(crm_object, id_property, r, mode) for r in records]

    def _write_marked(
        self, obj: str, id_property: str, r: RecordWrite, mode: WriteMode
    ) -> RecordOutcome:
        """An activity or note: no id field, a marker in its text instead (pipedrive_marked)."""
        props = {k: v for k, v in r.properties.items() if k != id_property}
        body, wire_names, problem = self._body(obj, props)
        if problem is not None:
            return RecordOutcome(r.key, "rejected", code=problem[0], detail=f"fields: {problem[1]}")
        return self._marked.write(obj, id_property, r.key, r.crm_id, body, wire_names, mode)

    def _write_one(
        self, obj: str, id_property: str, r: RecordWrite, mode: WriteMode
    ) -> RecordOutcome:
        id_key = self._schema.field(obj, id_property)["key"]
        body, wire_names, problem = self._body(obj, {**r.properties, id_property: r.key})
        if problem is not None:
            return RecordOutcome(r.key, "rejected", code=problem[0], detail=f"fields: {problem[1]}")
        slot = (obj, r.key)
        crm_id = r.crm_id or self._ids.get(slot)
        if crm_id is None and slot not in self._searched:
            if len(r.key) > EXACT_MATCH_MAX_CHARS:
                return RecordOutcome(
                    r.key, "rejected", code="KEY_TOO_LONG", detail=f"fields: {id_property}"
                )
            crm_id = self._search(obj, id_key, r.key)
            if crm_id is None:
                self._searched.add(slot)
        if crm_id is not None:
            response = self._call("PATCH", f"/api/v2/{obj}/{crm_id}", f"{obj}.update", json=body,
                                  ok=(200, 400, 404, 410))  # fmt: skip
            if response.status_code in (404, 410):  # deleted in Pipedrive since we learnt its id
                self._ids.pop(slot, None)
                if mode == "update":
                    return RecordOutcome(r.key, "missing", code=f"HTTP_{response.status_code}")
            else:
                return self._linking(obj, body, self._outcome(r.key, slot, response, wire_names,
                                                              created=False))  # fmt: skip
        if mode == "update":
            return RecordOutcome(r.key, "missing")
        self._searched.discard(slot)  # if the answer is lost, the record may exist: search again
        response = self._call(
            "POST", f"/api/v2/{obj}", f"{obj}.create", json=body, ok=(200, 201, 400)
        )
        outcome = self._outcome(r.key, slot, response, wire_names, created=True)
        parent_field = PARENT_FIELDS.get(obj)
        if outcome.crm_id is not None and parent_field is not None:
            self._marked.parent_created(parent_field, int(outcome.crm_id))
        return self._linking(obj, body, outcome)

    def _linking(self, obj: str, body: Mapping[str, Any], outcome: RecordOutcome) -> RecordOutcome:
        """Remember the links a written body set, so `associate` need not set them again."""
        if outcome.crm_id is not None:
            for (from_obj, _), field in LINKS.items():
                if from_obj == obj and body.get(field) is not None:
                    self._linked[(obj, outcome.crm_id, field)] = str(body[field])
        return outcome

    def _outcome(
        self, key: str, slot: tuple[str, str], response: httpx.Response,
        wire_names: Mapping[str, str], *, created: bool,
    ) -> RecordOutcome:  # fmt: skip
        body = _json(response)
        if response.status_code == 400:
            text = str(body.get("error") or "")
            named = sorted(ours for wire, ours in wire_names.items() if wire in text)
            code = str(body.get("code") or "INVALID_DATA")
            return RecordOutcome(
                key, "rejected", code=code, detail=f"fields: {', '.join(named)}" if named else ""
            )
        data = body.get("data")
        if not isinstance(data, dict) or data.get("id") is None:
            raise TransientFailure("UNREADABLE_RESPONSE", f"HTTP {response.status_code}")
        crm_id = str(data["id"])
        self._ids[slot] = crm_id
        return RecordOutcome(key, "accepted", crm_id=crm_id, created=created)

    def _search(self, obj: str, id_key: str, key: str) -> str | None:
        """The id of the record whose id field equals `key` exactly, or None (§3.2)."""
        if obj not in SEARCHABLE:
            raise ConfigurationError("NOT_SEARCHABLE", f"{obj} has no search endpoint")
        params = {"term": key, "fields": "custom_fields", "exact_match": "true", "limit": "10"}
        response = self._call("GET", f"/api/v2/{obj}/search", f"{obj}.search", params=params,
                              gate=self._search_gate)  # fmt: skip
        data = _json(response).get("data") or {}
        ids = [
            str(i["item"]["id"])
            for i in data.get("items") or []
            if isinstance(i, dict) and i.get("item")
        ]
        if len(ids) <= 1:
            return ids[0] if ids else None
        for crm_id in ids:  # another custom field may hold the same text: check the id field
            found = (
                _json(self._call("GET", f"/api/v2/{obj}/{crm_id}", f"{obj}.read")).get("data") or {}
            )
            if str((found.get("custom_fields") or {}).get(id_key)) == key:
                return crm_id
        return None

    def archive(self, crm_object: str, records: Sequence[RecordWrite]) -> list[RecordOutcome]:
        """Delete by Pipedrive id; one DELETE per record. Already deleted (410) counts as done."""
        outcomes = []
        for r in records:
            crm_id = r.crm_id or self._ids.get((crm_object, r.key))
            if crm_id is None:
                outcomes.append(RecordOutcome(r.key, "missing"))
                continue
            path = PATHS.get(crm_object, f"/api/v2/{crm_object}")
            response = self._call("DELETE", f"{path}/{crm_id}", f"{crm_object}.delete",
                                  ok=(200, 404, 410))  # fmt: skip
            self._ids.pop((crm_object, r.key), None)
            gone = response.status_code == 404
            outcomes.append(RecordOutcome(r.key, "missing" if gone else "accepted", crm_id=crm_id))
        return outcomes

    def associate(
        self, from_object: str, to_object: str, links: Sequence[AssociationWrite]
    ) -> list[RecordOutcome]:
        """Set the from-record's link field (deal.person_id, person.org_id, ...) by PATCH."""
        link_field = LINKS.get((from_object, to_object))
        if link_field is None:
            raise ConfigurationError("UNSUPPORTED_ASSOCIATION", f"{from_object} -> {to_object}")
        outcomes = []
        for link in links:
            if self._linked.get((from_object, link.from_crm_id, link_field)) == str(link.to_crm_id):
                # the write's own body set it (persons are written before what links to them)
                outcomes.append(RecordOutcome(link.key, "accepted", crm_id=link.from_crm_id))
                continue
            response = self._call(
                "PATCH", f"/api/v2/{from_object}/{link.from_crm_id}", f"{from_object}.link",
                json={link_field: int(link.to_crm_id)}, ok=(200, 400, 404, 410),
            )  # fmt: skip
            status = response.status_code
            if status == 200:
                self._linked[(from_object, link.from_crm_id, link_field)] = str(link.to_crm_id)
                outcomes.append(RecordOutcome(link.key, "accepted", crm_id=link.from_crm_id))
            elif status == 400:
                code = str(_json(response).get("code") or "INVALID_DATA")
                outcomes.append(
                    RecordOutcome(link.key, "rejected", code=code, detail=f"fields: {link_field}")
                )
            else:
                outcomes.append(RecordOutcome(link.key, "missing", code=f"HTTP_{status}"))
        return outcomes

    # -- bodies -----------------------------------------------------------------------------------
    def _body(
        self, obj: str, properties: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], tuple[str, str] | None]:
        """The v2 body, wire name → our name, and (code, field) for a value refused before sending."""
        body: dict[str, Any] = {}
        customs: dict[str, Any] = {}
        names: dict[str, str] = {}
        standard = STANDARD.get(obj, set())
        for name, value in properties.items():
            if name in LINK_TARGETS and isinstance(value, dict | str):
                linked = self._link_id(LINK_TARGETS[name], value, search=obj in MARKED_TEXT)
                if linked is not None:
                    body[name], names[name] = linked, name
                continue
            if name in standard:
                wire, wired = _standard(name, value)
                if (
                    obj == "deals"
                    and name in ("pipeline_id", "stage_id")
                    and isinstance(value, str)
                    and not value.isdigit()
                ):
                    wired = (
                        self._schema.pipeline_id(value)
                        if name == "pipeline_id"
                        else self._schema.stage_id(properties, value)
                    )
                body[wire], names[wire] = wired, name
                continue
            definition = self._schema.field(obj, name)
            try:
                customs[definition["key"]] = custom_value(definition, value)
            except ValueError:
                return {}, {}, ("INVALID_OPTION", name)
            names[definition["key"]] = name
        if customs:
            body["custom_fields"] = customs
        return body, names, None

    def _link_id(self, target: str, value: dict[str, Any] | str, *, search: bool) -> int | None:
        """The Pipedrive id of the `target` record our key names: known, or (if `search`) found.

        Without `search` an unknown id is left out of the body, and `associate` sets it later.
        """
        field: str | None
        if isinstance(value, dict):
            if len(value) != 1:
                raise ConfigurationError("BAD_LINK", f"{target}: one id field expected")
            field, key = next(iter(value.items()))
        else:
            field, key = self._id_fields.get(target), value
        known = self._ids.get((target, str(key)))
        if known is not None or not search:
            return None if known is None else int(known)
        if field is None:
            raise ConfigurationError("LINK_FIELD_UNKNOWN", f"{target}: no id field to find it by")
        found = self._search(target, self._schema.field(target, field)["key"], str(key))
        if found is None:  # not written yet, or not yet in the search index: later
            raise TransientFailure("LINK_NOT_FOUND", target)
        self._ids[(target, str(key))] = found
        return int(found)

    def provision(self, properties: Sequence[CustomProperty]) -> list[ProvisionStep]:
        """Create missing custom fields (matched by name) and, for deals, the telecrm pipeline.

        Pipedrive custom fields cannot be made unique: `unique` is honoured by searching before
        every create instead (see `write`).
        """
        return self._schema.provision(properties)

    # -- the wire ---------------------------------------------------------------------------------
    def _call(
        self, method: str, path: str, endpoint: str, *, json: Any = None,
        params: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,),
        gate: CallGate | None = None,
    ) -> httpx.Response:  # fmt: skip
        """One API request through the gate (and `gate`, a search's own budget, after it);
        refreshes OAuth once on a 401."""
        for attempt in (0, 1):
            headers, query = self._credentials()
            self._gate.wait_turn()
            if gate is not None:
                gate.wait_turn()
            self.stats.count(endpoint)
            try:
                response = self._client.request(
                    method,
                    self._base + path,
                    json=json,
                    params={**(params or {}), **query},
                    headers=headers,
                )
            except httpx.TimeoutException:
                raise TransientFailure("TIMEOUT", endpoint) from None
            except httpx.TransportError as exc:
                raise TransientFailure("CONNECTION", f"{endpoint}: {type(exc).__name__}") from None
            self._gate.observe(response.status_code, response.headers)
            if gate is not None:
                gate.observe(response.status_code, response.headers)
            status = response.status_code
            if status == 401 and self._oauth is not None and attempt == 0:
                self._oauth.refresh()
                continue
            if status in ok:
                return response
            raise self._failure(response, endpoint)
        raise AssertionError("unreachable")  # pragma: no cover

    def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._oauth is not None:
            return {"Authorization": f"Bearer {self._oauth.current()}"}, {}
        assert self.config.api_token is not None
        token = self.config.api_token.get_secret_value()
        return (
            ({}, {"api_token": token})
            if self.config.token_in_query
            else ({"x-api-token": token}, {})
        )

    def _failure(self, response: httpx.Response, endpoint: str) -> ConnectorError:
        status = response.status_code
        code = str(_json(response).get("code") or f"HTTP_{status}")
        if status == 429:
            self.stats.limit_refusals += 1
            retry = _retry_after(response)
            daily = retry > DAILY_RETRY_THRESHOLD_S
            return RateLimited("DAILY_BUDGET" if daily else "RATE_LIMIT", endpoint, status=429,
                               retry_after=retry, daily=daily)  # fmt: skip
        if status >= 500:
            return TransientFailure(code, endpoint, status=status)
        if status == 401:
            return AuthFailed("INVALID_TOKEN", endpoint, status=401)
        if status in (403, 404, 410):  # scope, plan cap (feature_capping_*), wrong path
            return ConfigurationError(code, endpoint, status=status)
        return ConnectorError(code, endpoint, status=status)


# -- helpers ----------------------------------------------------------------------------------------
def _standard(name: str, value: Any) -> tuple[str, Any]:
    """Our standard property → (v2 key, value); one email / phone becomes a one-entry list."""
    if name in ("email", "phone"):
        return f"{name}s", [] if value in (None, "") else [
            {"value": str(value), "primary": True, "label": "work"}
        ]
    return name, wire_value(value)


def _retry_after(response: httpx.Response) -> float:
    for header in ("Retry-After", "x-ratelimit-reset"):
        raw = response.headers.get(header, "").strip()
        if raw.isdigit():
            return float(raw)
    return PIPEDRIVE_BURST_WINDOW_S


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
