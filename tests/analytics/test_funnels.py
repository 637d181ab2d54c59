"""Funnels over time: hand-built stage histories whose answers are counted by hand, the stored
history on both engines against the profile stats, and a simulated population against the
funnel rates the simulator states."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from telecrm.analytics.funnels import (
    Ladder,
    funnel_conversions,
    ladder_from_transitions,
    load_ladder,
)
from telecrm.domain.clock import to_micros
from telecrm.domain.events import parse_event
from telecrm.profiles.views import stats
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.simulate.ground_truth import expected_funnel
from tests.support.builders import customer_journey, event

T0 = datetime(2025, 1, 6, tzinfo=UTC)
DAY = timedelta(days=1)


def us(days: float) -> int:
    return to_micros(T0 + days * DAY)


# Four patients, stage moves at hand-picked days after T0.
HISTORIES = [
    ("a", "visitor", us(0)),
    ("a", "lead", us(1)),
    ("a", "prospect", us(2)),
    ("a", "patient", us(4)),  # consultation funnel: 4 days
    ("a", "active_customer", us(10)),  # purchase funnel: 6 days
    ("b", "lead", us(0)),  # no tracked session: entered the funnel at `lead`
    ("b", "patient", us(40)),  # converts after 40 days: outside a 30-day window
    ("c", "visitor", us(5)),  # never converts
    ("d", "visitor", us(55)),  # entered 5 days before as_of: pending under a 30d window
    ("d", "at_risk", us(56)),  # off the ladder: ignored
]
CHANNELS = {"a": "paid_search", "b": "paid_search", "c": "organic"}
AS_OF = us(60)


def by_name(rows, group: str = "all"):
    return {r.funnel.name: r for r in rows if r.group == group}


def test_without_a_window_every_entrant_counts_and_converters_are_those_who_ever_reached_the_end():
    ladder = ladder_from_transitions(HISTORIES, CHANNELS)
    rows = by_name(funnel_conversions(ladder, as_of_us=AS_OF))
    consult = rows["consultation"].result
    assert (consult.entered, consult.converted) == (4, 2)
    assert rows["consultation"].median_days == pytest.approx((4 + 40) / 2)
    purchase = rows["purchase"]
    assert (purchase.result.entered, purchase.result.converted) == (2, 1)
    assert purchase.median_days == pytest.approx(6)
    subscription = rows["subscription"]  # a became a customer: entered, never subscribed
    assert (subscription.result.entered, subscription.result.converted) == (1, 0)
    assert subscription.median_days is None
    assert "advocacy" not in rows  # a funnel nobody entered has no row


def test_a_database_with_no_stage_history_has_no_funnel_rows():
    # an empty history (a fresh install) gave an IndexError: numpy read the empty ranks as floats
    assert funnel_conversions(ladder_from_transitions([]), as_of_us=AS_OF) == []


def test_a_window_counts_only_conversions_inside_it_and_leaves_recent_entrants_pending():
    ladder = ladder_from_transitions(HISTORIES, CHANNELS)
    rows = by_name(funnel_conversions(ladder, as_of_us=AS_OF, window=timedelta(days=30)))
    consult = rows["consultation"]
    # a (4 d) converts; b (40 d) is outside the window; c never; d entered 5 days ago: pending.
    assert (consult.result.entered, consult.result.converted, consult.pending) == (3, 1, 1)
    assert consult.result.rate == pytest.approx(1 / 3)
    assert consult.median_days == pytest.approx(4)


def test_as_of_hides_what_had_not_happened_yet():
    ladder = ladder_from_transitions(HISTORIES, CHANNELS)
    rows = by_name(funnel_conversions(ladder, as_of_us=us(20)))
    assert (rows["consultation"].result.entered, rows["consultation"].result.converted) == (3, 1)
    assert rows["purchase"].result.entered == 1


def test_groups_by_acquisition_channel_and_by_the_month_the_funnel_was_entered():
    ladder = ladder_from_transitions(HISTORIES, CHANNELS)
    channel = funnel_conversions(ladder, as_of_us=AS_OF, by="channel")
    paid = by_name(channel, "paid_search")["consultation"].result
    assert (paid.entered, paid.converted) == (2, 2)
    assert by_name(channel, "unknown")["consultation"].result.entered == 1  # d: no channel
    cohort = funnel_conversions(ladder, as_of_us=AS_OF, by="cohort")
    # T0 is 2025-01-06: a, b, c entered in January, d on day 55 = 2025-03-02.
    assert by_name(cohort, "2025-01")["consultation"].result.entered == 3
    assert by_name(cohort, "2025-03")["consultation"].result.entered == 1
    assert {r.group for r in cohort if r.funnel.name == "consultation"} == {"2025-01", "2025-03"}
    # Each funnel has its own cohorts: b entered the purchase funnel on day 40, in February.
    assert by_name(cohort, "2025-02")["purchase"].result.entered == 1


def _feed(runtime, raw: list[dict]) -> None:
    now = runtime.clock.now()
    runtime.intake().accept([parse_event(e, now=now) for e in raw], source="webhook", actor="test")
    runtime.worker().drain()


def test_the_stored_history_reproduces_the_profile_stats_and_the_hand_counted_window(
    runtime, clock
) -> None:
    start = clock.now() - 90 * DAY
    raw = customer_journey("pat_1", start)  # lead d0 ... patient d3, customer d4
    raw += customer_journey("pat_2", start + 10 * DAY)[:3]  # stops at prospect
    raw.append(
        event("session.tracked", None, start, {"channel": "paid_social"}, anonymous_id="anon_1")
    )
    _feed(runtime, raw)
    with runtime.engine.begin() as conn:
        ladder = load_ladder(conn)
        expected = stats(conn).funnels
    rows = funnel_conversions(ladder, as_of_us=to_micros(clock.now()))
    assert [(r.result.entered, r.result.converted) for r in rows] == [
        (e.entered, e.converted) for e in expected if e.entered
    ]
    consult = by_name(rows)["consultation"]
    assert (consult.result.entered, consult.result.converted) == (3, 1)
    assert consult.median_days == pytest.approx(3)
    windowed = by_name(
        funnel_conversions(ladder, as_of_us=to_micros(clock.now()), window=timedelta(days=2))
    )
    assert windowed["consultation"].result.converted == 0  # 3 days > 2-day window


# -- simulator truth --------------------------------------------------------------------------
SIM = SimulationConfig(patients=800, months=6, seed=3, start=date(2025, 1, 1))
SIM_EVENTS = list(generate(SIM))


def test_measured_consultation_conversion_matches_the_simulators_rate_and_the_raw_stream(
    runtime, clock
) -> None:
    clock.set(SIM.end)
    for i in range(0, len(SIM_EVENTS), 2000):
        now = clock.now()
        runtime.intake().accept(
            [parse_event(e, now=now) for e in SIM_EVENTS[i : i + 2000]],
            source="webhook",
            actor="test",
        )
    runtime.worker().drain()
    with runtime.engine.connect() as conn:
        ladder = load_ladder(conn)
    identified = np.asarray([not str(k).startswith("anon:") for k in ladder.keys])
    patients = Ladder(
        ladder.keys[identified], ladder.reached_us[identified], ladder.channel[identified]
    )

    # Independent count from the raw stream: registered patients, and those among them with a
    # prescription or a created treatment plan (the `patient` rung) before the end.
    registered = {e["patient"]["id"] for e in SIM_EVENTS if e["type"] == "patient.registered"}
    treated = {
        e["patient"]["id"]
        for e in SIM_EVENTS
        if e["type"] == "prescription.approved"
        or (
            e["type"] == "treatment_plan.updated"
            and e["data"].get("status") in ("created", "updated")
        )
    } & registered
    ever = by_name(funnel_conversions(patients, as_of_us=to_micros(SIM.end)))["consultation"]
    assert (ever.result.entered, ever.result.converted) == (len(registered), len(treated))

    # Against the simulator's stated rates: registered -> questionnaire -> consultation ->
    # treatment. A 60-day window leaves out the last two months' entrants, who could not finish.
    truth = expected_funnel(SIM)
    expected = (
        truth["registered_to_questionnaire"]
        * truth["questionnaire_to_consultation"]
        * truth["consultation_to_treatment"]
    )
    windowed = by_name(
        funnel_conversions(patients, as_of_us=to_micros(SIM.end), window=timedelta(days=60))
    )["consultation"]
    n = windowed.result.entered
    assert n > 400
    tolerance = 3.5 * math.sqrt(expected * (1 - expected) / n)  # 3.5 binomial standard errors
    assert windowed.result.rate == pytest.approx(expected, abs=tolerance)
