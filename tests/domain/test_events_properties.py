"""Properties of the event parser: whatever arrives, it returns a valid Event or EventRejected."""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telecrm.domain.events import (
    DATA_MODELS,
    ID_PATTERN,
    MAX_FUTURE_SKEW,
    NEEDS_KNOWN_PATIENT,
    Event,
    EventRejected,
    parse_event,
)
from tests.domain.event_examples import MINIMAL_DATA, NOW, wire

REASONS = {
    "malformed",
    "invalid_envelope",
    "unknown_type",
    "unknown_version",
    "future_timestamp",
    "missing_patient",
    "invalid_data",
}

# Fuller examples, so mutations reach nested models as well as the top level.
RICH_DATA: dict[tuple[str, int], dict[str, Any]] = {
    **MINIMAL_DATA,
    ("patient.registered", 1): {
        **MINIMAL_DATA[("patient.registered", 1)],
        "phone": "(415) 555-2671",
        "date_of_birth": "1990-02-03",
        "address": {"line1": "1 Market St", "city": "San Francisco", "state": "CA"},
        "emergency_contact": {"name": "Ana", "phone": "415.555.2672", "relation": "sister"},
        "communication_preferences": {"sms_consent": True, "quiet_hours_start": "21:00"},
        "insurance": {"provider": "Acme Health", "member_id": "AH-123"},
        "conditions": ["asthma"],
    },
    ("consultation.submitted", 1): {
        "consultation_id": "c_1",
        "symptoms": [{"name": "cough", "severity": 4}],
        "medications": ["salbutamol"],
    },
    ("order.paid", 1): {
        "order_id": "ord_1",
        "amount": 49.0,
        "recurring": True,
        "payment_method": {"brand": "visa", "last4": "4242"},
    },
}

EDGE_VALUES = st.sampled_from(
    [
        "",
        " ",
        "x" * 2000,
        "\x00",
        "Zoë\u2028",
        "\u202eevil",
        "2026-03-02T09:00:00",
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:06:00+00:00",
        "9999-12-31T23:59:59+14:00",
        "0001-01-01T00:00:00+14:00",
        "+14155552671",
        "a@b.co",
        "order.paid",
        "session.tracked",
        10**20,
        10**4000,  # (10**5000 is covered by a unit test; hypothesis cannot print it)
        -1,
        0,
        1e308,
        float("nan"),
        float("inf"),
        True,
        None,
        [],
        {},
        {"id": "pat_1"},
        {"anonymous_id": "anon_1"},
    ]
)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | EDGE_VALUES
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE_KEYS = st.sampled_from(["id", "type", "version", "occurred_at", "patient", "data"])


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid wire event with one to three of its keys replaced, deleted or added."""
    kind = draw(st.sampled_from(sorted(RICH_DATA)))
    raw = wire(kind[0], data=copy.deepcopy(RICH_DATA[kind]), version=kind[1])
    for _ in range(draw(st.integers(1, 3))):
        data = raw.get("data")
        nested = list(data.values()) if isinstance(data, dict) else []
        containers = [c for c in (raw, raw.get("patient"), data, *nested) if isinstance(c, dict)]
        target = draw(st.sampled_from(containers))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "add" or not target:
            target[draw(st.text(max_size=12) | ENVELOPE_KEYS)] = draw(JSON_LIKE)
        elif op == "delete":
            del target[draw(st.sampled_from(sorted(target)))]
        else:
            target[draw(st.sampled_from(sorted(target)))] = draw(JSON_LIKE)
    return raw


def check_parse(raw: Any) -> None:
    try:
        e = parse_event(raw, now=NOW)
    except EventRejected as exc:
        assert exc.reason in REASONS
        assert exc.detail and len(str(exc)) < 1000
        assert exc.event_id is None or re.fullmatch(ID_PATTERN, exc.event_id)
        return
    assert isinstance(e, Event)
    assert isinstance(e.data, DATA_MODELS[(e.type, e.version)])
    assert e.occurred_at.tzinfo is not None
    assert e.occurred_at <= NOW + MAX_FUTURE_SKEW
    assert e.patient_id is not None or e.anonymous_id is not None
    assert e.type not in NEEDS_KNOWN_PATIENT or e.patient_id is not None
    assert parse_event(e.to_wire(), now=NOW) == e  # what we accept, we accept again unchanged


@settings(max_examples=300, deadline=None)
@given(JSON_LIKE)
def test_any_json_value_parses_or_is_rejected_with_event_rejected(raw):
    check_parse(raw)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(ENVELOPE_KEYS | st.text(max_size=12), JSON_LIKE, max_size=7))
def test_any_envelope_shaped_dict_parses_or_is_rejected_with_event_rejected(raw):
    check_parse(raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_mutated_valid_events_parse_or_are_rejected_with_event_rejected(raw):
    check_parse(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(RICH_DATA)))
def test_rich_examples_are_valid_and_survive_the_wire(kind):
    e = parse_event(wire(kind[0], data=copy.deepcopy(RICH_DATA[kind]), version=kind[1]), now=NOW)
    assert parse_event(e.to_wire(), now=NOW) == e


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_names_of_any_text_are_accepted_normalised_or_refused_without_repeating_them(name):
    raw = wire("patient.updated", data={"first_name": name})
    try:
        e = parse_event(raw, now=NOW)
    except EventRejected as exc:
        assert exc.reason == "invalid_data"
        assert str(exc).startswith("data.first_name: ")
        if len(name.strip()) >= 4:
            assert name.strip() not in str(exc)
        return
    cleaned = e.data.first_name
    assert cleaned and len(cleaned) <= 100
    assert parse_event(e.to_wire(), now=NOW).data.first_name == cleaned
