"""The 4 funnels of DESIGN.md §4.2, with conversions computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from telecrm.domain.funnels import FUNNELS, funnel_results
from telecrm.domain.lifecycle import RANK, Stage
from tests.domain.event_examples import Story

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def test_the_4_funnels_are_those_of_the_design():
    assert [(f.name, f.start.value, f.end.value) for f in FUNNELS] == [
        ("consultation", "visitor", "patient"),
        ("purchase", "patient", "active_customer"),
        ("subscription", "active_customer", "subscriber"),
        ("advocacy", "subscriber", "advocate"),
    ]


def test_funnel_conversions_count_everyone_who_reached_each_rung():
    by_max_rank = {
        RANK[Stage.VISITOR]: 10,
        RANK[Stage.LEAD]: 5,
        RANK[Stage.PROSPECT]: 0,
        RANK[Stage.PATIENT]: 4,
        RANK[Stage.ACTIVE_CUSTOMER]: 3,
        RANK[Stage.SUBSCRIBER]: 2,
        RANK[Stage.ADVOCATE]: 1,
    }
    # By hand: 25 reached visitor, 10 patient, 6 active_customer, 3 subscriber, 1 advocate.
    results = {r.funnel.name: (r.entered, r.converted, r.rate) for r in funnel_results(by_max_rank)}
    assert results == {
        "consultation": (25, 10, pytest.approx(0.4)),
        "purchase": (10, 6, pytest.approx(0.6)),
        "subscription": (6, 3, pytest.approx(0.5)),
        "advocacy": (3, 1, pytest.approx(1 / 3)),
    }


def test_a_funnel_nobody_entered_has_no_rate():
    results = funnel_results({RANK[Stage.LEAD]: 7})
    assert [(r.funnel.name, r.entered, r.converted, r.rate) for r in results] == [
        ("consultation", 7, 0, 0.0),
        ("purchase", 0, 0, None),
        ("subscription", 0, 0, None),
        ("advocacy", 0, 0, None),
    ]


def test_patients_with_no_stage_are_in_no_funnel():
    assert all(r.entered == 0 for r in funnel_results({-1: 12}))


def test_funnels_from_folded_profiles_count_the_highest_rung_ever_reached():
    browsing = Story(T0).then("session.tracked")
    lapsed_buyer = Story(T0).then("patient.registered").then("order.paid")
    advocate = (
        Story(T0)
        .then("patient.registered")
        .then("order.paid")
        .then("subscription.started")
        .then("review.posted")
    )
    profiles = [s.fold(now=T0.replace(year=2027))[0] for s in (browsing, lapsed_buyer, advocate)]
    # The lapsed buyer is churned by then, but reached active_customer on the way.
    assert profiles[1].stage is Stage.CHURNED
    by_max_rank: dict[int, int] = {}
    for p in profiles:
        by_max_rank[p.max_rank] = by_max_rank.get(p.max_rank, 0) + 1
    results = {r.funnel.name: (r.entered, r.converted) for r in funnel_results(by_max_rank)}
    assert results == {
        "consultation": (3, 2),
        "purchase": (2, 2),
        "subscription": (2, 1),
        "advocacy": (1, 1),
    }
