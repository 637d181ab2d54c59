"""The readiness report of a source tree: the same dict as `readiness.analyze(spec)`.

Evidence is `relative/file.py:LINE` instead of a JSON pointer; the report adds `messages`
(templates and triggers by channel) and `skipped` (files not read, with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telecrm.reports.data_points import match_fields
from telecrm.reports.endpoints import Endpoint, Operation, normalise_path
from telecrm.reports.readiness import FORMAT_VERSION, endpoint_findings, endpoint_row, tally
from telecrm.reports.source_django import DjangoRoutes
from telecrm.reports.source_express import ExpressRoutes
from telecrm.reports.source_js import JsTree
from telecrm.reports.source_messages import messages_in
from telecrm.reports.source_nest import NestRoutes
from telecrm.reports.source_python import PythonRoutes
from telecrm.reports.source_pytree import PythonTree
from telecrm.reports.source_tree import MAX_FILES, Route, SourceError, TreeWalk, walk_tree

FRAMEWORK_NAMES = "FastAPI, Flask, Django, Express or NestJS"


def routes_of(walk: TreeWalk) -> tuple[list[Route], set[str], list[str]]:
    """Every route the framework readers find, the frameworks seen, and files that did not parse."""
    code = [f for f in walk.files if f.language != "template"]
    python = PythonTree([f for f in code if f.language == "python"])
    js = JsTree([f for f in code if f.language != "python"])
    routes = [
        *PythonRoutes(python).routes(),
        *DjangoRoutes(python).routes(),
        *ExpressRoutes(js).routes(),
        *NestRoutes(js).routes(),
    ]
    frameworks = python.frameworks | js.frameworks | {r.framework for r in routes}
    return routes, frameworks, python.syntax_errors


def endpoints_of(routes: list[Route]) -> list[tuple[Endpoint, list[Route]]]:
    """Routes that are one endpoint (same method, same path up to parameter names), in tree order."""
    by_key: dict[tuple[str, str], tuple[Endpoint, list[Route]]] = {}
    for r in routes:
        key = (r.method, normalise_path(r.path))
        if key not in by_key:
            by_key[key] = (Endpoint(r.method, r.path), [])
        endpoint, members = by_key[key]
        if any(m.evidence == r.evidence for m in members):
            continue  # one handler reached twice through the same mount
        members.append(r)
        endpoint.operations.append(
            Operation(
                method=r.method,
                path=r.path,
                kind="path",
                evidence=r.evidence,
                node={},
                operation_id=r.handler or None,
                tags=(),
                auth=r.auth,
                auth_evidence=r.auth_evidence,
                parameters=tuple(r.parameters),
                webhook_reason=r.webhook_reason,
            )
        )
    return list(by_key.values())


def _rows(routes: list[Route]) -> list[dict[str, Any]]:
    rows = []
    for n, (endpoint, members) in enumerate(endpoints_of(routes), 1):
        row = endpoint_row(n, endpoint, match_fields(f for r in members for f in r.fields))
        row["framework"] = members[0].framework
        signed = [r.signature_verified for r in members if r.signature_verified is not None]
        row["signature_verified"] = all(signed) if signed else None
        rows.append(row)
    return rows


def _findings(
    rows: list[dict[str, Any]], walk: TreeWalk, broken: list[str]
) -> list[dict[str, Any]]:
    found = endpoint_findings(rows)
    flagged = set()
    for f in found:
        if f["kind"] == "duplicate_endpoint":
            f["message"] = f["message"].replace("is documented", "is registered")
        if f["kind"] == "unauthenticated_webhook_receiver":
            f["message"] = f["message"].split(" receives ")[0] + (
                " receives webhooks with no auth and verifies no signature"
            )
            flagged.add(f["evidence"][0])
    for row in rows:
        if (
            row["webhook"]
            and row["signature_verified"] is False
            and row["evidence"][0] not in flagged
        ):
            found.append({
                "kind": "unverified_webhook_receiver",
                "severity": "medium",
                "message": f"{row['method']} {row['path']} receives webhooks and verifies no signature",
                "evidence": row["evidence"],
            })  # fmt: skip
    for s in walk.skipped:
        found.append(
            {
                "kind": "skipped_file",
                "severity": "low",
                "message": f"not read: {s.reason}",
                "evidence": [s.rel],
            }
        )
    for rel in broken:
        found.append(
            {
                "kind": "parse_error",
                "severity": "low",
                "message": "not valid Python; no routes read from it",
                "evidence": [rel],
            }
        )
    if walk.truncated:
        found.append({
            "kind": "file_limit",
            "severity": "medium",
            "message": f"stopped after {len(walk.files)} source files; the report is partial "
            "(analyze the tree's parts one by one)",
            "evidence": ["."],
        })  # fmt: skip
    return found


def analyze_tree(root: Path, *, max_files: int = MAX_FILES) -> dict[str, Any]:
    """The whole readiness analysis of a web application's source tree."""
    walk = walk_tree(root, max_files=max_files)
    name = root.resolve().name or str(root)
    if not walk.files and not walk.skipped:
        raise SourceError(f"{name}: no Python, JavaScript or TypeScript files in this directory")
    routes, frameworks, broken = routes_of(walk)
    if not routes and not frameworks:
        raise SourceError(f"{name}: no {FRAMEWORK_NAMES} code found in {len(walk.files)} files")
    rows = _rows(routes)
    findings = _findings(rows, walk, broken)
    messages = messages_in(walk.files)
    body = tally(rows, findings, messages=messages)  # triggers feed the lifecycle section
    body["summary"].update(
        templates=len(messages["templates"]),
        triggers=len(messages["triggers"]),
        skipped_files=len(walk.skipped),
        files_read=len(walk.files),
    )
    return {
        "format_version": FORMAT_VERSION,
        "source": name,
        "dialect": "source-tree",
        "version": ", ".join(sorted(frameworks)),
        "title": f"{name} (source tree: {', '.join(sorted(frameworks)) or 'no framework'})",
        "validation": "not applicable (source tree)",
        **body,
        "messages": messages,
        "skipped": [{"path": s.rel, "reason": s.reason} for s in walk.skipped],
        "truncated": walk.truncated,
    }
