"""Every operation in a spec: method, normalised path, auth, webhook signs, paging and change feeds.

Each fact carries the JSON pointer it was read from, so a report can show its evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from telecrm.reports.spec_loader import Spec, pointer

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
WEBHOOK_WORDS = re.compile(r"web[-_]?hooks?|call[-_]?backs?|(?<![a-z])hooks?(?![a-z])", re.I)
PAGINATION_NAMES = frozenset(
    {"limit", "offset", "cursor", "page", "pagesize", "perpage", "pagetoken", "pagenumber",
     "after", "before", "startingafter", "endingbefore", "skip", "take", "top", "size"}
)  # fmt: skip
CHANGE_FEED = re.compile(r"(updated|modified|changed|lastmodified)(since|after|from|gte|gt)|since$")


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    role: str  # "pagination", "change_feed" or "filter"
    evidence: str


@dataclass
class Operation:
    """One method on one path (or one OpenAPI 3.1 webhook), as the document states it."""

    method: str
    path: str
    kind: str  # "path" or "webhook" (an OpenAPI 3.1 `webhooks` entry the platform sends)
    evidence: str
    node: dict[str, Any]
    operation_id: str | None
    tags: tuple[str, ...]
    auth: tuple[str, ...]
    auth_evidence: str
    parameters: tuple[Parameter, ...]
    webhook_reason: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.method, normalise_path(self.path)


@dataclass
class Endpoint:
    """Operations that are the same endpoint (same method, same path up to parameter names)."""

    method: str
    path: str
    operations: list[Operation] = field(default_factory=list)

    @property
    def first(self) -> Operation:
        return self.operations[0]

    @property
    def evidence(self) -> list[str]:
        return [op.evidence for op in self.operations]

    @property
    def auth(self) -> tuple[str, ...]:
        return tuple(sorted({a for op in self.operations for a in op.auth}))

    @property
    def is_webhook(self) -> bool:
        return any(op.webhook_reason for op in self.operations)

    @property
    def parameters(self) -> list[Parameter]:
        seen: dict[tuple[str, str], Parameter] = {}
        for op in self.operations:
            for p in op.parameters:
                seen.setdefault((p.name, p.role), p)
        return list(seen.values())

    def parameters_for(self, role: str) -> list[Parameter]:
        return [p for p in self.parameters if p.role == role]

    @property
    def is_list(self) -> bool:
        """A GET on a collection: its last segment is not a parameter, or it pages."""
        last = self.path.rstrip("/").rsplit("/", 1)[-1]
        return self.method == "get" and (
            not last.startswith("{") or bool(self.parameters_for("pagination"))
        )


def normalise_path(path: str) -> str:
    """`/patients/{id}/` and `/patients/{patientId}` are one endpoint: `/patients/{}`."""
    path = re.sub(r"\{[^}/]*\}", "{}", path.strip())
    return path.rstrip("/") or "/"


def _scheme_kind(scheme: Any) -> str:
    if not isinstance(scheme, dict):
        return "unknown"
    kind = str(scheme.get("type", "")).lower()
    if kind == "http":
        http = str(scheme.get("scheme", "")).lower()
        if http == "bearer":
            return (
                "jwt_bearer" if str(scheme.get("bearerFormat", "")).upper() == "JWT" else "bearer"
            )
        return "basic" if http == "basic" else f"http_{http}"
    return {
        "apikey": "api_key",
        "oauth2": "oauth2",
        "basic": "basic",
        "openidconnect": "openid_connect",
        "mutualtls": "mutual_tls",
    }.get(kind, "unknown")


def _security_schemes(spec: Spec) -> dict[str, Any]:
    doc = spec.document
    if spec.is_swagger:
        found = doc.get("securityDefinitions")
    else:
        components = doc.get("components")
        found = components.get("securitySchemes") if isinstance(components, dict) else None
    return found if isinstance(found, dict) else {}


def _auth(spec: Spec, op: dict[str, Any], op_ptr: str) -> tuple[tuple[str, ...], str]:
    """Scheme kinds that satisfy the operation's security (any one requirement), and where."""
    if "security" in op:
        requirements, where = op["security"], op_ptr + "/security"
    elif "security" in spec.document:
        requirements, where = spec.document["security"], "#/security"
    else:
        return ("none",), op_ptr  # nothing declared anywhere
    if not isinstance(requirements, list) or not requirements:
        return ("none",), where
    schemes = _security_schemes(spec)
    kinds: set[str] = set()
    for requirement in requirements:
        if not isinstance(requirement, dict) or not requirement:
            kinds.add("none")  # `{}` makes auth optional
            continue
        for name in requirement:
            target, _ = spec.deref(schemes.get(name), where)
            kinds.add(_scheme_kind(target))
    return tuple(sorted(kinds)), where


def _parameter_role(name: str, location: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if location != "query":
        return None
    if key in PAGINATION_NAMES or key.lstrip("$") in PAGINATION_NAMES:
        return "pagination"
    if CHANGE_FEED.search(key):
        return "change_feed"
    return "filter"


def _parameters(
    spec: Spec, item: dict[str, Any], item_ptr: str, op: dict[str, Any], op_ptr: str
) -> tuple[Parameter, ...]:
    found: dict[tuple[str, str], Parameter] = {}
    for params, base in ((item.get("parameters"), item_ptr), (op.get("parameters"), op_ptr)):
        if not isinstance(params, list):
            continue
        for i, raw in enumerate(params):
            param, _ = spec.deref(raw, f"{base}/parameters/{i}")
            if not isinstance(param, dict) or not isinstance(param.get("name"), str):
                continue
            role = _parameter_role(param["name"], str(param.get("in", "")))
            if role:  # an operation's parameter overrides the path item's of the same name
                found[(param["name"], role)] = Parameter(
                    param["name"], role, f"{base}/parameters/{i}"
                )
    return tuple(found.values())


def _webhook_reason(path: str, op: dict[str, Any]) -> str | None:
    if WEBHOOK_WORDS.search(path):
        return "path"
    if isinstance(op.get("operationId"), str) and WEBHOOK_WORDS.search(op["operationId"]):
        return "operationId"
    tags = op.get("tags")
    if isinstance(tags, list) and any(isinstance(t, str) and WEBHOOK_WORDS.search(t) for t in tags):
        return "tag"
    return None


def _operations_of(spec: Spec, section: str, kind: str) -> list[Operation]:
    items = spec.document.get(section)
    if not isinstance(items, dict):
        return []
    ops: list[Operation] = []
    for raw_path, raw_item in items.items():
        path = str(raw_path)  # YAML may give an int or a date as a key
        item_ptr = pointer(section, path)
        item, _ = spec.deref(raw_item, item_ptr)
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            op_ptr = f"{item_ptr}/{method}"
            auth: tuple[str, ...]
            reason: str | None
            if kind == "webhook":
                auth, auth_ptr, reason = ("n/a",), op_ptr, "webhooks"
            else:
                (auth, auth_ptr), reason = _auth(spec, op, op_ptr), _webhook_reason(path, op)
            raw_tags = op.get("tags")
            tags = (
                tuple(t for t in raw_tags if isinstance(t, str))
                if isinstance(raw_tags, list)
                else ()
            )
            op_id = op.get("operationId") if isinstance(op.get("operationId"), str) else None
            ops.append(
                Operation(
                    method=method,
                    path=path,
                    kind=kind,
                    evidence=op_ptr,
                    node=op,
                    operation_id=op_id,
                    tags=tags,
                    auth=auth,
                    auth_evidence=auth_ptr,
                    parameters=_parameters(spec, item, item_ptr, op, op_ptr),
                    webhook_reason=reason,
                )
            )
    return ops


def operations(spec: Spec) -> list[Operation]:
    return _operations_of(spec, "paths", "path") + _operations_of(spec, "webhooks", "webhook")


def endpoints(spec: Spec) -> list[Endpoint]:
    """De-duplicated endpoints in document order; each keeps every operation as evidence."""
    by_key: dict[tuple[str, str, str], Endpoint] = {}
    for op in operations(spec):
        key = (op.kind, *op.key)
        if key not in by_key:
            by_key[key] = Endpoint(op.method, op.path)
        by_key[key].operations.append(op)
    return list(by_key.values())
