"""Loading specs: dialects, shape errors named by JSON pointer, cycles, and nothing but SpecError."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.reports import spec_loader
from telecrm.reports.endpoints import endpoints
from telecrm.reports.readiness import analyze
from telecrm.reports.spec_loader import SpecError, load_spec, parse_text, spec_from_tree

FIXTURES = Path(__file__).parent / "fixtures"


def test_dialects_are_told_apart() -> None:
    assert load_spec(FIXTURES / "telehealth_openapi31.yaml").dialect == "openapi-3.1"
    assert load_spec(FIXTURES / "petclinic_swagger2.json").dialect == "swagger-2.0"


def test_a_shape_error_names_the_json_pointer(tmp_path: Path) -> None:
    bad = {"openapi": "3.0.3", "info": {"title": "x", "version": "1"}, "paths": {"/a": {"get": {}}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "bad.json")
    assert (
        str(caught.value)
        == "bad.json: invalid at #/paths/~1a/get: 'responses' is a required property"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe binary", "x.yaml: not UTF-8 text (byte 0)"),
        (
            b"a: [",
            "x.yaml: not valid YAML (line 1: expected the node content, but found '<stream end>')",
        ),
        (b'{"openapi": ', "x.yaml: not valid JSON (line 1: Expecting value)"),
        (b"- 1\n- 2\n", "x.yaml: not an OpenAPI document (the top level is not a mapping)"),
        (b"title: x\n", "x.yaml: not an OpenAPI document (no 'openapi' or 'swagger' field)"),
        (b"swagger: '1.2'\n", "x.yaml: #/swagger is '1.2'; only 2.0 is known"),
    ],
)
def test_bad_files_give_one_precise_message(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.yaml").write_bytes(content)
    with pytest.raises(SpecError, match="^" + re.escape(message) + "$"):
        load_spec(tmp_path / "x.yaml")


def test_a_spec_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spec_loader, "MAX_SPEC_BYTES", 100)
    (tmp_path / "big.json").write_text(json.dumps({"openapi": "3.1.0", "pad": "x" * 200}))
    with pytest.raises(SpecError, match="over the 100-byte limit"):
        load_spec(tmp_path / "big.json")


def test_a_ref_that_points_at_itself_is_a_finding_not_a_recursion_error() -> None:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "loop", "version": "1"},
        "paths": {
            "/a": {"$ref": "#/paths/~1b"},
            "/b": {"$ref": "#/paths/~1a"},
            "/c": {"get": {"responses": {"200": {"$ref": "#/components/responses/R"}}}},
        },
        "components": {
            "responses": {"R": {"$ref": "#/components/responses/R"}},
            "schemas": {"S": {"$ref": "#/components/schemas/S"}},
        },
    }
    spec = spec_from_tree(doc, validate=False)
    report = analyze(spec)
    assert [e["path"] for e in report["endpoints"]] == ["/c"]
    cycles = [f["evidence"][0] for f in report["findings"] if f["kind"] == "ref_cycle"]
    assert cycles == ["#/paths/~1a", "#/paths/~1b", "#/paths/~1c/get/responses/200"]


json_ish: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["3.1.0", "3.0.3", "2.0", "#/paths", "#/components/schemas/A", "#"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["openapi", "swagger", "paths", "/p/{id}", "get", "post", "$ref", "security",
             "components", "schemas", "A", "properties", "items", "allOf", "responses", "200",
             "content", "application/json", "schema", "parameters", "name", "in", "webhooks"]
        ) | st.text(max_size=5),
        inner,
        max_size=5,
    ),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    tree=json_ish,
    version=st.sampled_from(["3.1.0", "3.0.3", "2.0", None]),
    validate=st.booleans(),
)
def test_the_loader_and_analyzer_raise_nothing_but_spec_error(
    tree: Any, version: str | None, validate: bool
) -> None:
    if version is not None and isinstance(tree, dict):
        tree = {**tree, ("swagger" if version == "2.0" else "openapi"): version}
    try:
        spec = spec_from_tree(tree, validate=validate)
    except SpecError:
        return
    analyze(spec)
    endpoints(spec)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_parsing_any_text_raises_nothing_but_spec_error(text: str) -> None:
    with contextlib.suppress(SpecError):
        parse_text(text)


def test_a_shape_error_never_quotes_the_documents_values(tmp_path: Path) -> None:
    canary = "CANARY-DOB-1961-02-03"
    doc = {"openapi": "3.1.0", "info": {"title": "x", "version": "1"}, "paths": {canary: {}}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    doc["paths"] = {"/a": {"get": {"responses": {"200": {"description": 7, "x": canary}}}}}
    (tmp_path / "d.json").write_text(json.dumps(doc))
    for name in ("c.json", "d.json"):
        with pytest.raises(SpecError) as caught:
            load_spec(tmp_path / name)
        assert canary not in str(caught.value)
