"""Lifetime value of one-off buyers: BG/NBD for how often they buy, Gamma-Gamma for how much.

Maximum likelihood with numpy/scipy (research/analytics.md §0, §1.2, §1.4, §1.6): `lifetimes`
is unmaintained and breaks on numpy 2, `btyd` is archived, and pymc-marketing's MCMC is far too
heavy for a nightly job over a million patients. Inputs are per patient: x = repeat purchases,
t_x = first-to-last purchase, T = first purchase to the cutoff (all in days), m = mean value of
the repeat purchases. Every expression is vectorised, so predicting for 10^6 patients is a
handful of array operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

MIN_REPEAT_BUYERS = 20  # fewer and the four BG/NBD parameters are not identified
MIN_SPEND_BUYERS = 10  # Gamma-Gamma fits on repeat buyers only


class ModelNotFitted(ValueError):
    """Too little data for a model: says how much there was and how much it needs."""


@dataclass(frozen=True, slots=True)
class BgNbd:
    """Purchase rate ~ Gamma(r, alpha) (alpha in days); drop-out after a purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """One order's value ~ Gamma(p, nu); nu ~ Gamma(q, gamma) across patients."""

    p: float
    q: float
    gamma: float

    @property
    def population_mean(self) -> float:
        return self.p * self.gamma / (self.q - 1.0)


def _fit(neg_ll: Callable[[np.ndarray], float], start: np.ndarray) -> np.ndarray:
    """Minimise over log-parameters (keeps them positive); L-BFGS-B, then Nelder-Mead if it stalls."""
    best = minimize(neg_ll, start, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * len(start))
    if not best.success:
        retry = minimize(neg_ll, best.x, method="Nelder-Mead", options={"maxiter": 4000})
        best = retry if retry.fun <= best.fun else best
    return np.exp(best.x)


# -- BG/NBD (Fader, Hardie & Lee 2005; Hardie note 004) --------------------------------------
def bgnbd_log_likelihood(m: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """Each patient's log L(r, alpha, a, b | x, t_x, T) (paper eq. 6, in log space)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    x = np.asarray(x, dtype=np.float64)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + big_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return a1 + a2 + np.logaddexp(a3, a4)


def fit_bgnbd(
    x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, weights: np.ndarray | None = None
) -> BgNbd:
    """Maximum likelihood; `weights` counts patients sharing one (x, t_x, T) row."""
    x, t_x, big_t = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if int(w[x > 0].sum()) < MIN_REPEAT_BUYERS:
        raise ModelNotFitted(
            f"BG/NBD needs at least {MIN_REPEAT_BUYERS} repeat buyers, got {int(w[x > 0].sum())}"
        )
    total = w.sum()
    scale = float(np.mean(big_t)) or 1.0

    def neg(theta: np.ndarray) -> float:
        r, alpha, a, b = np.exp(theta)
        ll = bgnbd_log_likelihood(BgNbd(r, alpha, a, b), x, t_x, big_t)
        value = -float(np.dot(w, ll)) / total
        return value if np.isfinite(value) else 1e12

    r, alpha, a, b = _fit(neg, np.log([1.0, scale, 1.0, 3.0]))
    return BgNbd(r, alpha, a, b)


def bgnbd_p_alive(m: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """P(still buying | history); 1 for patients with no repeat purchase (a BG/NBD property)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_odds = (
            np.log(m.a)
            - np.log(np.maximum(m.b + x - 1.0, 1e-300))
            + (m.r + x) * (np.log(m.alpha + big_t) - np.log(m.alpha + t_x))
        )
    odds = np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)
    return 1.0 / (1.0 + odds)


def _log_hyp2f1(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1, falling back to Euler's transformation where the direct series overflows."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        direct = np.log(hyp2f1(a, b, c, z))
        euler = np.log(hyp2f1(c - a, c - b, c, z)) + (c - a - b) * np.log1p(-z)
    return np.where(np.isfinite(direct), direct, euler)


def bgnbd_expected_purchases(
    m: BgNbd, horizon: float, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T + horizon] | x, t_x, T] (paper eq. 10).

    The closed form holds for a < 1 too (both factors change sign); the Monte Carlo test in
    tests/analytics/test_clv.py checks it on both sides of 1.
    """
    if m.a == 1.0:
        raise ModelNotFitted("BG/NBD fit has a = 1: the closed form divides by a - 1")
    x = np.asarray(x, dtype=np.float64)
    big_t = np.asarray(big_t, dtype=np.float64)
    z = horizon / (m.alpha + big_t + horizon)
    log_h = _log_hyp2f1(m.r + x, m.b + x, m.a + m.b + x - 1.0, z)
    ratio = (m.r + x) * (np.log(m.alpha + big_t) - np.log(m.alpha + big_t + horizon))
    numerator = (m.a + m.b + x - 1.0) / (m.a - 1.0) * -np.expm1(log_h + ratio)
    return numerator * bgnbd_p_alive(m, x, t_x, big_t)


def bgnbd_expected_purchases_new(m: BgNbd, horizon: float) -> float:
    """E[X(t)] for a patient just starting to buy (paper eq. 9): the population mean."""
    if m.a == 1.0:
        raise ModelNotFitted("BG/NBD fit has a = 1: the closed form divides by a - 1")
    z = horizon / (m.alpha + horizon)
    h = float(hyp2f1(m.r, m.b, m.a + m.b - 1.0, z))
    return (m.a + m.b - 1.0) / (m.a - 1.0) * (1.0 - (m.alpha / (m.alpha + horizon)) ** m.r * h)


# -- Gamma-Gamma (Fader, Hardie & Lee 2005 "RFM and CLV"; Hardie note 025) --------------------
def gamma_gamma_log_likelihood(g: GammaGamma, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Each repeat buyer's log-likelihood of their mean order value over x orders."""
    p, q, gamma = g.p, g.q, g.gamma
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + (px - 1.0) * np.log(mean)
        + px * np.log(x)
        - (px + q) * np.log(gamma + x * mean)
    )


def fit_gamma_gamma(x: np.ndarray, mean: np.ndarray) -> GammaGamma:
    """Maximum likelihood on repeat buyers (x > 0, mean > 0); others are ignored."""
    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    keep = (x > 0) & (mean > 0) & np.isfinite(mean)
    if int(keep.sum()) < MIN_SPEND_BUYERS:
        raise ModelNotFitted(
            f"Gamma-Gamma needs at least {MIN_SPEND_BUYERS} repeat buyers with a positive"
            f" order value, got {int(keep.sum())}"
        )
    xs, ms = x[keep], mean[keep]
    level = float(np.mean(ms))

    def neg(theta: np.ndarray) -> float:
        p, q, gamma = np.exp(theta)
        value = -float(np.mean(gamma_gamma_log_likelihood(GammaGamma(p, q, gamma), xs, ms)))
        return value if np.isfinite(value) else 1e12

    p, q, gamma = _fit(neg, np.log([2.0, 3.0, level]))
    if q <= 1.0:
        raise ModelNotFitted("Gamma-Gamma fit has q <= 1: the mean order value is undefined")
    return GammaGamma(p, q, gamma)


def expected_order_value(g: GammaGamma, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """E[value of a future order | x, mean]: the patient's mean shrunk to the population's."""
    x = np.asarray(x, dtype=np.float64)
    m = np.where((x > 0) & np.isfinite(mean), mean, 0.0)
    return g.p * (g.gamma + x * m) / (g.p * x + g.q - 1.0)


def beta_mean_dropout(m: BgNbd) -> float:
    """Mean drop-out probability per purchase, a/(a+b) (for reports)."""
    return m.a / (m.a + m.b)
