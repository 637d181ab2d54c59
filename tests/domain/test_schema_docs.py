"""The published event schemas in docs/events/: complete, current and true to the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telecrm.domain.events import DATA_MODELS, TRIGGERS, json_schemas
from telecrm.domain.schema_docs import (
    INDEX_NAME,
    render_event_schemas,
    schema_file_name,
    write_event_schemas,
)
from tests.domain.event_examples import MINIMAL_DATA, wire

DOCS_EVENTS = Path(__file__).resolve().parents[2] / "docs" / "events"
REGENERATE = (
    "run `.venv/bin/python -m telecrm.domain.schema_docs docs/events` and commit the result"
)
KINDS = sorted(DATA_MODELS)


def key_of(kind: tuple[str, int]) -> str:
    return f"{kind[0]}.v{kind[1]}"


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


def test_committed_docs_match_what_the_code_generates_now():
    expected = render_event_schemas()
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS_EVENTS.iterdir())}
    assert sorted(committed) == sorted(expected), REGENERATE
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert stale == [], f"{stale} differ from the code: {REGENERATE}"


def test_there_is_one_schema_file_per_event_type_and_version_plus_the_index():
    names = set(render_event_schemas())
    assert names == {schema_file_name(key_of(k)) for k in KINDS} | {INDEX_NAME}


def test_rendering_is_deterministic():
    assert render_event_schemas() == render_event_schemas()


def test_schema_files_are_sorted_two_space_json_with_a_trailing_newline():
    for name, text in render_event_schemas().items():
        if name == INDEX_NAME:
            continue
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_the_index_lists_every_schema_and_marks_the_8_triggers():
    index = render_event_schemas()[INDEX_NAME]
    rows = [line for line in index.splitlines() if line.startswith("| `")]
    assert len(rows) == len(KINDS)
    triggers = {row.split("`")[1] for row in rows if "| yes |" in row}
    assert triggers == set(TRIGGERS)
    for type_, version in KINDS:
        name = schema_file_name(key_of((type_, version)))
        assert f"| `{type_}` | {version} | " in index and f"[{name}]({name})" in index


def test_writing_puts_the_rendered_files_on_disk_and_drops_stale_schemas(tmp_path):
    (tmp_path / "order.shipped.v1.schema.json").write_text("{}\n")
    (tmp_path / "README.txt").write_text("not ours\n")
    written = write_event_schemas(tmp_path)
    rendered = render_event_schemas()
    assert [p.name for p in written] == list(rendered)
    assert {p.name: p.read_text(encoding="utf-8") for p in written} == rendered
    assert not (tmp_path / "order.shipped.v1.schema.json").exists()
    assert (tmp_path / "README.txt").exists()


@pytest.mark.parametrize("kind", KINDS, ids=key_of)
def test_each_schema_fixes_its_type_and_version_and_resolves_every_ref(kind):
    schema = json_schemas()[key_of(kind)]
    assert schema["properties"]["type"] == {"const": kind[0], "type": "string"}
    assert schema["properties"]["version"] == {"const": kind[1], "type": "integer"}
    for ref in refs_in(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"]


@pytest.mark.parametrize("kind", KINDS, ids=key_of)
def test_each_minimal_example_uses_only_declared_properties_and_all_required_ones(kind):
    # The structural half of schema validation, which needs no jsonschema package.
    schema, example = json_schemas()[key_of(kind)], wire(kind[0], version=kind[1])
    assert set(schema["required"]) <= set(example) <= set(schema["properties"])
    data_schema = schema["properties"]["data"]
    assert set(data_schema.get("required", [])) <= set(example["data"])
    assert set(example["data"]) <= set(data_schema["properties"])


def test_each_schema_validates_its_own_minimal_example():
    jsonschema = pytest.importorskip(
        "jsonschema",
        reason="jsonschema is not installed in the venv and the domain adds no dependency for it",
    )
    for kind in KINDS:
        schema = json_schemas()[key_of(kind)]
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(wire(kind[0], data=dict(MINIMAL_DATA[kind]), version=kind[1]))
