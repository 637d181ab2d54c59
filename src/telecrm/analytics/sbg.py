"""Subscribers' lifetime value: the shifted-beta-geometric retention model (Fader & Hardie 2007).

Each subscriber cancels at a renewal with a constant probability theta ~ Beta(alpha, beta)
across subscribers (research/analytics.md §1.5). The first period is paid at sign-up; renewal
opportunity j comes at the end of period j. A subscription that paid n periods and was cancelled
contributes P(T = n); one still running at the cutoff has survived n - 1 opportunities and
contributes S(n - 1). Fitted per
start-month cohort by maximum likelihood, falling back to the pooled fit for cohorts too small
to identify two parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln

from telecrm.analytics.clv import ModelNotFitted, _fit

MIN_COHORT_SUBSCRIBERS = 60  # smaller cohorts borrow the pooled fit
MIN_SUBSCRIBERS = 10


@dataclass(frozen=True, slots=True)
class Sbg:
    alpha: float
    beta: float

    def survival(self, periods: np.ndarray) -> np.ndarray:
        """S(t) = B(alpha, beta + t) / B(alpha, beta): still subscribed after t renewals."""
        t = np.asarray(periods, dtype=np.float64)
        return np.exp(betaln(self.alpha, self.beta + t) - betaln(self.alpha, self.beta))

    def churn_at(self, periods: np.ndarray) -> np.ndarray:
        """P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta), t >= 1."""
        t = np.asarray(periods, dtype=np.float64)
        return np.exp(betaln(self.alpha + 1.0, self.beta + t - 1.0) - betaln(self.alpha, self.beta))


def sbg_log_likelihood(m: Sbg, paid: np.ndarray, cancelled: np.ndarray) -> np.ndarray:
    """`paid` periods per subscription (>= 1); `cancelled` says whether it ended after them."""
    paid = np.asarray(paid, dtype=np.float64)
    base = betaln(m.alpha, m.beta)
    churned = betaln(m.alpha + 1.0, m.beta + paid - 1.0) - base
    alive = betaln(m.alpha, m.beta + paid - 1.0) - base
    return np.where(np.asarray(cancelled, dtype=bool), churned, alive)


def fit_sbg(paid: np.ndarray, cancelled: np.ndarray) -> Sbg:
    paid = np.asarray(paid, dtype=np.float64)
    cancelled = np.asarray(cancelled, dtype=bool)
    if len(paid) < MIN_SUBSCRIBERS or not cancelled.any():
        raise ModelNotFitted(
            f"sBG needs at least {MIN_SUBSCRIBERS} subscriptions and one cancellation,"
            f" got {len(paid)} and {int(cancelled.sum())}"
        )

    def neg(theta: np.ndarray) -> float:
        alpha, beta = np.exp(theta)
        value = -float(np.mean(sbg_log_likelihood(Sbg(alpha, beta), paid, cancelled)))
        return value if np.isfinite(value) else 1e12

    alpha, beta = _fit(neg, np.log([1.0, 5.0]))
    return Sbg(alpha, beta)


@dataclass(frozen=True, slots=True)
class SbgByCohort:
    pooled: Sbg
    cohorts: dict[int, Sbg]  # start month index -> its own fit, when big enough

    def for_cohorts(self, cohort: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) arrays for each subscription's cohort."""
        alpha = np.full(len(cohort), self.pooled.alpha)
        beta = np.full(len(cohort), self.pooled.beta)
        for c, fit in self.cohorts.items():
            mine = cohort == c
            alpha[mine], beta[mine] = fit.alpha, fit.beta
        return alpha, beta


def fit_sbg_by_cohort(paid: np.ndarray, cancelled: np.ndarray, cohort: np.ndarray) -> SbgByCohort:
    pooled = fit_sbg(paid, cancelled)
    fits: dict[int, Sbg] = {}
    for c in np.unique(cohort):
        mine = cohort == c
        if mine.sum() >= MIN_COHORT_SUBSCRIBERS and cancelled[mine].any():
            try:
                fits[int(c)] = fit_sbg(paid[mine], cancelled[mine])
            except ModelNotFitted:
                continue
    return SbgByCohort(pooled, fits)


def expected_future_payments(
    alpha: np.ndarray, beta: np.ndarray, paid: np.ndarray, renewals_due: np.ndarray
) -> np.ndarray:
    """E[renewals paid among the next `renewals_due` | the subscription has paid `paid` periods].

    Having survived opportunities 1..paid-1, the k-th next renewal is paid with probability
    S(paid + k - 1) / S(paid - 1): survival updates theta's Beta to (alpha, beta + paid - 1).
    """
    paid = np.asarray(paid, dtype=np.float64)
    due = np.asarray(renewals_due, dtype=np.int64)
    total = np.zeros_like(paid)
    start = betaln(alpha, beta + paid - 1.0)
    for k in range(1, int(due.max(initial=0)) + 1):
        total += np.where(k <= due, np.exp(betaln(alpha, beta + paid + k - 1.0) - start), 0.0)
    return total
