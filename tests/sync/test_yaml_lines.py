"""Where a configuration error is: one line naming the path, whatever the YAML keys hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telecrm.sync.yaml_lines import dotted


def test_plain_keys_read_as_a_path_and_odd_keys_are_quoted() -> None:
    assert dotted(("sources", 0, "models", 2, "on_update")) == "sources[0].models[2].on_update"
    assert dotted(("triggers", "order.paid", 0, "template")) == "triggers.order.paid[0].template"
    assert dotted(("data", "a key")) == "data['a key']"
    assert dotted(("models", 0, "\n")) == "models[0]['\\n']"


@given(st.lists(st.one_of(st.integers(0, 99), st.text(max_size=8)), max_size=6))
def test_a_location_is_always_one_line(loc: list[int | str]) -> None:
    assert "\n" not in dotted(tuple(loc)) and "\r" not in dotted(tuple(loc))
