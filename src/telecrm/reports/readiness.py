"""The API readiness report: one analysis of a spec, as a JSON-ready dict and as Markdown.

Every count in it comes with the JSON pointers it was counted from.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from telecrm.domain.fields import DATA_POINTS, FIELDS
from telecrm.reports.data_points import EndpointData, endpoint_data
from telecrm.reports.endpoints import Endpoint, endpoints
from telecrm.reports.relevance import classify
from telecrm.reports.roadmap import plan_sections
from telecrm.reports.spec_loader import Spec

FORMAT_VERSION = 1


def endpoint_row(n: int, e: Endpoint, data: EndpointData) -> dict[str, Any]:
    """One endpoint's row of the report; the source-tree analyzer builds the same rows."""
    rel = classify(e, data)
    params = {
        role: [{"name": p.name, "evidence": p.evidence} for p in e.parameters_for(role)]
        for role in ("pagination", "change_feed", "filter")
    }
    return {
        "id": f"E{n}",
        "method": e.method.upper(),
        "path": e.path,
        "kind": e.first.kind,
        "aliases": sorted({op.path for op in e.operations} - {e.path}),
        "operation_ids": [op.operation_id for op in e.operations if op.operation_id],
        "evidence": e.evidence,
        "auth": list(e.auth),
        "auth_evidence": sorted({op.auth_evidence for op in e.operations}),
        "webhook": next((op.webhook_reason for op in e.operations if op.webhook_reason), None),
        "pagination": params["pagination"],
        "change_feed": params["change_feed"],
        "filters": params["filter"],
        "relevance": {"level": rel.level, "rule": rel.rule, "reason": rel.reason},
        "fields": [
            {
                "path": m.field.path,
                "catalog_field": m.catalog.name,
                "data_point": m.catalog.data_point.key,
                "sensitivity": m.catalog.sensitivity.value,
                "phi": m.is_phi,
                "matched_by": m.how,
                "evidence": m.field.evidence,
            }
            for m in data.matches
        ],
        "unmapped": [{"path": f.path, "evidence": f.evidence} for f in data.unmapped],
    }


def _findings(spec: Spec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = endpoint_findings(rows)
    for kind, pointers, what in (
        ("ref_cycle", spec.cycles, "$ref leads back into itself; walked once and stopped"),
        ("broken_ref", spec.broken_refs, "$ref points at nothing in the document"),
        ("depth_limit", spec.depth_limited, "schema nested deeper than the walk's limit"),
    ):
        for where in sorted(pointers):
            found.append({"kind": kind, "severity": "low", "message": what, "evidence": [where]})
    if spec.validation_skipped:
        found.append({
            "kind": "validation_skipped",
            "severity": "low",
            "message": f"shape validation skipped: {spec.validation_skipped}",
            "evidence": ["#"],
        })  # fmt: skip
    return found


def endpoint_findings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings about the endpoint rows alone (auth, webhooks, duplicates)."""
    found: list[dict[str, Any]] = []
    for row in rows:
        phi = [f for f in row["fields"] if f["phi"]]
        if row["kind"] == "path" and "none" in row["auth"] and phi:
            found.append({
                "kind": "unauthenticated_phi",
                "severity": "high",
                "message": f"{row['method']} {row['path']} accepts calls without auth and "
                f"carries {len(phi)} PHI field(s)",
                "evidence": [*row["evidence"], *row["auth_evidence"], *(f["evidence"] for f in phi)],
            })  # fmt: skip
        elif row["kind"] == "path" and row["webhook"] and "none" in row["auth"]:
            found.append({
                "kind": "unauthenticated_webhook_receiver",
                "severity": "medium",
                "message": f"{row['method']} {row['path']} receives webhooks with no declared "
                "auth; check that it verifies a signature",
                "evidence": [*row["evidence"], *row["auth_evidence"]],
            })  # fmt: skip
        if len(row["evidence"]) > 1:
            found.append({
                "kind": "duplicate_endpoint",
                "severity": "low",
                "message": f"{row['method']} {row['path']} is documented {len(row['evidence'])} "
                "times under different parameter names",
                "evidence": row["evidence"],
            })  # fmt: skip
        if "unknown" in row["auth"]:
            found.append({
                "kind": "unknown_security_scheme",
                "severity": "medium",
                "message": f"{row['method']} {row['path']} names a security scheme that is not defined",
                "evidence": row["auth_evidence"],
            })  # fmt: skip
    return found


def _title(spec: Spec) -> str:
    info = spec.document.get("info")
    return str(info.get("title", ""))[:200] if isinstance(info, dict) else ""


def analyze(spec: Spec) -> dict[str, Any]:
    """The whole readiness analysis of one document."""
    rows = [endpoint_row(n, e, endpoint_data(spec, e)) for n, e in enumerate(endpoints(spec), 1)]
    return {
        "format_version": FORMAT_VERSION,
        "source": spec.source,
        "dialect": spec.dialect,
        "version": spec.version,
        "title": _title(spec),
        "validation": "passed" if not spec.validation_skipped else spec.validation_skipped,
        **tally(rows, _findings(spec, rows)),
        "messages": None,  # templates and triggers: found in source trees only
    }


def tally(
    rows: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    messages: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summary, endpoints, data points, unmapped fields and findings of a report, from its rows."""
    by_point: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for f in row["fields"]:
            by_point.setdefault(f["data_point"], []).append({"endpoint": row["id"], **f})
    points = [
        {
            "key": dp.key,
            "title": dp.title,
            "category": dp.category.value,
            "sensitivity": dp.sensitivity.value,
            "phi": dp.sensitivity.value == "phi",
            "sync_policy": dp.policy.value,
            "catalog_fields": sorted({f["catalog_field"] for f in by_point.get(dp.key, [])}),
            "evidence": [f"{f['endpoint']} {f['evidence']}" for f in by_point.get(dp.key, [])],
        }
        for dp in DATA_POINTS
    ]
    unmapped = [{"endpoint": r["id"], **u} for r in rows for u in r["unmapped"]]
    summary = {
        "endpoints": len(rows),
        "operations": sum(len(r["evidence"]) for r in rows),
        "duplicates_merged": sum(len(r["evidence"]) - 1 for r in rows),
        "webhooks": sum(1 for r in rows if r["webhook"]),
        "with_change_feed": sum(1 for r in rows if r["change_feed"]),
        "by_auth": dict(Counter(a for r in rows for a in r["auth"]).most_common()),
        "by_relevance": {lv: sum(r["relevance"]["level"] == lv for r in rows) for lv in ("high", "medium", "low")},
        "data_points_found": sum(1 for p in points if p["catalog_fields"]),
        "data_points_total": len(DATA_POINTS),
        "catalog_fields_found": len({f["catalog_field"] for r in rows for f in r["fields"]}),
        "catalog_fields_total": len(FIELDS),
        "phi_fields": sum(1 for r in rows for f in r["fields"] if f["phi"]),
        "unmapped_fields": len(unmapped),
        "findings": len(findings),
    }  # fmt: skip
    report = {
        "summary": summary,
        "endpoints": rows,
        "data_points": points,
        "unmapped_fields": unmapped,
        "findings": findings,
    }
    # Lifecycle support, per-CRM plans, roadmap and business impact (reports/roadmap.py).
    return {**report, **plan_sections({**report, "messages": messages})}
