"""The sources file: validated once, errors naming file, line and field; never a URL in it."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telecrm.sources.config import load_sources
from telecrm.sources.errors import SourceConfigError
from tests.sources.conftest import EXAMPLE

GOOD = """\
version: 1
sources:
  - name: platform
    url_env: PLATFORM_DB_URL
    models:
      - name: orders
        table: orders
        primary_key: id
        cursor: updated_at
        patient_id: patient_id
        on_change:
          - name: paid
            column: paid_at
            not_null: true
            type: order.paid
            data: {order_id: id, amount: total}
"""


def error_of(text: str) -> SourceConfigError:
    with pytest.raises(SourceConfigError) as info:
        load_sources("sources.yaml", text=text)
    return info.value


def test_the_shipped_example_loads() -> None:
    source = load_sources(EXAMPLE).source("platform")
    assert source.models[0].name == "patients"
    assert source.model("orders").on_change[0].type == "order.paid"


def test_a_minimal_file_loads() -> None:
    assert (
        load_sources("s.yaml", text=GOOD).source("platform").model("orders").cursor == "updated_at"
    )


def test_a_url_in_the_file_is_refused_with_where_to_put_it() -> None:
    exc = error_of(
        GOOD.replace("    url_env: PLATFORM_DB_URL\n", "    url: postgresql://u:pw@h/db\n")
    )
    assert exc.line == 3 and "never goes in the sources file" in str(exc)
    assert "pw@h" not in str(exc)


def test_an_unknown_event_type_names_file_line_and_field() -> None:
    exc = error_of(GOOD.replace("type: order.paid", "type: order.payed"))
    assert str(exc).startswith("sources.yaml:15: sources[0].models[0].on_change[0].type: ")


def test_a_missing_required_event_field_is_named() -> None:
    exc = error_of(GOOD.replace("data: {order_id: id, amount: total}", "data: {order_id: id}"))
    assert exc.line == 16 and "order.paid needs data field(s) amount" in str(exc)


def test_a_field_outside_the_catalog_is_refused() -> None:
    text = GOOD.replace(
        "        patient_id: patient_id\n",
        "        patient_id: patient_id\n        fields: {ssn: social_security}\n",
    )
    exc = error_of(text)
    assert exc.line == 11 and "'social_security' is not in the field catalog" in str(exc)


def test_an_identifying_primary_key_is_refused() -> None:
    text = GOOD.replace("primary_key: id", "primary_key: email").replace(
        "        patient_id: patient_id\n",
        "        patient_id: patient_id\n        fields: {email: email}\n",
    )
    exc = error_of(text)
    assert exc.where.endswith("primary_key") and "identifying value" in str(exc)


def test_a_rule_needs_exactly_one_condition() -> None:
    exc = error_of(GOOD.replace("            not_null: true\n", ""))
    assert "exactly one of `to: VALUE` and `not_null: true`" in str(exc) and exc.line == 12


def test_a_query_must_be_one_select() -> None:
    exc = error_of(GOOD.replace("table: orders", "query: 'SELECT 1; DROP TABLE orders'"))
    assert exc.where.endswith("query") and "one SELECT" in str(exc)


def test_yaml_syntax_errors_name_the_line() -> None:
    exc = error_of(GOOD.replace("primary_key: id", "primary_key: [id"))
    assert exc.line is not None and "not valid YAML" in str(exc)


# Malformed files: every mutation of a good file either loads or fails with one SourceConfigError
# naming the file; never another exception, never a traceback.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(max_size=12),
    st.sampled_from(["order.paid", "updated_at", "id", "patient.registered", "x" * 70, "a.b.c"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_malformed_file_fails_with_file_line_and_field(data: st.DataObject) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete"]))
    node = doc
    for part in path[:-1]:
        node = node[part]
    if action == "delete" and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(_values)
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        load_sources("mutated.yaml", text=text)
    except SourceConfigError as exc:
        assert str(exc).startswith("mutated.yaml")
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    try:
        load_sources("junk.yaml", text=text)
    except SourceConfigError as exc:
        assert str(exc).startswith("junk.yaml")
