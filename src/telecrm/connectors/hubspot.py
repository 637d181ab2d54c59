"""The HubSpot connector: batch upsert/update/archive, v4 associations and property provisioning.

A thin client of HubSpot's CRM v3/v4 API (crm-apis.md §1): it maps answers back to records by
the id property (HubSpot's batch results come back in any order), turns 207 errors into
per-record rejections, and HTTP failures into base.py's errors. HubSpot's messages may echo a
value (an invalid email, say), so nothing from a message ever reaches an outcome or exception:
only categories, codes and property names do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import httpx

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
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
from telecrm.connectors.hubspot_auth import HubSpotConfig, OAuthTokens

HUBSPOT_BATCH_MAX = 100  # CRM v3 batch endpoints take at most 100 inputs (crm-apis.md §1.2)
HUBSPOT_BURST_WINDOW_S = 10.0  # TEN_SECONDLY_ROLLING window (crm-apis.md §1.3)
SECONDS_PER_DAY = 86_400
PROPERTY_GROUP = "telecrm"  # every property telecrm creates lives in this group
# CustomProperty.kind → HubSpot (type, fieldType) (crm-apis.md §1.2 Properties API)
PROPERTY_TYPES = {
    "string": ("string", "text"),
    "number": ("number", "number"),
    "enumeration": ("enumeration", "select"),
    "date": ("date", "date"),
    "datetime": ("datetime", "date"),
    "bool": ("bool", "booleancheckbox"),
}
# Not in hubspot-api-client 12's PropertyCreate, but on HubSpot's create-property reference.
SENSITIVE = "sensitive"

__all__ = ["HUBSPOT_BATCH_MAX", "HubSpotConfig", "HubSpotConnector"]


class HubSpotConnector:
    """One HubSpot account, through an injected httpx.Client and the account's CallGate."""

    kind = "hubspot"

    def __init__(
        self,
        config: HubSpotConfig,
        client: httpx.Client | None = None,
        *,
        gate: CallGate | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats = CallStats()
        self._client = client or httpx.Client(timeout=config.timeout_seconds)
        self._gate: CallGate = gate or OpenGate()
        self._now = now
        self._base = config.base_url.rstrip("/")
        self._oauth = (
            OAuthTokens(config, self._client, self.stats, now) if config.uses_oauth else None
        )

    def batch_max(self, crm_object: str) -> int:
        return HUBSPOT_BATCH_MAX

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
        _check_batch(records)
        if not records:
            return []
        inputs = [
            {"idProperty": id_property, "id": r.key, "properties": _wire_properties(r.properties),
             "objectWriteTraceId": r.key}
            for r in records
        ]  # fmt: skip
        op = "upsert" if mode == "upsert" else "update"
        body = self._batch(
            f"/crm/v3/objects/{crm_object}/batch/{op}", f"{crm_object}.batch.{op}", inputs
        )
        by_key: dict[str, RecordOutcome] = {}
        lookup = _key_lookup(records)
        for result in body.get("results") or []:
            key = _result_key(result, id_property, lookup)
            if key is not None:
                created = bool(result["new"]) if "new" in result else False
                by_key[key] = RecordOutcome(
                    key, "accepted", crm_id=str(result.get("id")), created=created
                )
        for error in body.get("errors") or []:
            code, detail = _error_code_and_detail(error)
            for raw in (error.get("context") or {}).get("ids") or []:
                key = lookup.get(str(raw)) or lookup.get(str(raw).lower())
                if key is None or key in by_key:
                    continue
                if code == "OBJECT_NOT_FOUND" and mode == "update":
                    by_key[key] = RecordOutcome(key, "missing", code=code)
                else:
                    by_key[key] = RecordOutcome(key, "rejected", code=code, detail=detail)
        return _complete(records, by_key)

    def archive(self, crm_object: str, records: Sequence[RecordWrite]) -> list[RecordOutcome]:
        """Archive by CRM id. HubSpot answers 204 either way, so a record without one is "missing"."""
        _check_batch(records)
        known = [r for r in records if r.crm_id]
        if known:
            inputs = [{"id": r.crm_id} for r in known]
            self._batch(
                f"/crm/v3/objects/{crm_object}/batch/archive", f"{crm_object}.batch.archive", inputs
            )
        return [
            RecordOutcome(r.key, "accepted", crm_id=r.crm_id)
            if r.crm_id
            else RecordOutcome(r.key, "missing")
            for r in records
        ]

    def associate(
        self, from_object: str, to_object: str, links: Sequence[AssociationWrite]
    ) -> list[RecordOutcome]:
        if len(links) > HUBSPOT_BATCH_MAX:
            raise ValueError(f"at most {HUBSPOT_BATCH_MAX} links per call, got {len(links)}")
        if not links:
            return []
        inputs = [
            {"from": {"id": link.from_crm_id}, "to": {"id": link.to_crm_id}} for link in links
        ]
        path = f"/crm/v4/associations/{from_object}/{to_object}/batch/associate/default"
        body = self._batch(path, f"{from_object}.{to_object}.associate", inputs)
        done = {(str(r["from"]["id"]), str(r["to"]["id"])) for r in body.get("results") or []}
        refused: dict[tuple[str, str], str] = {}
        refused_from: dict[str, str] = {}
        for error in body.get("errors") or []:
            code, _ = _error_code_and_detail(error)
            context = error.get("context") or {}
            froms = [str(i) for i in context.get("fromObjectId") or context.get("ids") or []]
            tos = [str(i) for i in context.get("toObjectId") or []]
            for from_id in froms:
                if tos:
                    refused.update({(from_id, to_id): code for to_id in tos})
                else:
                    refused_from[from_id] = code
        outcomes, unanswered = [], 0
        for link in links:
            pair = (link.from_crm_id, link.to_crm_id)
            if pair in done:
                outcomes.append(RecordOutcome(link.key, "accepted", crm_id=link.from_crm_id))
            elif pair in refused or link.from_crm_id in refused_from:
                code = refused.get(pair) or refused_from[link.from_crm_id]
                outcomes.append(
                    RecordOutcome(link.key, "rejected", code=code, detail="association")
                )
            else:
                unanswered += 1
        if unanswered:
            raise TransientFailure(
                "INCOMPLETE_RESPONSE", f"{unanswered} of {len(links)} links unanswered"
            )
        return outcomes

    # -- properties -------------------------------------------------------------------------------
    def provision(self, properties: Sequence[CustomProperty]) -> list[ProvisionStep]:
        """Ensure the telecrm group on each object, then each property: GET, and POST if absent."""
        steps: list[ProvisionStep] = []
        for crm_object in dict.fromkeys(p.crm_object for p in properties):
            steps.append(self._ensure_group(crm_object))
        for prop in properties:
            steps.append(self._ensure_property(prop))
        return steps

    def _ensure_group(self, crm_object: str) -> ProvisionStep:
        target = f"{crm_object}.group.{PROPERTY_GROUP}"
        found = self._call(
            "GET",
            f"/crm/v3/properties/{crm_object}/groups/{PROPERTY_GROUP}",
            "properties.groups.read",
            ok=(200, 404),
        )
        if found.status_code == 200:
            return ProvisionStep(target, "exists")
        body = {"name": PROPERTY_GROUP, "label": "telecrm", "displayOrder": -1}
        return self._create(
            target, f"/crm/v3/properties/{crm_object}/groups", "properties.groups.create", body
        )

    def _create(self, target: str, path: str, endpoint: str, body: dict[str, Any]) -> ProvisionStep:
        """POST a definition; a 409 means another run made it first."""
        made = self._call("POST", path, endpoint, json=body, ok=(201, 200, 400, 409))
        if made.status_code == 409:
            return ProvisionStep(target, "exists")
        if made.status_code >= 400:
            return ProvisionStep(target, "failed", _category(made))
        return ProvisionStep(target, "created")

    def _ensure_property(self, prop: CustomProperty) -> ProvisionStep:
        target = f"{prop.crm_object}.{prop.name}"
        hs_type, field_type = PROPERTY_TYPES[prop.kind]
        found = self._call(
            "GET",
            f"/crm/v3/properties/{prop.crm_object}/{prop.name}",
            "properties.read",
            ok=(200, 404),
        )
        if found.status_code == 200:
            existing = _json(found)
            mismatched = [
                attr for attr, want in (("type", hs_type), ("hasUniqueValue", prop.unique))
                if existing.get(attr) != want
            ]  # fmt: skip
            if mismatched:
                return ProvisionStep(
                    target, "failed", f"exists with different {', '.join(mismatched)}"
                )
            return ProvisionStep(target, "exists")
        body: dict[str, Any] = {
            "name": prop.name, "label": prop.label, "type": hs_type, "fieldType": field_type,
            "groupName": PROPERTY_GROUP, "hasUniqueValue": prop.unique,
        }  # fmt: skip
        if prop.kind == "enumeration":
            body["options"] = [
                {"label": o, "value": o, "displayOrder": i, "hidden": False}
                for i, o in enumerate(prop.options)
            ]
        elif prop.kind == "bool":
            body["options"] = [
                {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
            ]
        if prop.sensitive:
            body["dataSensitivity"] = SENSITIVE
        return self._create(
            target, f"/crm/v3/properties/{prop.crm_object}", "properties.create", body
        )

    # -- the wire ---------------------------------------------------------------------------------
    def _batch(self, path: str, endpoint: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        response = self._call(
            "POST", path, endpoint, json={"inputs": inputs}, ok=(200, 201, 204, 207, 400)
        )
        if response.status_code == 400:
            body = _json(response)
            codes = sorted({str(e.get("code")) for e in body.get("errors") or [] if e.get("code")})
            names = _property_names(body)
            detail = "; ".join(part for part in (
                f"codes: {', '.join(codes)}" if codes else "", f"properties: {', '.join(names)}" if names else ""
            ) if part)  # fmt: skip
            raise BatchRejected(str(body.get("category") or "BAD_REQUEST"), detail, status=400)
        if response.status_code == 204:
            return {}
        body = _json(response)
        if not body and response.status_code != 204:
            raise TransientFailure(
                "UNREADABLE_RESPONSE", f"HTTP {response.status_code}", status=response.status_code
            )
        return body

    def _call(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """One API request through the gate; refreshes OAuth once on a 401."""
        for attempt in (0, 1):
            token = self._oauth.current() if self._oauth else self._private_token()
            self._gate.wait_turn()
            self.stats.count(endpoint)
            try:
                response = self._client.request(
                    method,
                    self._base + path,
                    json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TimeoutException:
                raise TransientFailure("TIMEOUT", endpoint) from None
            except httpx.TransportError as exc:
                raise TransientFailure("CONNECTION", f"{endpoint}: {type(exc).__name__}") from None
            self._gate.observe(response.status_code, response.headers)
            status = response.status_code
            if status == 401 and self._oauth is not None and attempt == 0:
                self._oauth.refresh()
                continue
            if status in ok:
                return response
            raise self._failure(response, endpoint)
        raise AssertionError("unreachable")  # pragma: no cover

    def _private_token(self) -> str:
        assert self.config.private_app_token is not None
        return self.config.private_app_token.get_secret_value()

    def _failure(self, response: httpx.Response, endpoint: str) -> ConnectorError:
        status = response.status_code
        body = _json(response)
        category = str(body.get("category") or body.get("policyName") or f"HTTP_{status}")
        if status == 429:
            self.stats.limit_refusals += 1
            policy = str(body.get("policyName") or "TEN_SECONDLY_ROLLING")
            if policy == "DAILY":
                # HubSpot resets at midnight in the account's time zone, which the API does not
                # tell us: wait for the next UTC midnight (the earliest any zone could reset is
                # unknowable, so this can be up to a day early or late; the gate re-checks).
                retry = SECONDS_PER_DAY - (self._now() % SECONDS_PER_DAY)
                return RateLimited("DAILY", endpoint, status=429, retry_after=retry, daily=True)
            return RateLimited(policy, endpoint, status=429, retry_after=_retry_after(response))
        if status >= 500:
            return TransientFailure(category, endpoint, status=status)
        if status == 401:
            return AuthFailed(category, endpoint, status=401)
        if status == 403:
            return ConfigurationError(category, endpoint, status=403)
        if status == 404:
            return ConfigurationError("OBJECT_NOT_FOUND", endpoint, status=404)
        return ConnectorError(category, endpoint, status=status)


# -- helpers ----------------------------------------------------------------------------------------
def _check_batch(records: Sequence[RecordWrite]) -> None:
    if len(records) > HUBSPOT_BATCH_MAX:
        raise ValueError(f"at most {HUBSPOT_BATCH_MAX} records per call, got {len(records)}")
    if len({r.key for r in records}) != len(records):
        raise ValueError("duplicate keys in one batch: HubSpot refuses the whole batch")


def _wire_value(value: Any) -> str:
    """HubSpot property values are strings; None clears, dates are ISO, datetimes UTC ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _wire_properties(properties: Mapping[str, Any]) -> dict[str, str]:
    return {name: _wire_value(value) for name, value in properties.items()}


def _key_lookup(records: Sequence[RecordWrite]) -> dict[str, str]:
    """Every form an answer may name a record by (key, lower-cased key, CRM id) → the key."""
    lookup: dict[str, str] = {}
    for r in records:
        if r.crm_id:
            lookup.setdefault(r.crm_id, r.key)
        lookup.setdefault(r.key.lower(), r.key)
    lookup.update({r.key: r.key for r in records})
    return lookup


def _result_key(
    result: Mapping[str, Any], id_property: str, lookup: Mapping[str, str]
) -> str | None:
    for candidate in (
        (result.get("properties") or {}).get(id_property),
        result.get("objectWriteTraceId"),
    ):
        if candidate is not None:
            key = lookup.get(str(candidate)) or lookup.get(str(candidate).lower())
            if key is not None:
                return key
    return None


def _error_code_and_detail(error: Mapping[str, Any]) -> tuple[str, str]:
    """HubSpot's code (the first detail's, else the category) and the property names: no message."""
    details = [d for d in error.get("errors") or [] if isinstance(d, Mapping)]
    codes = [str(d["code"]) for d in details if d.get("code")]
    code = codes[0] if codes else str(error.get("category") or "ERROR")
    names = _property_names(error)
    parts = [f"codes: {', '.join(sorted(set(codes)))}"] if len(set(codes)) > 1 else []
    if names:
        parts.append(f"properties: {', '.join(names)}")
    return code, "; ".join(parts)


def _property_names(error: Mapping[str, Any]) -> list[str]:
    names: set[str] = set()
    for d in error.get("errors") or []:
        if not isinstance(d, Mapping):
            continue
        if d.get("in"):
            names.add(str(d["in"]))
        names.update(str(n) for n in (d.get("context") or {}).get("propertyName") or [])
    return sorted(names)


def _complete(
    records: Sequence[RecordWrite], by_key: Mapping[str, RecordOutcome]
) -> list[RecordOutcome]:
    """One outcome per record in input order; a record HubSpot did not answer for is not accepted."""
    unanswered = [r for r in records if r.key not in by_key]
    if unanswered:
        raise TransientFailure(
            "INCOMPLETE_RESPONSE", f"{len(unanswered)} of {len(records)} records unanswered"
        )
    return [by_key[r.key] for r in records]


def _retry_after(response: httpx.Response) -> float:
    header = response.headers.get("Retry-After", "")
    if header.strip().isdigit():
        return float(header)
    interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
    if interval.strip().isdigit():
        return int(interval) / 1000
    return HUBSPOT_BURST_WINDOW_S


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _category(response: httpx.Response) -> str:
    return str(_json(response).get("category") or f"HTTP_{response.status_code}")
