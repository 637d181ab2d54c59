"""The published event JSON Schemas (docs/events/): one file per event type and version, plus an index.

`render_event_schemas` is pure and deterministic, so a test can compare it with the committed
files; `write_event_schemas` puts them on disk. Regenerate with
`python -m telecrm.domain.schema_docs docs/events`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from telecrm.domain.events import TRIGGERS, json_schemas

INDEX_NAME = "index.md"
SCHEMA_SUFFIX = ".schema.json"


def schema_file_name(key: str) -> str:
    """`order.paid.v1` -> `order.paid.v1.schema.json`."""
    return f"{key}{SCHEMA_SUFFIX}"


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _index_text(schemas: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key, schema in schemas.items():
        type_ = schema["properties"]["type"]["const"]
        version = schema["properties"]["version"]["const"]
        trigger = "yes" if type_ in TRIGGERS else "no"
        name = schema_file_name(key)
        rows.append(f"| `{type_}` | {version} | {trigger} | [{name}]({name}) |")
    triggers = sum(s["properties"]["type"]["const"] in TRIGGERS for s in schemas.values())
    return "\n".join(
        [
            "# Platform event schemas",
            "",
            "Generated from `telecrm.domain.events` by",
            "`python -m telecrm.domain.schema_docs docs/events`; do not edit by hand.",
            "",
            "Each file is a JSON Schema (draft 2020-12) for one event type and version: the",
            "envelope `{id, type, version, occurred_at, patient, data}` with `data` typed for",
            "that event. *Trigger* marks the 8 automation triggers of DESIGN.md §4.3.",
            "The parser is the final word on what telecrm accepts: it also refuses an",
            "`occurred_at` without a UTC offset or more than 5 minutes ahead, a missing",
            "`patient.id` where the event needs a known patient, and invalid emails, phone",
            "numbers and names, which a schema cannot express.",
            "",
            f"{len(schemas)} schemas, {triggers} of them automation triggers.",
            "",
            "| type | version | trigger | schema |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def render_event_schemas() -> dict[str, str]:
    """File name -> file content, in a stable order: every schema, then the index."""
    schemas = dict(sorted(json_schemas().items()))
    files = {schema_file_name(key): _schema_text(schema) for key, schema in schemas.items()}
    files[INDEX_NAME] = _index_text(schemas)
    return files


def write_event_schemas(directory: Path) -> list[Path]:
    """Write the schemas and index into `directory`, removing schema files no event has now."""
    directory.mkdir(parents=True, exist_ok=True)
    files = render_event_schemas()
    for stale in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/events")
    for path in write_event_schemas(target):
        print(path)
