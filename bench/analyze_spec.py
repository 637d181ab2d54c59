"""Time `telecrm analyze` on a generated OpenAPI 3.1 document with 10,000 paths; prints JSON.

Each path has a GET (cursor paging, `updated_since`) returning a page of a shared `$ref` schema
and half have a POST with an inline body, so the walk does real work per operation.
Run: .venv/bin/python bench/analyze_spec.py [--paths N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from telecrm.reports.readiness import analyze
from telecrm.reports.readiness_markdown import render_markdown
from telecrm.reports.spec_loader import load_spec


def generated_spec(paths: int) -> dict[str, Any]:
    page = {"$ref": "#/components/schemas/Patient"}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"generated {paths}-path API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Patient": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "email": {"type": "string", "format": "email"},
                        "dob": {"type": "string", "format": "date"},
                        "conditions": {"type": "array", "items": {"type": "string"}},
                        "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
                    },
                }
            },
        },
    }
    for i in range(paths):
        item: dict[str, Any] = {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "parameters": [
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "updated_since", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "page",
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": page}}
                        },
                    }
                },
            },
        }
        if i % 2:
            item["post"] = {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"note": {"type": "string"}}}
                        }
                    }
                },
                "responses": {"201": {"description": "created"}},
            }
        doc["paths"][f"/resource{i}/{{id}}/items"] = item
    return doc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--paths", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        path.write_text(json.dumps(generated_spec(args.paths)))
        size = path.stat().st_size
        t0 = time.perf_counter()
        spec = load_spec(path, validate=False)
        t1 = time.perf_counter()
        load_spec(path)  # with openapi-spec-validator
        t2 = time.perf_counter()
        report = analyze(spec)
        t3 = time.perf_counter()
        render_markdown(report)
        t4 = time.perf_counter()
    print(
        json.dumps(
            {
                "paths": args.paths,
                "operations": report["summary"]["operations"],
                "bytes": size,
                "load_s": round(t1 - t0, 2),
                "load_and_validate_s": round(t2 - t1, 2),
                "analyze_s": round(t3 - t2, 2),
                "markdown_s": round(t4 - t3, 2),
                "total_with_validation_s": round((t2 - t1) + (t4 - t2), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
