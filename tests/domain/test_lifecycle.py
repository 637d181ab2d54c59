"""The lifecycle engine of DESIGN.md §4.2: stages, CRM statuses, and what moves a patient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telecrm.domain.lifecycle import (
    ALLOWED_TRANSITIONS,
    CRM_STATUS,
    CUSTOMER_STAGES,
    LADDER,
    Stage,
    Thresholds,
    evaluate,
    next_time_change,
)
from telecrm.domain.profile import Facts
from tests.domain.event_examples import Story

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
S = Stage


def stages(history) -> list[Stage | None]:
    return [history[0].from_stage, *(t.to_stage for t in history)] if history else []


def subscriber(start: datetime = T0) -> Story:
    """A patient who climbed to subscriber on day 0."""
    return (
        Story(start)
        .then("patient.registered")
        .then("consultation.submitted")
        .then("prescription.approved")
        .then("order.paid")
        .then("subscription.started")
    )


# -- the table -------------------------------------------------------------------------------------


def test_crm_status_of_every_stage_matches_the_design():
    # DESIGN.md §4.2, copied from the doc.
    assert {s.value: status for s, status in CRM_STATUS.items()} == {
        "visitor": "Lead",
        "lead": "Qualified Lead",
        "prospect": "Opportunity",
        "patient": "Customer",
        "active_customer": "Active Customer",
        "subscriber": "Subscription Customer",
        "advocate": "VIP Customer",
        "at_risk": "At-Risk Customer",
        "churned": "Churned Customer",
        "won_back": "Reactivated Customer",
    }


def test_there_are_10_stages_and_the_ladder_is_the_first_7():
    assert len(Stage) == 10
    assert [s.value for s in LADDER] == [
        "visitor",
        "lead",
        "prospect",
        "patient",
        "active_customer",
        "subscriber",
        "advocate",
    ]


def test_allowed_transitions_only_climb_the_ladder_before_a_first_order():
    for stage in (S.VISITOR, S.LEAD, S.PROSPECT, S.PATIENT):
        higher = set(LADDER[LADDER.index(stage) + 1 :])
        assert ALLOWED_TRANSITIONS[stage] == higher


def test_a_churned_patient_can_only_be_won_back():
    assert ALLOWED_TRANSITIONS[S.CHURNED] == {S.WON_BACK}


def test_only_customers_can_be_at_risk_or_churned():
    can_lapse = {
        s for s, targets in ALLOWED_TRANSITIONS.items() if targets & {S.AT_RISK, S.CHURNED}
    }
    assert can_lapse <= CUSTOMER_STAGES
    assert S.AT_RISK not in ALLOWED_TRANSITIONS[None]


def test_every_stage_has_its_allowed_transitions():
    assert set(ALLOWED_TRANSITIONS) == {None, *Stage}


# -- climbing the ladder ---------------------------------------------------------------------------


def test_a_patient_walks_the_whole_ladder_with_each_step_stamped_at_its_event():
    story = (
        Story(T0)
        .then("session.tracked")
        .after(days=1)
        .then("patient.registered")
        .after(days=2)
        .then("consultation.submitted")
        .after(days=1)
        .then("prescription.approved")
        .after(days=3)
        .then("order.paid")
        .after(days=4)
        .then("subscription.started")
        .then("order.paid", order_id="ord_2", recurring=True, subscription_id="sub_1")
        .after(days=5)
        .then("referral.made")
    )
    profile, history = story.fold()
    assert [(t.to_stage, t.at - T0) for t in history] == [
        (S.VISITOR, 0 * DAY),
        (S.LEAD, 1 * DAY),
        (S.PROSPECT, 3 * DAY),
        (S.PATIENT, 4 * DAY),
        (S.ACTIVE_CUSTOMER, 7 * DAY),
        (S.SUBSCRIBER, 11 * DAY),
        (S.ADVOCATE, 16 * DAY),
    ]
    assert history[0].from_stage is None
    assert all(t.event_id is not None for t in history)
    assert profile.stage is S.ADVOCATE
    assert CRM_STATUS[profile.stage] == "VIP Customer"
    assert profile.max_rank == LADDER.index(S.ADVOCATE)


def test_a_questionnaire_makes_a_visitor_a_lead():
    _, history = (
        Story(T0).then("session.tracked").after(hours=1).then("questionnaire.started").fold()
    )
    assert stages(history) == [None, S.VISITOR, S.LEAD]


def test_a_treatment_plan_created_makes_a_prospect_a_patient():
    _, history = (
        Story(T0)
        .then("patient.registered")
        .then("consultation.submitted")
        .then("treatment_plan.updated", status="created")
        .fold()
    )
    assert history[-1].to_stage is S.PATIENT


def test_a_patient_never_steps_down_the_ladder_before_ordering():
    story = Story(T0).then("patient.registered").then("consultation.submitted")
    _, history = story.after(days=3).then("session.tracked").then("questionnaire.started").fold()
    assert stages(history) == [None, S.LEAD, S.PROSPECT]


def test_a_first_order_skips_the_rungs_it_jumps():
    _, history = Story(T0).then("patient.registered").after(days=1).then("order.paid").fold()
    assert stages(history) == [None, S.LEAD, S.ACTIVE_CUSTOMER]


def test_a_referral_before_any_order_does_not_make_an_advocate():
    story = Story(T0).then("patient.registered").then("referral.made").then("review.posted")
    profile, _ = story.fold()
    assert profile.stage is S.LEAD
    profile, history = story.after(days=1).then("order.paid").fold()
    assert (history[-1].from_stage, history[-1].to_stage) == (S.LEAD, S.ADVOCATE)


def test_a_subscription_alone_is_not_a_customer_until_an_order_is_paid():
    story = Story(T0).then("patient.registered").then("subscription.started")
    assert story.fold()[0].stage is S.LEAD
    assert story.after(hours=1).then("order.paid").fold()[0].stage is S.SUBSCRIBER


# -- the clock: at_risk, churned, won_back ---------------------------------------------------------


def test_45_days_of_inactivity_make_a_customer_at_risk_stamped_at_the_threshold():
    story = subscriber()
    profile, history = story.fold(now=T0 + 60 * DAY)
    assert profile.stage is S.AT_RISK
    last = history[-1]
    assert (last.from_stage, last.to_stage, last.at) == (S.SUBSCRIBER, S.AT_RISK, T0 + 45 * DAY)
    assert last.event_id is None
    assert last.reason == "inactive 45 days"


def test_one_microsecond_before_the_threshold_the_customer_is_still_active():
    profile, _ = subscriber().fold(now=T0 + 45 * DAY - timedelta(microseconds=1))
    assert profile.stage is S.SUBSCRIBER
    assert subscriber().fold(now=T0 + 45 * DAY)[0].stage is S.AT_RISK


def test_120_days_of_inactivity_churn_a_customer_stamped_at_the_threshold():
    profile, history = subscriber().fold(now=T0 + 400 * DAY)
    assert [(t.to_stage, t.at) for t in history[-2:]] == [
        (S.AT_RISK, T0 + 45 * DAY),
        (S.CHURNED, T0 + 120 * DAY),
    ]
    assert profile.stage is S.CHURNED
    assert profile.stage_since == T0 + 120 * DAY
    assert profile.facts.churned_at == T0 + 120 * DAY


def test_the_history_does_not_depend_on_when_the_sweep_runs():
    late = subscriber().fold(now=T0 + 121 * DAY)[1]
    much_later = subscriber().fold(now=T0 + 3000 * DAY)[1]
    assert late == much_later


def test_an_at_risk_customer_returns_to_their_milestone_on_new_activity():
    story = subscriber().after(days=50).then("session.tracked")
    profile, history = story.fold()
    assert [(t.from_stage, t.to_stage) for t in history[-2:]] == [
        (S.SUBSCRIBER, S.AT_RISK),
        (S.AT_RISK, S.SUBSCRIBER),
    ]
    assert history[-1].at == T0 + 50 * DAY
    assert history[-1].reason == "active again"
    assert profile.stage is S.SUBSCRIBER


def test_an_at_risk_one_off_buyer_returns_to_active_customer_when_ordering_again():
    story = Story(T0).then("patient.registered").then("order.paid")
    _, history = story.after(days=60).then("order.paid", order_id="ord_2").fold()
    assert stages(history)[-3:] == [S.ACTIVE_CUSTOMER, S.AT_RISK, S.ACTIVE_CUSTOMER]


def test_activity_that_is_not_patient_initiated_does_not_keep_a_customer_active():
    story = subscriber().after(days=30).then("email.delivered").then("refill.due")
    assert story.fold(now=T0 + 46 * DAY)[0].stage is S.AT_RISK


def test_non_customers_never_go_at_risk_or_churn_however_long_they_are_idle():
    story = Story(T0).then("patient.registered").then("consultation.submitted")
    profile, history = story.fold(now=T0 + 3000 * DAY)
    assert profile.stage is S.PROSPECT
    assert next_time_change(profile, T0, Thresholds()) is None
    assert stages(history) == [None, S.LEAD, S.PROSPECT]


def test_a_churned_customer_who_orders_again_is_won_back():
    story = subscriber().after(days=200).then("order.paid", order_id="ord_2")
    profile, history = story.fold()
    assert (history[-1].from_stage, history[-1].to_stage) == (S.CHURNED, S.WON_BACK)
    assert history[-1].at == T0 + 200 * DAY
    assert profile.stage is S.WON_BACK
    assert CRM_STATUS[profile.stage] == "Reactivated Customer"


def test_a_churned_customer_who_only_browses_stays_churned():
    story = subscriber().after(days=200).then("session.tracked").then("email.opened")
    assert story.fold()[0].stage is S.CHURNED


def test_a_won_back_customer_can_go_at_risk_and_churn_again():
    story = subscriber().after(days=200).then("order.paid", order_id="ord_2")
    _, history = story.fold(now=T0 + 200 * DAY + 130 * DAY)
    assert stages(history)[-4:] == [S.CHURNED, S.WON_BACK, S.AT_RISK, S.CHURNED]
    assert history[-1].at == T0 + 320 * DAY


def test_a_won_back_customer_at_risk_who_returns_is_won_back_not_their_old_milestone():
    story = subscriber().after(days=200).then("order.paid", order_id="ord_2")
    _, history = story.after(days=50).then("session.tracked").fold()
    assert stages(history)[-3:] == [S.WON_BACK, S.AT_RISK, S.WON_BACK]


# -- subscriptions that end ------------------------------------------------------------------------


def test_a_cancelled_subscription_keeps_a_subscriber_until_it_ends_then_churns_at_that_instant():
    ends = T0 + 20 * DAY
    story = subscriber().after(days=5).then("subscription.cancelled", ends_at=ends.isoformat())
    assert story.fold(now=ends - timedelta(seconds=1))[0].stage is S.SUBSCRIBER
    profile, history = story.fold(now=ends + DAY)
    assert profile.stage is S.CHURNED
    last = history[-1]
    assert (last.from_stage, last.to_stage, last.at) == (S.SUBSCRIBER, S.CHURNED, ends)
    assert last.reason == "subscription cancelled and lapsed"


def test_a_cancellation_that_ended_in_the_past_lapses_at_the_cancellation():
    ends = T0 + 2 * DAY
    story = subscriber().after(days=5).then("subscription.cancelled", ends_at=ends.isoformat())
    _, history = story.fold()
    assert (history[-1].to_stage, history[-1].at) == (S.CHURNED, T0 + 5 * DAY)


def test_a_renewal_after_a_cancellation_keeps_the_subscriber():
    ends = T0 + 20 * DAY
    story = subscriber().after(days=5).then("subscription.cancelled", ends_at=ends.isoformat())
    profile, _ = story.after(days=5).then("subscription.renewed").fold(now=T0 + 30 * DAY)
    assert profile.stage is S.SUBSCRIBER


def test_a_payment_at_the_instant_a_subscription_lapses_wins_the_customer_back():
    # Bug found: the lapse churned them at `ends` and the payment at the same instant was not
    # "after" the churn, so a paying customer stayed churned.
    ends = T0 + 20 * DAY
    story = subscriber().after(days=5).then("subscription.cancelled", ends_at=ends.isoformat())
    story.after(days=15).then("order.paid", order_id="ord_2")
    profile, history = story.fold(now=ends + DAY)
    assert stages(history)[-3:] == [S.SUBSCRIBER, S.CHURNED, S.WON_BACK]
    assert profile.stage is S.WON_BACK


def test_a_first_order_at_the_instant_a_subscription_lapses_makes_a_customer_not_a_churned_lead():
    # Bug found: lead -> churned, a move ALLOWED_TRANSITIONS forbids, for a first-time buyer.
    story = (
        Story(T0)
        .then("patient.registered")
        .then("subscription.started")
        .then("subscription.cancelled", ends_at=T0.isoformat())
        .then("order.paid")
    )
    _, history = story.fold()
    assert stages(history) == [None, S.LEAD, S.ACTIVE_CUSTOMER]
    for t in history:
        assert t.to_stage in ALLOWED_TRANSITIONS[t.from_stage]


def test_next_time_change_is_the_earliest_future_threshold_or_lapse():
    t = Thresholds()
    ends = T0 + 10 * DAY
    profile, _ = subscriber().then("subscription.cancelled", ends_at=ends.isoformat()).fold()
    assert next_time_change(profile, T0, t) == ends
    profile, _ = subscriber().fold()
    assert next_time_change(profile, T0, t) == T0 + 45 * DAY
    assert next_time_change(profile, T0 + 45 * DAY, t) == T0 + 120 * DAY
    assert next_time_change(profile, T0 + 120 * DAY, t) is None


# -- evaluate on its own ---------------------------------------------------------------------------


def test_churn_risk_over_the_cutoff_makes_an_active_customer_at_risk():
    profile, _ = subscriber().fold()
    profile.facts.churn_risk = 0.7
    assert evaluate(profile, T0, Thresholds()) == (S.AT_RISK, "churn risk at or over 0.7")
    profile.facts.churn_risk = 0.69
    assert evaluate(profile, T0, Thresholds())[0] is S.SUBSCRIBER


def test_a_deleted_patient_keeps_their_stage_and_the_clock_no_longer_moves_it():
    profile, _ = subscriber().after(days=1).then("patient.deleted").fold(now=T0 + 400 * DAY)
    assert profile.deleted
    assert profile.stage is S.SUBSCRIBER
    assert evaluate(profile, T0 + 400 * DAY, Thresholds()) == (S.SUBSCRIBER, "deleted")
    assert next_time_change(profile, T0, Thresholds()) is None


def test_a_profile_with_no_milestone_has_no_stage():
    profile, history = Story(T0).then("email.delivered").fold()
    assert profile.stage is None and history == []


# -- thresholds ------------------------------------------------------------------------------------


def test_custom_thresholds_move_customers_on_their_own_days():
    t = Thresholds(at_risk_inactivity_days=10, churn_inactivity_days=30, churn_risk_cutoff=0.5)
    _, history = subscriber().fold(now=T0 + 100 * DAY, thresholds=t)
    assert [(h.to_stage, h.at) for h in history[-2:]] == [
        (S.AT_RISK, T0 + 10 * DAY),
        (S.CHURNED, T0 + 30 * DAY),
    ]
    assert history[-2].reason == "inactive 10 days"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"at_risk_inactivity_days": 0},
        {"at_risk_inactivity_days": -5},
        {"at_risk_inactivity_days": 120, "churn_inactivity_days": 120},
        {"at_risk_inactivity_days": 130, "churn_inactivity_days": 120},
        {"churn_risk_cutoff": 0.0},
        {"churn_risk_cutoff": 1.01},
    ],
)
def test_thresholds_refuse_impossible_cut_offs(kwargs):
    with pytest.raises(ValueError):
        Thresholds(**kwargs)


def test_default_thresholds_are_45_and_120_days_and_a_risk_of_0_7():
    t = Thresholds()
    assert (t.at_risk_inactivity_days, t.churn_inactivity_days, t.churn_risk_cutoff) == (
        45,
        120,
        0.7,
    )
    assert Thresholds(churn_risk_cutoff=1.0).churn_risk_cutoff == 1.0


# -- facts survive storage -------------------------------------------------------------------------


def test_facts_round_trip_through_json_and_evaluate_the_same():
    ends = T0 + 10 * DAY
    profile, _ = subscriber().then("subscription.cancelled", ends_at=ends.isoformat()).fold()
    restored = Facts.from_json(profile.facts.to_json())
    assert restored == profile.facts
