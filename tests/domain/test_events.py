"""The one door for platform events: what `parse_event` accepts, and how it refuses the rest."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta

import pytest

from telecrm.domain.events import (
    DATA_MODELS,
    EVENT_TYPES,
    MAX_FUTURE_SKEW,
    NEEDS_KNOWN_PATIENT,
    TRIGGERS,
    EventRejected,
    event_from_stored,
    parse_event,
)
from tests.domain.event_examples import MINIMAL_DATA, NOW, PATIENT_ID, wire

ALL_KINDS = sorted(DATA_MODELS)

# DESIGN.md §4.3, copied from the doc.
DESIGN_TRIGGERS = {
    "patient.registered",
    "consultation.submitted",
    "order.paid",
    "prescription.approved",
    "refill.due",
    "subscription.renewal_approaching",
    "support_ticket.created",
    "treatment_plan.updated",
}
DESIGN_LIFECYCLE_EVENTS = {
    "session.tracked",
    "questionnaire.started",
    "consultation.assigned",
    "consultation.accepted",
    "subscription.started",
    "subscription.renewed",
    "subscription.cancelled",
    "payment.failed",
    "referral.made",
    "review.posted",
    "patient.updated",
    "patient.deleted",
}
DESIGN_ENGAGEMENT_EVENTS = {
    *(f"email.{k}" for k in ("delivered", "opened", "clicked", "bounced", "unsubscribed")),
    *(f"sms.{k}" for k in ("delivered", "failed", "replied", "opted_out")),
    "sms.opted_in",  # START after STOP (issue 5): the number takes texts again
}


def rejected(raw: object, now: datetime = NOW) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        parse_event(raw, now=now)
    return info.value


def registration(**data: object) -> dict:
    return wire("patient.registered", data={**MINIMAL_DATA[("patient.registered", 1)], **data})


# -- the catalog of event types ---------------------------------------------------------------


# telecrm's own: what journey steps (issue 6) and analytics runs (issue 7) write; the intake
# refuses them from outside.
JOURNEY_EVENTS = {"journey.milestone", "journey.case_opened", "journey.fields_set"}
ANALYTICS_EVENTS = {"analytics.scored"}


def test_event_types_are_exactly_the_design_catalog():
    assert EVENT_TYPES == (
        DESIGN_TRIGGERS
        | DESIGN_LIFECYCLE_EVENTS
        | DESIGN_ENGAGEMENT_EVENTS
        | JOURNEY_EVENTS
        | ANALYTICS_EVENTS
    )


def test_the_8_automation_triggers_match_the_design():
    assert len(TRIGGERS) == 8
    assert set(TRIGGERS) == DESIGN_TRIGGERS


def test_only_an_anonymous_session_may_come_without_a_patient_id():
    assert {"session.tracked", "patient.registered"} == EVENT_TYPES - NEEDS_KNOWN_PATIENT
    anonymous = {"anonymous_id": "anon_1"}
    assert parse_event(wire("session.tracked", patient=anonymous), now=NOW).patient_id is None
    assert rejected(wire("patient.registered", patient=anonymous)).reason == "missing_patient"


def test_the_examples_cover_every_type_and_version():
    assert set(MINIMAL_DATA) == set(DATA_MODELS)


# -- what parses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "version"), ALL_KINDS, ids=[t for t, _ in ALL_KINDS])
def test_a_minimal_valid_event_of_every_type_parses(type_, version):
    e = parse_event(wire(type_, version=version), now=NOW)
    assert (e.type, e.version, e.patient_id) == (type_, version, PATIENT_ID)
    assert isinstance(e.data, DATA_MODELS[(type_, version)])
    assert e.occurred_at == NOW


@pytest.mark.parametrize(("type_", "version"), ALL_KINDS, ids=[t for t, _ in ALL_KINDS])
def test_every_event_survives_the_wire_and_the_log_unchanged(type_, version):
    e = parse_event(wire(type_, version=version), now=NOW)
    assert parse_event(e.to_wire(), now=NOW) == e
    stored = event_from_stored(
        event_id=e.id,
        type_=e.type,
        version=e.version,
        occurred_at=e.occurred_at,
        patient_id=e.patient_id,
        anonymous_id=e.anonymous_id,
        data=e.data_dict(),
    )
    assert stored == e


def test_version_defaults_to_1():
    raw = wire("order.paid")
    del raw["version"]
    assert parse_event(raw, now=NOW).version == 1


def test_a_registration_with_every_detail_normalises_identity_fields():
    e = parse_event(
        registration(
            first_name=unicodedata.normalize("NFD", "Zoë"),
            last_name="Ñúñez-O'Brien",
            email="  Zoe.Nunez@Example.COM",
            phone="(415) 555-2671",
            date_of_birth="1990-02-03",
            address={"line1": "1 Market St", "city": "San Francisco", "state": "CA"},
            emergency_contact={"name": "Ana", "phone": "415.555.2672", "relation": "sister"},
            communication_preferences={"sms_consent": True, "quiet_hours_start": "21:00"},
            insurance={"provider": "Acme Health", "member_id": "AH-123"},
        ),
        now=NOW,
    )
    d = e.data
    assert (d.first_name, d.last_name) == ("Zoë", "Ñúñez-O'Brien")
    assert unicodedata.is_normalized("NFC", d.first_name)
    assert d.email == "zoe.nunez@example.com"
    assert d.phone == "+14155552671"
    assert d.emergency_contact.phone == "+14155552672"


def test_cjk_names_are_accepted():
    e = parse_event(registration(first_name="太郎", last_name="山田"), now=NOW)
    assert (e.data.first_name, e.data.last_name) == ("太郎", "山田")


def test_a_timestamp_exactly_5_minutes_ahead_is_accepted():
    e = parse_event(wire("order.paid", at=NOW + MAX_FUTURE_SKEW), now=NOW)
    assert e.occurred_at == NOW + MAX_FUTURE_SKEW


def test_timestamps_with_any_offset_are_accepted_as_the_same_instant():
    raw = wire("order.paid")
    raw["occurred_at"] = "2026-03-02T04:00:00-05:00"
    assert parse_event(raw, now=NOW).occurred_at == NOW


def test_an_event_may_carry_both_patient_id_and_the_visitor_id_it_replaces():
    e = parse_event(
        wire("patient.registered", patient={"id": "pat_9", "anonymous_id": "anon_9"}), now=NOW
    )
    assert (e.patient_id, e.anonymous_id, e.patient_key) == ("pat_9", "anon_9", "pat_9")
    visitor = parse_event(wire("session.tracked", patient={"anonymous_id": "anon_9"}), now=NOW)
    assert visitor.patient_key == "anon:anon_9"


# -- how bad input is refused --------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], ["order.paid"], "order.paid", 42, 1.5, b"{}"])
def test_anything_but_a_json_object_is_malformed(raw):
    exc = rejected(raw)
    assert exc.reason == "malformed"
    assert exc.event_id is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 42),
        ("id", ""),
        ("id", "has spaces"),
        ("id", "x" * 129),
        ("type", ["order.paid"]),
        ("version", "one"),
        ("version", 0),
        ("occurred_at", "yesterday"),
        ("patient", "pat_1"),
        ("data", ["order_id"]),
    ],
)
def test_wrong_envelope_types_are_refused_naming_the_field(field, value):
    raw = wire("order.paid")
    raw[field] = value
    exc = rejected(raw)
    assert exc.reason == "invalid_envelope"
    assert str(exc).startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["id", "type", "occurred_at", "patient"])
def test_missing_envelope_fields_are_refused_naming_the_field(field):
    raw = wire("order.paid")
    del raw[field]
    exc = rejected(raw)
    assert exc.reason == "invalid_envelope"
    assert f"{field}: Field required" in str(exc)


def test_an_unknown_envelope_field_is_refused():
    exc = rejected({**wire("order.paid"), "tenant": "acme"})
    assert (exc.reason, str(exc)) == ("invalid_envelope", "tenant: Extra inputs are not permitted")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"order_id": "ord_1", "amount": "lots"}, "data.amount"),
        ({"order_id": "ord_1", "amount": -1}, "data.amount"),
        ({"order_id": 7, "amount": 1}, "data.order_id"),
        ({"order_id": "ord_1", "amount": 1, "recurring": {"yes": 1}}, "data.recurring"),
        ({"order_id": "ord_1", "amount": 1, "currency": "EUR"}, "data.currency"),
        ({"order_id": "ord_1"}, "data.amount"),
        (
            {
                "order_id": "o",
                "amount": 1,
                "payment_method": {"brand": "visa", "last4": "4242424242424242"},
            },
            "data.payment_method.last4",
        ),
    ],
)
def test_wrong_data_types_are_refused_naming_the_field(data, field):
    exc = rejected(wire("order.paid", data=data))
    assert exc.reason == "invalid_data"
    assert str(exc).startswith(f"{field}: ")


def test_an_unknown_type_is_refused():
    exc = rejected(wire("order.paid") | {"type": "order.shipped"})
    assert exc.reason == "unknown_type"
    assert exc.event_id == "order.paid:20260302T090000.000000"


def test_a_near_miss_type_is_refused_with_the_known_type_it_resembles():
    exc = rejected(wire("order.paid") | {"type": "order.payed"})
    assert exc.reason == "unknown_type"
    assert "order.paid" in str(exc)


def test_an_unknown_version_is_refused_naming_the_known_ones():
    exc = rejected(wire("order.paid", version=1) | {"version": 2})
    assert exc.reason == "unknown_version"
    assert "order.paid" in str(exc) and "known: 1" in str(exc)


def test_an_absurdly_large_version_is_refused_not_crashed_on():
    exc = rejected(wire("order.paid") | {"version": 10**5000})
    assert exc.reason == "unknown_version"
    assert len(str(exc)) < 200


def test_a_timestamp_more_than_5_minutes_in_the_future_is_refused():
    exc = rejected(wire("order.paid", at=NOW + MAX_FUTURE_SKEW + timedelta(microseconds=1)))
    assert exc.reason == "future_timestamp"
    assert "occurred_at" in str(exc)


def test_a_naive_timestamp_is_refused():
    raw = wire("order.paid")
    raw["occurred_at"] = "2026-03-02T09:00:00"
    exc = rejected(raw)
    assert exc.reason == "invalid_envelope"
    assert str(exc) == "occurred_at: Input should have timezone info"


@pytest.mark.parametrize("type_", sorted(NEEDS_KNOWN_PATIENT))
def test_events_about_a_known_patient_need_the_patient_id(type_):
    exc = rejected(wire(type_, patient={"anonymous_id": "anon_1"}))
    assert exc.reason == "missing_patient"
    assert "patient.id" in str(exc)


def test_an_event_about_nobody_is_refused():
    exc = rejected(wire("session.tracked", patient={}))
    assert exc.reason == "invalid_envelope"
    assert str(exc).startswith("patient: ")


def test_an_invalid_email_is_refused_naming_the_field():
    exc = rejected(registration(email="not-an-email"))
    assert (exc.reason, str(exc)) == (
        "invalid_data",
        "data.email: Value error, not a valid email address",
    )


@pytest.mark.parametrize("phone", ["555-555-5555", "call me", "12345"])
def test_an_invalid_phone_is_refused_naming_the_field(phone):
    exc = rejected(registration(phone=phone))
    assert exc.reason == "invalid_data"
    assert str(exc).startswith("data.phone: ")


def test_an_invalid_emergency_contact_phone_is_refused_naming_the_nested_field():
    exc = rejected(registration(emergency_contact={"name": "Ana", "phone": "555-555-5555"}))
    assert str(exc).startswith("data.emergency_contact.phone: ")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n", "\u202e", "\u2028"])
def test_a_name_with_a_control_character_is_refused(char):
    exc = rejected(registration(first_name=f"Ada{char}Byron"))
    assert exc.reason == "invalid_data"
    assert str(exc).startswith("data.first_name: ")


def test_an_unknown_field_in_data_is_refused_naming_it():
    exc = rejected(registration(favourite_colour="teal"))
    assert (exc.reason, str(exc)) == (
        "invalid_data",
        "data.favourite_colour: Extra inputs are not permitted",
    )


def test_an_empty_patient_update_is_refused():
    exc = rejected(wire("patient.updated", data={}))
    assert exc.reason == "invalid_data"


def test_a_patient_update_of_only_nulls_is_refused_as_empty():
    # Bug found by hypothesis: it was accepted, stored as `{}` (nulls are not stored) and then
    # crashed `event_from_stored` on every rebuild of that patient.
    exc = rejected(wire("patient.updated", data={"first_name": None, "phone": None}))
    assert (exc.reason, str(exc)) == (
        "invalid_data",
        "data: Value error, an update must change at least one field",
    )


def test_an_implausible_birth_date_is_refused():
    exc = rejected(registration(date_of_birth="1850-01-01"))
    assert exc.reason == "invalid_data"
    assert "date_of_birth" in str(exc)


@pytest.mark.parametrize(
    ("type_", "data", "field"),
    [
        ("patient.registered", {"first_name": "x" * 101}, "data.first_name"),
        ("patient.registered", {"first_name": "x" * 5000}, "data.first_name"),
        ("patient.registered", {"email": "a" * 400 + "@example.com"}, "data.email"),
        ("patient.registered", {"phone": "4" * 41}, "data.phone"),
        ("patient.registered", {"conditions": ["x" * 1001]}, "data.conditions.0"),
        ("session.tracked", {"page": "/" * 201}, "data.page"),
        ("support_ticket.created", {"category": "c" * 65}, "data.category"),
    ],
)
def test_oversize_strings_are_refused_naming_the_field(type_, data, field):
    merged = {**MINIMAL_DATA[(type_, 1)], **data}
    exc = rejected(wire(type_, data=merged))
    assert exc.reason == "invalid_data"
    assert str(exc).startswith(f"{field}: ")


def test_many_errors_are_summarised_after_the_first_five():
    data = {f"extra_{i}": i for i in range(8)}
    exc = rejected(wire("referral.made", data=data))
    assert str(exc).endswith("(+4 more)")  # referral_id missing + 8 extras = 9 errors


def test_the_event_id_is_kept_on_rejection_when_it_is_a_valid_id():
    exc = rejected(registration(email="nope"))
    assert exc.event_id == "patient.registered:20260302T090000.000000"


def test_an_invalid_event_id_is_not_carried_on_the_rejection():
    raw = wire("order.paid") | {"id": "x" * 10_000}
    assert rejected(raw).event_id is None


# -- PHI never leaks into an error ---------------------------------------------------------------

MARKER = "7f3a"


def _canary_inputs() -> list[dict]:
    return [
        registration(email=f"canary.{MARKER}@@example.com"),
        registration(email=f"canary.{MARKER}@example.com", phone=f"555-{MARKER}"),
        registration(first_name=f"Canary\x07{MARKER}"),
        registration(last_name=f"Canary\u2028{MARKER}"),
        registration(last_name=f"Canary{MARKER}" * 40),
        registration(date_of_birth=f"19{MARKER}-01-01"),
        registration(sex=f"canary{MARKER}"),
        registration(insurance={"provider": "Acme", "member_id": f"{MARKER} with spaces"}),
        registration(conditions=[f"diabetes\x00{MARKER}"]),
        registration(emergency_contact={"name": f"N\x1b{MARKER}", "phone": f"+1{MARKER}"}),
        registration(address={"postal_code": f"{MARKER}x"}),
        wire("order.paid") | {"type": f"canary.{MARKER}@example.com"},
        wire("order.paid") | {"id": f"canary {MARKER}@example.com"},
        wire("order.paid") | {"occurred_at": f"canary-{MARKER}"},
        wire("order.paid") | {"patient": {"id": f"canary {MARKER}"}},
        wire("order.paid", data={"order_id": "o", "amount": 1, f"canary\n{MARKER}": 1}),
        wire("order.paid") | {f"canary.{MARKER}@example.com": 1},
        wire(
            "consultation.submitted",
            data={"consultation_id": "c", "symptoms": [{"name": f"pain{MARKER}", "severity": 11}]},
        ),
    ]


@pytest.mark.parametrize("raw", _canary_inputs())
def test_a_rejection_never_repeats_a_value_from_the_input(raw):
    exc = rejected(raw)
    for text in (str(exc), exc.detail, repr(exc), exc.event_id or ""):
        assert MARKER not in text


def test_rejections_stay_short_whatever_the_input():
    raw = wire("order.paid", data={"order_id": "o", "amount": 1, "k" * 100_000: 1})
    raw["type"] = "t" * 100_000
    assert len(str(rejected(raw))) < 300
    raw = wire("order.paid", data={"order_id": "o", "amount": 1, "k" * 100_000: 1})
    assert len(str(rejected(raw))) < 300


def test_a_plan_created_or_completed_is_one_fact_but_its_updates_recur() -> None:
    from telecrm.domain.events import fact_key

    created = {"treatment_plan_id": "tp_1", "status": "created"}
    key = fact_key("treatment_plan.updated", "pat_1", created)
    assert key is not None and key == fact_key("treatment_plan.updated", "pat_1", dict(created))
    completed = fact_key("treatment_plan.updated", "pat_1", {**created, "status": "completed"})
    assert completed not in (None, key)
    assert fact_key("treatment_plan.updated", "pat_1", {**created, "status": "updated"}) is None
