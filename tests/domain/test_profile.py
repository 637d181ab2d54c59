"""The profile projection: what events write into a profile, and why a rebuild reproduces it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from telecrm.domain.events import Event
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage, Thresholds, Transition
from telecrm.domain.profile import Profile, advance_time, apply_event, fold, step
from tests.domain.event_examples import PATIENT_ID, Story, event

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def a_busy_year() -> list[Event]:
    """A patient's year with ties (several events at one instant), lapses and a win-back."""
    story = (
        Story(T0)
        .then("session.tracked")
        .then("patient.registered", phone="(415) 555-2671")
        .after(days=2)
        .then("questionnaire.started")
        .then("consultation.submitted", conditions=["asthma"])
        .after(days=1)
        .then("prescription.approved")
        .then("order.paid", amount=30.0)
        .then("subscription.started")
        .after(days=20)
        .then("referral.made")
        .then("email.opened")
        .after(days=10)
        .then("subscription.cancelled", ends_at=(T0 + 60 * DAY).isoformat())
        .after(days=150)
        .then("order.paid", order_id="ord_2", amount=12.5)
        .after(days=3)
        .then("support_ticket.created")
    )
    return story.events


def sort_key(e: Event) -> tuple[datetime, str]:
    return (e.occurred_at, e.id)


# -- determinism -----------------------------------------------------------------------------------


def test_fold_of_the_same_events_at_the_same_now_is_identical():
    now = T0 + 400 * DAY
    first = fold(PATIENT_ID, a_busy_year(), now, Thresholds())
    second = fold(PATIENT_ID, a_busy_year(), now, Thresholds())
    assert first == second
    assert first[1]  # and it has a history to compare


def test_shuffled_events_sorted_by_time_and_id_fold_to_the_same_result():
    events = sorted(a_busy_year(), key=sort_key)
    now = T0 + 400 * DAY
    expected = fold(PATIENT_ID, events, now, Thresholds())
    rng = random.Random(7)
    for _ in range(20):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert fold(PATIENT_ID, sorted(shuffled, key=sort_key), now, Thresholds()) == expected


def test_fold_equals_one_step_per_event_then_advancing_the_clock():
    events, now, t = a_busy_year(), T0 + 400 * DAY, Thresholds()
    profile, history = Profile(PATIENT_ID), []
    for e in events:
        step(profile, e, t, history)
    advance_time(profile, now, t, history)
    assert (profile, history) == fold(PATIENT_ID, events, now, t)


def test_sweeping_the_clock_every_day_between_events_changes_nothing():
    events, now, t = a_busy_year(), T0 + 400 * DAY, Thresholds()
    profile, history = Profile(PATIENT_ID), []
    sweep = T0
    for e in events:
        while sweep < e.occurred_at:  # the live worker's periodic sweep
            advance_time(profile, sweep, t, history)
            sweep += DAY
        step(profile, e, t, history)
    advance_time(profile, now, t, history)
    assert (profile, history) == fold(PATIENT_ID, events, now, t)


def test_a_busy_year_ends_won_back_with_its_history_in_time_order():
    _, history = fold(PATIENT_ID, a_busy_year(), T0 + 200 * DAY, Thresholds())
    assert [t.to_stage.value for t in history] == [
        "visitor",
        "lead",
        "prospect",
        "patient",
        "active_customer",
        "subscriber",
        "advocate",
        "churned",
        "won_back",
    ]
    assert [t.at for t in history] == sorted(t.at for t in history)
    assert isinstance(history[0], Transition)


# -- what events write ------------------------------------------------------------------------------


def test_registration_writes_normalised_catalog_fields():
    p = Profile(PATIENT_ID)
    apply_event(p, event("patient.registered", phone="(415) 555-2671", acquisition_channel="ads"))
    assert p.values == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+14155552671",
        "acquisition_channel": "ads",
    }
    assert p.facts.registered_at == event("patient.registered").occurred_at


def test_every_value_a_profile_holds_is_a_catalog_field():
    profile, _ = fold(PATIENT_ID, a_busy_year(), T0 + 400 * DAY, Thresholds())
    assert set(profile.values) <= set(FIELDS)


def test_a_profile_refuses_a_field_outside_the_catalog():
    with pytest.raises(KeyError):
        Profile(PATIENT_ID).set("ssn", "123-45-6789")


def test_deletion_erases_identifying_values_and_keeps_counters():
    events = [*a_busy_year(), event("patient.deleted", T0 + 300 * DAY)]
    profile, _ = fold(PATIENT_ID, events, T0 + 300 * DAY, Thresholds())
    assert profile.deleted
    assert not [n for n in profile.values if FIELDS[n].encrypted]
    assert profile.values["orders_count"] == 2
    assert profile.values["total_order_value"] == 42.5


def test_events_after_deletion_write_nothing_back_until_the_patient_registers_again():
    # Bug found: a late consultation after an erasure wrote conditions (PHI) back.
    events = [
        event("patient.registered", T0),
        event("patient.deleted", T0 + DAY),
        event("consultation.submitted", T0 + 2 * DAY, conditions=["asthma"]),
        event("order.paid", T0 + 2 * DAY),
    ]
    profile, history = fold(PATIENT_ID, events, T0 + 3 * DAY, Thresholds())
    assert profile.values == {}
    assert profile.facts.consultation_at is None and profile.facts.first_order_at is None
    assert profile.events_applied == 4
    assert [t.to_stage.value for t in history] == ["lead"]


def test_a_patient_who_registers_again_after_deletion_moves_only_by_allowed_transitions():
    # Bug found by hypothesis: facts kept changing while the stage was frozen, so
    # re-registration jumped lead -> churned, which ALLOWED_TRANSITIONS forbids.
    events = [
        event("patient.registered", T0),
        event("patient.deleted", T0),
        event("order.paid", T0),
        event("subscription.cancelled", T0 + DAY, ends_at=(T0 + DAY).isoformat()),
        event("patient.registered", T0 + DAY),
    ]
    profile, history = fold(PATIENT_ID, events, T0 + DAY, Thresholds())
    assert not profile.deleted
    assert [(t.from_stage, t.to_stage) for t in history] == [(None, Stage.LEAD)]


def test_orders_accumulate_count_value_and_first_and_last_dates():
    p = Profile(PATIENT_ID)
    apply_event(p, event("order.paid", T0, amount=10.1))
    apply_event(p, event("order.paid", T0 + DAY, order_id="ord_2", amount=0.2))
    assert p.values["orders_count"] == 2
    assert p.values["total_order_value"] == 10.3
    assert p.values["first_order_at"] == T0.isoformat()
    assert p.values["last_order_at"] == (T0 + DAY).isoformat()


def test_consultations_merge_medical_lists_without_duplicates():
    p = Profile(PATIENT_ID)
    apply_event(p, event("consultation.submitted", conditions=["asthma"], medications=["a"]))
    apply_event(p, event("consultation.submitted", conditions=["asthma", "eczema"]))
    assert p.values["conditions"] == ["asthma", "eczema"]
    assert p.values["consultations_count"] == 2


def test_unsubscribe_and_opt_out_withdraw_consent():
    p = Profile(PATIENT_ID)
    apply_event(p, event("email.unsubscribed"))
    apply_event(p, event("sms.opted_out"))
    assert (p.values["marketing_consent"], p.values["sms_consent"]) == (False, False)


def test_message_engagement_counts_per_kind():
    p = Profile(PATIENT_ID)
    for kind in ("email.delivered", "email.opened", "email.opened", "sms.replied"):
        apply_event(p, event(kind))
    assert p.values == {"emails_delivered": 1, "emails_opened": 2, "sms_replied": 1}


def test_triggers_without_profile_facts_only_count_as_applied():
    p = Profile(PATIENT_ID)
    apply_event(p, event("refill.due"))
    apply_event(p, event("subscription.renewal_approaching"))
    assert p.values == {} and p.events_applied == 2
    assert p.facts.last_activity_at is None
