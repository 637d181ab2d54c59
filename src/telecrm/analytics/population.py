"""The population models of `analytics run`, fitted once and then used to predict.

Fitting costs far more than predicting: BG/NBD + Gamma-Gamma + sBG for the 12-month lifetime
value, and the calibrated churn model trained on the three latest fully observed windows. So
`fit_population` and `predict_population` are separate steps: a run predicts with a stored fit
(`model_store`) until it is a week old, then fits again. `population_scores` does both at once
(the benchmark, and callers without a store).

A model that cannot be fitted (too little history) is None with the reason in its note: its
score stays empty, never a NaN, never a made-up number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from threadpoolctl import threadpool_limits

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.churn import (
    DEFAULT_HORIZON_DAYS,
    ChurnModel,
    predict_churn,
    train_churn_model,
)
from telecrm.analytics.clv import ModelNotFitted
from telecrm.analytics.clv_scores import ClvModel, fit_clv, predict_clv
from telecrm.analytics.features import churn_rows

# The gradient boosting's OpenMP threads fight the database and other processes for 2 cores:
# on the 1M-patient log one thread fitted in 12.2 s, the default threads in 37.0 s beside one
# busy process (11.3 s vs 16.1 s even on a quiet machine; docs/benchmarks.md).
FIT_THREADS = 1


@dataclass(frozen=True, slots=True)
class PopulationModels:
    """What a fit produced: either model may be None, with the reason in its note."""

    clv: ClvModel | None
    churn: ChurnModel | None
    ltv_note: str | None
    churn_note: str | None
    cutoff: float  # days since the epoch: the end of the history the fit saw
    fit_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.clv is not None and self.churn is not None


@dataclass(frozen=True, slots=True)
class PopulationScores:
    """The two model-based scores per patient key, and why a model could not be fitted."""

    ltv: dict[str, float]
    churn: dict[str, float]
    ltv_note: str | None = None
    churn_note: str | None = None
    customers: int = 0  # patients the churn model scored: customers not yet churned
    fit_seconds: float = 0.0  # 0 when a stored fit was used
    predict_seconds: float = 0.0
    ltv_fitted: bool = False  # then a patient the log left out (bought nothing) is worth 0

    def ltv_of(self, key: str) -> float | None:
        return self.ltv.get(key, 0.0 if self.ltv_fitted else None)


def fit_population(
    log: ea.EventArrays, now: datetime, *, horizon_days: float = DEFAULT_HORIZON_DAYS
) -> PopulationModels:
    started = time.perf_counter()
    cutoff = ea.to_days(now)
    clv: ClvModel | None = None
    churn: ChurnModel | None = None
    ltv_note = churn_note = None
    with threadpool_limits(FIT_THREADS):
        try:
            clv = fit_clv(log, cutoff)
        except ModelNotFitted as exc:
            ltv_note = f"lifetime value not fitted: {exc}"
        try:
            churn = train_churn_model(
                log, tuple(cutoff - horizon_days * k for k in (1, 2, 3)), horizon_days=horizon_days
            )
        except ModelNotFitted as exc:
            churn_note = f"churn model not trained: {exc}"
    return PopulationModels(
        clv, churn, ltv_note, churn_note, cutoff, fit_seconds=time.perf_counter() - started
    )


def predict_population(
    models: PopulationModels, log: ea.EventArrays, now: datetime
) -> PopulationScores:
    """Every patient's 12-month value and every customer's churn risk as of `now`."""
    started = time.perf_counter()
    cutoff = ea.to_days(now)
    keys = [str(k) for k in log.keys]
    ltv: dict[str, float] = {}
    churn: dict[str, float] = {}
    with threadpool_limits(FIT_THREADS):
        if models.clv is not None:
            value = predict_clv(models.clv, log, cutoff).clv_12m
            ltv = {k: float(v) for k, v in zip(keys, value, strict=True)}
        if models.churn is not None:
            rows = churn_rows(log, cutoff)
            risk = predict_churn(models.churn, rows.features)
            churn = {keys[i]: float(p) for i, p in zip(rows.patient, risk, strict=True)}
    return PopulationScores(
        ltv,
        churn,
        models.ltv_note,
        models.churn_note,
        customers=len(churn),
        predict_seconds=time.perf_counter() - started,
        ltv_fitted=models.clv is not None,
    )


def population_scores(
    log: ea.EventArrays, now: datetime, *, horizon_days: float = DEFAULT_HORIZON_DAYS
) -> PopulationScores:
    """Fit and predict at once; `fit_seconds` is the fit's share."""
    models = fit_population(log, now, horizon_days=horizon_days)
    scores = predict_population(models, log, now)
    return PopulationScores(
        scores.ltv,
        scores.churn,
        scores.ltv_note,
        scores.churn_note,
        customers=scores.customers,
        fit_seconds=models.fit_seconds,
        predict_seconds=scores.predict_seconds,
        ltv_fitted=scores.ltv_fitted,
    )
