"""The simulated business behaves as configured: funnel rates, seasonality, churn, prices.

Funnel steps are measured only for patients who reached the earlier step at least 30 days
before the end (every step's lag is shorter), so censoring does not bias the rates. Tolerance
is 4 binomial standard errors: with a fixed seed the result is deterministic; the margin says
how far from the configured rate a correct generator could land.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from telecrm.domain.events import parse_event
from telecrm.domain.lifecycle import Stage, Thresholds
from telecrm.domain.profile import fold
from telecrm.simulate import SimulationConfig, expected_funnel
from tests.simulate.conftest import Run, simulate

STEPS = (
    ("registered_to_questionnaire", "patient.registered", "questionnaire.started"),
    ("questionnaire_to_consultation", "questionnaire.started", "consultation.submitted"),
    ("consultation_to_treatment", "consultation.submitted", "prescription.approved"),
    ("treatment_to_first_order", "prescription.approved", "order.paid"),
    ("first_order_to_subscription", "order.paid", "subscription.started"),
)
SETTLE = timedelta(days=30)
# Acquisition tests need registrations only: nobody visits anonymously or goes further.
REGISTRATIONS_ONLY = {"bounced_visitors_per_patient": 0.0, "questionnaire_rate": 0.0}


def _first_of_each_type(run: Run) -> dict[str, dict[str, datetime]]:
    firsts: dict[str, dict[str, datetime]] = defaultdict(dict)
    for pid, events in run.by_patient.items():
        for e in events:
            firsts[pid].setdefault(e["type"], datetime.fromisoformat(e["occurred_at"]))
    return firsts


def test_funnel_conversions_match_the_configured_rates(run: Run) -> None:
    expected = expected_funnel(run.config)
    firsts = _first_of_each_type(run)
    cutoff = run.config.end - SETTLE
    for name, entered, converted in STEPS:
        cohort = [f for f in firsts.values() if entered in f and f[entered] < cutoff]
        rate = sum(converted in f for f in cohort) / len(cohort)
        p = expected[name]
        tolerance = 4 * math.sqrt(p * (1 - p) / len(cohort))
        assert len(cohort) > 300, name
        assert abs(rate - p) < tolerance, f"{name}: {rate:.3f} vs {p:.3f} ± {tolerance:.3f}"


def test_funnel_rates_follow_the_knobs() -> None:
    eager = simulate(
        SimulationConfig(
            patients=600, months=3, seed=21, questionnaire_rate=1.0, consultation_rate=0.0
        )
    )
    cutoff = eager.config.end - SETTLE
    firsts = _first_of_each_type(eager)
    settled = [f for f in firsts.values() if f["patient.registered"] < cutoff]
    assert settled and all("questionnaire.started" in f for f in settled)
    assert not eager.of_type("consultation.submitted")


def _weekend_to_weekday_ratio(run: Run) -> float:
    """Registrations per weekend day over registrations per weekday (local dates)."""
    weekend = weekday = 0
    for e in run.of_type("patient.registered"):
        at = datetime.fromisoformat(e["occurred_at"])
        if at.astimezone(ZoneInfo(e["data"]["timezone"])).weekday() >= 5:
            weekend += 1
        else:
            weekday += 1
    days = [run.config.start + timedelta(days=i) for i in range(run.config.days)]
    weekend_days = sum(d.weekday() >= 5 for d in days)
    return (weekend / weekend_days) / (weekday / (len(days) - weekend_days))


def test_weekend_days_see_fewer_registrations_when_configured() -> None:
    quiet = simulate(SimulationConfig(patients=12_000, months=2, **REGISTRATIONS_ONLY))
    assert 0.72 < _weekend_to_weekday_ratio(quiet) < 0.86  # configured 0.79


def test_without_a_weekend_factor_weekends_are_like_weekdays() -> None:
    flat = simulate(
        SimulationConfig(patients=12_000, months=2, weekend_factor=1.0, **REGISTRATIONS_ONLY)
    )
    assert 0.93 < _weekend_to_weekday_ratio(flat) < 1.07


def test_acquisition_peaks_in_the_configured_season() -> None:
    seasonal = simulate(
        SimulationConfig(
            patients=6000, months=12, annual_growth=0.0, yearly_amplitude=0.3,
            yearly_peak_day=10, **REGISTRATIONS_ONLY,
        )
    )  # fmt: skip
    per_month: dict[int, int] = defaultdict(int)
    for e in seasonal.of_type("patient.registered"):
        per_month[datetime.fromisoformat(e["occurred_at"]).month] += 1
    assert per_month[1] > 1.5 * per_month[7]


def test_subscription_prices_average_the_configured_revenue_per_subscriber(run: Run) -> None:
    amounts = [e["data"]["amount"] for e in run.of_type("subscription.started")]
    mean = sum(amounts) / len(amounts)
    assert abs(mean - run.config.monthly_revenue_per_subscriber) < 7.0


def test_monthly_cancellations_are_near_the_configured_churn(run: Run) -> None:
    renewed = len(run.of_type("subscription.renewed"))
    cancelled = len(run.of_type("subscription.cancelled"))
    rate = cancelled / (renewed + cancelled)
    # About 4,000 billing periods: one standard error is 0.004. Over long tenures survivor
    # sorting pulls the observed rate below the mean hazard (analytics.md §1.5).
    assert abs(rate - run.config.monthly_churn) < 0.015


def test_cancellation_ends_at_the_end_of_the_paid_period(run: Run) -> None:
    for events in run.by_patient.values():
        paid: dict[str, datetime] = {}
        ended: dict[str, datetime] = {}
        for e in events:
            data, at = e["data"], datetime.fromisoformat(e["occurred_at"])
            sub = data.get("subscription_id")
            if e["type"] == "order.paid" and sub is not None:
                assert sub not in ended, "a cancelled subscription must not bill again"
                paid[sub] = at
            if e["type"] == "subscription.cancelled":
                ends_at = datetime.fromisoformat(data["ends_at"])
                assert timedelta(0) < ends_at - paid[sub] <= timedelta(days=30)
                ended[sub] = ends_at


def test_involuntary_churn_follows_failed_payments(run: Run) -> None:
    for events in run.by_patient.values():
        failed: set[str] = set()
        for e in events:
            if e["type"] == "payment.failed":
                failed.add(e["data"]["subscription_id"])
            if e["type"] == "subscription.cancelled" and e["data"]["reason"] == "payment_failed":
                assert e["data"]["subscription_id"] in failed


def test_the_lifecycle_sees_every_stage(run: Run) -> None:
    stages_seen: set[Stage] = set()
    for pid, events in run.by_patient.items():
        parsed = [parse_event(e, now=run.config.end) for e in events]
        _, history = fold(pid, parsed, run.config.end, Thresholds())
        stages_seen.update(t.to_stage for t in history)
    assert stages_seen >= set(Stage) - {Stage.VISITOR}
