"""Predicted 12-month value per patient: one-off orders (BG/NBD x Gamma-Gamma) plus the
renewals of a running subscription (sBG by start-month cohort).

Undiscounted: over a 12-month horizon a discount rate of ~10 % a year would change values by
about 5 % and no ranking, so `clv_12m` is plain expected revenue (not margin) in USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telecrm.analytics.clv import (
    BgNbd,
    GammaGamma,
    bgnbd_expected_purchases,
    expected_order_value,
    fit_bgnbd,
    fit_gamma_gamma,
)
from telecrm.analytics.event_arrays import EventArrays
from telecrm.analytics.features import (
    decided_cancellations,
    renewals_due,
    rfm_at,
    subscriptions_at,
)
from telecrm.analytics.sbg import (
    MIN_SUBSCRIBERS,
    SbgByCohort,
    expected_future_payments,
    fit_sbg_by_cohort,
)

HORIZON_DAYS = 365.0


@dataclass(frozen=True, slots=True)
class ClvModel:
    purchases: BgNbd
    spend: GammaGamma
    retention: SbgByCohort | None  # None when nobody has subscribed yet
    fitted_at: float  # the cutoff, days since epoch
    buyers: int
    repeat_buyers: int
    subscriptions: int


def fit_clv(log: EventArrays, cutoff: float) -> ClvModel:
    """Fit all three models on history before `cutoff`; raises ModelNotFitted on too little."""
    rfm = rfm_at(log, cutoff)
    b = rfm.buyer
    purchases = fit_bgnbd(rfm.x[b], rfm.t_x[b], rfm.big_t[b])
    spend = fit_gamma_gamma(rfm.x[b], rfm.monetary[b])
    subs = subscriptions_at(log, cutoff)
    churned = decided_cancellations(subs, cutoff)
    retention = None
    if churned.any() and len(subs.paid) >= MIN_SUBSCRIBERS:
        retention = fit_sbg_by_cohort(subs.paid, churned, subs.cohort)
    return ClvModel(
        purchases=purchases,
        spend=spend,
        retention=retention,
        fitted_at=cutoff,
        buyers=int(b.sum()),
        repeat_buyers=int((rfm.x > 0).sum()),
        subscriptions=len(subs.paid),
    )


@dataclass(frozen=True, slots=True)
class ClvPrediction:
    """Per patient (index into the log's keys): every value finite and >= 0."""

    expected_orders: np.ndarray
    expected_order_value: np.ndarray
    one_off_value: np.ndarray
    subscription_value: np.ndarray

    @property
    def clv_12m(self) -> np.ndarray:
        return self.one_off_value + self.subscription_value


def predict_clv(
    model: ClvModel, log: EventArrays, cutoff: float, horizon_days: float = HORIZON_DAYS
) -> ClvPrediction:
    """Expected revenue in (cutoff, cutoff + horizon] for every patient in `log`."""
    n = log.patients
    rfm = rfm_at(log, cutoff)
    orders = np.zeros(n)
    b = rfm.buyer
    orders[b] = bgnbd_expected_purchases(
        model.purchases, horizon_days, rfm.x[b], rfm.t_x[b], rfm.big_t[b]
    )
    value = np.zeros(n)
    value[b] = expected_order_value(model.spend, rfm.x[b], rfm.monetary[b])
    subs = subscriptions_at(log, cutoff)
    running = ~subs.cancelled
    sub_value: np.ndarray = np.zeros(n)
    if model.retention is not None and running.any():
        alpha, beta = model.retention.for_cohorts(subs.cohort[running])
        due = renewals_due(subs, cutoff, horizon_days)[running]
        payments = expected_future_payments(alpha, beta, subs.paid[running], due)
        sub_value = np.bincount(
            subs.patient[running], weights=payments * subs.amount[running], minlength=n
        )

    def clean(a: np.ndarray) -> np.ndarray:
        return np.maximum(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 0.0)

    orders, value, sub_value = clean(orders), clean(value), clean(sub_value)
    return ClvPrediction(orders, value, orders * value, sub_value)
