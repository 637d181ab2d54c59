"""Churn risk on the simulator: trained on earlier cutoffs, judged on a later, unseen period.

Labels come from what the simulated patients did after the cutoff; the floors sit below the
measured values (docs/analytics.md, "Churn risk (model card)") with room for seed noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.churn import evaluate_churn, predict_churn, train_churn_model
from telecrm.analytics.clv import ModelNotFitted
from telecrm.analytics.features import FEATURES, churn_labels, churn_rows
from tests.analytics.clv_population import population

HORIZON = 60.0


def _split(pop_end: float) -> tuple[tuple[float, ...], float]:
    evaluate_at = pop_end - HORIZON  # the last fully observed label window
    return tuple(evaluate_at - HORIZON * k for k in (1, 2, 3)), evaluate_at


def test_churn_model_ranks_and_calibrates_on_the_held_out_later_period() -> None:
    pop = population(4000, 24, 3)
    log = ea.from_wire(pop.events)
    train_at, evaluate_at = _split(ea.to_days(pop.config.end))
    model = train_churn_model(log, train_at, horizon_days=HORIZON)
    report = evaluate_churn(model, log, evaluate_at)
    assert report.rows > 1000
    assert report.auc > 0.70
    assert report.calibration_error < 0.05
    assert report.brier < report.brier_of_base_rate
    assert report.lift_top_decile > 1.8
    assert report.auc > report.recency_only_auc


def test_labels_use_only_the_window_after_the_cutoff() -> None:
    pop = population(300, 12, 8)
    log = ea.from_wire(pop.events)
    cutoff = ea.to_days(pop.config.end) - 120
    rows = churn_rows(log, cutoff)
    truncated = churn_rows(log.before(cutoff), cutoff)
    assert np.array_equal(rows.features, truncated.features, equal_nan=True)
    labels = churn_labels(log, rows, cutoff, HORIZON)
    window = (log.t >= cutoff) & (log.t < cutoff + HORIZON)
    for i, p in enumerate(rows.patient[:50]):
        mine = window & (log.patient == p)
        if rows.subscribed[i]:
            assert labels[i] == int((log.kind[mine] == ea.SUB_CANCELLED).any())
        else:
            bought = np.isin(log.kind[mine], (ea.ORDER, ea.RENEWAL_PAYMENT)).any()
            assert labels[i] == int(not bought)


def test_predictions_are_finite_probabilities_even_for_empty_or_missing_features() -> None:
    pop = population(2000, 24, 5)
    log = ea.from_wire(pop.events)
    train_at, _ = _split(ea.to_days(pop.config.end))
    model = train_churn_model(log, train_at, horizon_days=HORIZON, method="isotonic")
    assert model.method == "sigmoid"  # too few calibration rows for isotonic
    rows = np.full((3, len(FEATURES)), np.nan)
    p = predict_churn(model, rows)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert predict_churn(model, np.zeros((0, len(FEATURES)))).shape == (0,)


def test_a_tiny_history_is_refused_with_a_reason() -> None:
    pop = population(300, 12, 8)
    log = ea.from_wire(pop.events[:500])
    with pytest.raises(ModelNotFitted, match="rows"):
        train_churn_model(log, (ea.to_days(pop.config.end) - 200,))


def test_a_feature_no_patient_has_still_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patients read from the platform's database carry no sessions, so a feature can be NaN for
    # every row, which scikit-learn's binning cannot take: the model must still train.
    from telecrm.analytics import churn

    pop = population(2000, 24, 5)
    log = ea.from_wire(pop.events)
    train_at, evaluate_at = _split(ea.to_days(pop.config.end))
    x, y = churn.training_set(log, train_at, HORIZON)
    x[:, FEATURES.index("days_since_payment_failure")] = np.nan  # nobody's payment failed
    monkeypatch.setattr(churn, "training_set", lambda *_: (x, y))
    model = train_churn_model(log, train_at, horizon_days=HORIZON)
    p = predict_churn(model, churn_rows(log, evaluate_at).features)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
