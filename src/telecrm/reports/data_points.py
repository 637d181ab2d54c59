"""The schema fields each endpoint reads or writes, matched onto the field catalog's data points.

Schemas are walked through `$ref`, `allOf`/`oneOf`/`anyOf`, arrays and nested objects up to
`MAX_SCHEMA_DEPTH`; a `$ref` that leads back into itself is recorded on the `Spec` as a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from telecrm.domain.field_synonyms import catalog_field_for
from telecrm.domain.fields import Field
from telecrm.reports.endpoints import Endpoint, Operation
from telecrm.reports.spec_loader import Spec, escape_token

MAX_SCHEMA_DEPTH = 12  # deeper than any real payload; keeps a 10,000-path walk linear


@dataclass(frozen=True, slots=True)
class SchemaField:
    path: str  # e.g. "data[].contact.email"
    name: str
    fmt: str | None
    evidence: str  # where the property is defined


@dataclass(frozen=True, slots=True)
class Match:
    field: SchemaField
    catalog: Field
    how: str  # "name", "synonym" or "format"

    @property
    def is_phi(self) -> bool:
        return self.catalog.is_phi


@dataclass
class EndpointData:
    matches: list[Match]
    unmapped: list[SchemaField]

    @property
    def data_points(self) -> set[str]:
        return {m.catalog.data_point.key for m in self.matches}


def _schemas_of(spec: Spec, op: Operation) -> Iterator[tuple[Any, str, str]]:
    """(schema, pointer, "request"|"response") for each body the operation declares."""
    node = op.node
    if spec.is_swagger:
        params = node.get("parameters")
        for i, raw in enumerate(params if isinstance(params, list) else ()):
            param, _ = spec.deref(raw, f"{op.evidence}/parameters/{i}")
            if isinstance(param, dict) and param.get("in") == "body":
                yield param.get("schema"), f"{op.evidence}/parameters/{i}/schema", "request"
    else:
        body, body_ptr = spec.deref(node.get("requestBody"), f"{op.evidence}/requestBody")
        yield from _content(spec, body, body_ptr, "request")
    responses = node.get("responses")
    if isinstance(responses, dict):
        for status, raw in responses.items():
            if not str(status).startswith("2"):
                continue  # error bodies (problem+json, 422 details) are not patient data
            where = f"{op.evidence}/responses/{escape_token(str(status))}"
            response, where = spec.deref(raw, where)
            if spec.is_swagger and isinstance(response, dict):
                yield response.get("schema"), f"{where}/schema", "response"
            else:
                yield from _content(spec, response, where, "response")


def _content(spec: Spec, holder: Any, where: str, direction: str) -> Iterator[tuple[Any, str, str]]:
    content = holder.get("content") if isinstance(holder, dict) else None
    if isinstance(content, dict):
        for media, body in content.items():
            if isinstance(body, dict) and "schema" in body:
                yield (
                    body["schema"],
                    f"{where}/content/{escape_token(str(media))}/schema",
                    direction,
                )


def walk_schema(spec: Spec, schema: Any, where: str) -> list[SchemaField]:
    """Every named property under `schema` (containers too), outermost first."""
    found: list[SchemaField] = []
    _walk(spec, schema, where, "", (), found, 0)
    return found


def _walk(
    spec: Spec,
    node: Any,
    where: str,
    prefix: str,
    stack: tuple[str, ...],
    out: list[SchemaField],
    depth: int,
) -> None:
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        if node["$ref"] in stack:
            spec.cycles.add(where)
            return
        stack = (*stack, node["$ref"])
    node, where = spec.deref(node, where)
    if not isinstance(node, dict):
        return
    if depth > MAX_SCHEMA_DEPTH:
        spec.depth_limited.add(where)
        return
    for combiner in ("allOf", "oneOf", "anyOf"):
        parts = node.get(combiner)
        if isinstance(parts, list):
            for i, part in enumerate(parts):
                _walk(spec, part, f"{where}/{combiner}/{i}", prefix, stack, out, depth + 1)
    if "items" in node:
        _walk(spec, node["items"], f"{where}/items", prefix + "[]", stack, out, depth + 1)
    properties = node.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            prop_ptr = f"{where}/properties/{escape_token(str(name))}"
            target, _ = spec.deref(prop, prop_ptr) if not _loops(prop, stack) else ({}, prop_ptr)
            fmt = target.get("format") if isinstance(target, dict) else None
            path = f"{prefix}.{name}" if prefix else str(name)
            out.append(
                SchemaField(path, str(name), fmt if isinstance(fmt, str) else None, prop_ptr)
            )
            _walk(spec, prop, prop_ptr, path, stack, out, depth + 1)


def _loops(prop: Any, stack: tuple[str, ...]) -> bool:
    return isinstance(prop, dict) and prop.get("$ref") in stack


def endpoint_data(spec: Spec, endpoint: Endpoint) -> EndpointData:
    """Catalog matches and unmapped fields over every operation of the endpoint, de-duplicated."""
    return match_fields(
        f
        for op in endpoint.operations
        for schema, where, _direction in _schemas_of(spec, op)
        for f in walk_schema(spec, schema, where)
    )


def match_fields(fields: Iterable[SchemaField]) -> EndpointData:
    """Each field's catalog match by (name, format), or unmapped; the source-tree analyzer's too."""
    matches: dict[tuple[str, str], Match] = {}
    unmapped: dict[str, SchemaField] = {}
    for f in fields:
        hit = catalog_field_for(f.name, f.fmt)
        if hit is not None:
            matches.setdefault((f.path, hit[0].name), Match(f, hit[0], hit[1]))
        elif f.path not in unmapped:
            unmapped[f.path] = f
    # A container (`contact`, `data[]`) is listed through its own fields, not as one of them.
    skip = (
        {m.field.path for m in matches.values()}
        | {_parent(p) for p in unmapped}
        | {_parent(m.field.path) for m in matches.values()}
    )
    return EndpointData(list(matches.values()), [f for p, f in unmapped.items() if p not in skip])


def _parent(path: str) -> str:
    head = path.rsplit(".", 1)[0] if "." in path else ""
    return head.removesuffix("[]")
