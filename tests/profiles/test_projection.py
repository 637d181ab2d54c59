"""The worker folds stored events into encrypted profiles and stage histories, per patient, in order."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import select

from telecrm.domain.clock import from_micros
from telecrm.domain.events import parse_event
from telecrm.domain.profile import fold
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profiles, stage_transitions
from telecrm.profiles.views import find_patient_key, patient_view, stats
from tests.support.builders import customer_journey, event, registration

DAY = timedelta(days=1)


def history_of(runtime, key: str) -> list[tuple[str | None, str]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(stage_transitions.c.from_stage, stage_transitions.c.to_stage)
            .where(stage_transitions.c.patient_key == key)
            .order_by(stage_transitions.c.ordinal)
        ).all()
    return [(r.from_stage, r.to_stage) for r in rows]


def stage_of(runtime, key: str) -> str | None:
    with runtime.engine.connect() as conn:
        return conn.execute(
            select(profiles.c.stage).where(profiles.c.patient_key == key)
        ).scalar_one()


def test_a_journey_becomes_a_profile_with_its_stage_history(api, runtime, clock) -> None:
    start = clock.now() - 10 * DAY
    assert api.post(customer_journey("pat_1", start)).status_code == 202
    report = runtime.worker().drain()
    assert report.patients == 1 and report.events == 5
    assert stage_of(runtime, "pat_1") == "active_customer"
    assert history_of(runtime, "pat_1") == [
        (None, "lead"),
        ("lead", "prospect"),
        ("prospect", "patient"),
        ("patient", "active_customer"),
    ]


def test_events_arriving_out_of_order_are_applied_in_occurred_at_order(api, runtime, clock) -> None:
    start = clock.now() - 30 * DAY
    journey = customer_journey("pat_1", start)
    api.post(journey[:1])
    runtime.worker().drain()
    # The order arrives before the consultation that preceded it, in separate deliveries.
    for e in (journey[4], journey[2], journey[3], journey[1]):
        api.post(e)
        runtime.worker().drain()
    expected_profile, expected_history = fold(
        "pat_1",
        [parse_event(e, now=clock.now()) for e in journey],
        clock.now(),
        runtime.settings.thresholds,
    )
    assert stage_of(runtime, "pat_1") == expected_profile.stage.value
    assert history_of(runtime, "pat_1") == [
        (t.from_stage.value if t.from_stage else None, t.to_stage.value) for t in expected_history
    ]


def test_a_visitor_linked_at_registration_brings_their_sessions_along(api, runtime, clock) -> None:
    start = clock.now() - 5 * DAY
    api.post(
        event("session.tracked", None, start, {"channel": "paid_search"}, anonymous_id="anon_42")
    )
    runtime.worker().drain()
    assert stage_of(runtime, "anon:anon_42") == "visitor"
    api.post(registration("pat_9", start + DAY, anonymous_id="anon_42"))
    api.post(event("session.tracked", None, start + 2 * DAY, {}, anonymous_id="anon_42"))
    runtime.worker().drain()
    assert history_of(runtime, "pat_9") == [(None, "visitor"), ("visitor", "lead")]
    with runtime.engine.begin() as conn:
        view = patient_view(
            conn, runtime.cipher(), "pat_9", actor="test", reveal_reason="test", now_us=0
        )
        s = stats(conn)
    assert view.fields["sessions_count"] == 2
    assert view.fields["acquisition_channel"] == "paid_search"
    assert sum(s.patients_by_stage.values()) == 1  # the visitor is not counted twice


def test_time_alone_moves_a_customer_to_at_risk_then_churned_at_the_threshold_instant(
    api, runtime, clock
) -> None:
    start = clock.now() - 10 * DAY
    api.post(customer_journey("pat_1", start))
    runtime.worker().drain()
    last_activity = start + 4 * DAY
    clock.advance(50 * DAY)
    assert runtime.sweep().run().moved == 1
    assert stage_of(runtime, "pat_1") == "at_risk"
    clock.advance(100 * DAY)
    runtime.sweep().run()
    assert stage_of(runtime, "pat_1") == "churned"
    with runtime.engine.connect() as conn:
        ats = conn.execute(
            select(stage_transitions.c.at_us, stage_transitions.c.to_stage)
            .where(stage_transitions.c.patient_key == "pat_1")
            .order_by(stage_transitions.c.ordinal)
        ).all()
    moved = {to: from_micros(at) for at, to in ats}
    assert moved["at_risk"] == last_activity + 45 * DAY
    assert moved["churned"] == last_activity + 120 * DAY


def test_a_churned_customer_who_orders_again_is_won_back(api, runtime, clock) -> None:
    api.post(customer_journey("pat_1", clock.now() - 10 * DAY))
    runtime.worker().drain()
    clock.advance(200 * DAY)
    runtime.sweep().run()
    api.now = clock.now()
    api.post(event("order.paid", "pat_1", clock.now(), {"order_id": "o_again", "amount": 30}))
    runtime.worker().drain()
    assert stage_of(runtime, "pat_1") == "won_back"


def test_rebuild_reproduces_identical_profiles_and_histories(api, runtime, clock) -> None:
    rng = random.Random(3)
    start = clock.now() - 60 * DAY
    for i in range(12):
        journey = customer_journey(f"pat_{i}", start + i * DAY)
        head, tail = journey[:2], journey[2:]
        rng.shuffle(tail)  # late and out-of-order deliveries
        api.post(head)
        runtime.worker().drain()
        api.post(tail)
    api.post(event("session.tracked", None, start, {}, anonymous_id="anon_r"))
    api.post(registration("pat_r", start + DAY, anonymous_id="anon_r"))
    runtime.worker().drain()
    runtime.sweep().run()
    before = projection_digest(runtime.engine, runtime.cipher())
    rebuild_projection(runtime.engine, runtime.worker(), clock)
    assert projection_digest(runtime.engine, runtime.cipher()) == before


def test_a_patient_is_found_by_email_and_phone_through_the_blind_index(api, runtime, clock) -> None:
    api.post(
        registration(
            "pat_1", clock.now(), data={"email": "Ada.L@Example.com", "phone": "(415) 555-2671"}
        )
    )
    runtime.worker().drain()
    with runtime.engine.connect() as conn:
        index = runtime.blind_index()
        assert (
            find_patient_key(conn, index, patient_id=None, email="ada.l@example.com", phone=None)
            == "pat_1"
        )
        assert (
            find_patient_key(conn, index, patient_id=None, email=None, phone="+14155552671")
            == "pat_1"
        )


def test_a_deleted_patient_loses_identifying_values_but_keeps_counts(api, runtime, clock) -> None:
    api.post(customer_journey("pat_1", clock.now() - 10 * DAY))
    api.post(event("patient.deleted", "pat_1", clock.now(), {"reason": "gdpr_request"}))
    runtime.worker().drain()
    with runtime.engine.begin() as conn:
        view = patient_view(
            conn, runtime.cipher(), "pat_1", actor="test", reveal_reason="audit", now_us=0
        )
        row = conn.execute(
            select(profiles.c.sealed, profiles.c.email_bidx).where(
                profiles.c.patient_key == "pat_1"
            )
        ).one()
    assert "email" not in view.fields and "first_name" not in view.fields
    assert view.fields["orders_count"] == 1
    assert row.sealed == "{}" and row.email_bidx is None
