"""Lifetime value: the formulas against Monte Carlo simulations of the processes they describe,
then the whole pipeline against the simulator's hidden spend, read back from the real store.

Expected numbers come from simulations with known parameters, never from the code under test.
Tolerances are a few standard errors of the simulated quantity (seeded, so deterministic).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy.stats import spearmanr

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.clv import (
    BgNbd,
    GammaGamma,
    ModelNotFitted,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    expected_order_value,
    fit_bgnbd,
    fit_gamma_gamma,
)
from telecrm.analytics.clv_scores import fit_clv, predict_clv
from telecrm.analytics.features import rfm_at
from telecrm.analytics.sbg import Sbg, expected_future_payments, fit_sbg
from telecrm.domain.events import parse_event
from tests.analytics.clv_population import population

if TYPE_CHECKING:
    from telecrm.bootstrap import Runtime

CALIBRATION_DAYS = 365.0
HOLDOUT_DAYS = 180.0


def simulate_bgnbd(
    m: BgNbd, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, purchases in the hold-out) for n customers whose first purchase is at 0.

    Straight from the story: Poisson purchases at rate lambda ~ Gamma(r, alpha), and after each
    purchase the customer leaves for good with probability p ~ Beta(a, b).
    """
    lam = rng.gamma(m.r, 1.0 / m.alpha, n)
    p = rng.beta(m.a, m.b, n)
    x, t_x, future, now = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        now = np.where(alive, now + rng.exponential(1.0 / lam), now)
        in_calibration = alive & (now <= CALIBRATION_DAYS)
        in_holdout = alive & (now > CALIBRATION_DAYS) & (now <= CALIBRATION_DAYS + HOLDOUT_DAYS)
        x += in_calibration
        t_x = np.where(in_calibration, now, t_x)
        future += in_holdout
        alive &= (now <= CALIBRATION_DAYS + HOLDOUT_DAYS) & (rng.random(n) >= p)
    return x, t_x, future


@pytest.mark.parametrize(
    "truth", [BgNbd(r=0.8, alpha=40.0, a=2.5, b=6.0), BgNbd(r=1.5, alpha=60.0, a=0.7, b=4.0)]
)
def test_bgnbd_likelihood_recovers_the_parameters_that_generated_the_purchases(
    truth: BgNbd,
) -> None:
    rng = np.random.default_rng(42)
    x, t_x, _ = simulate_bgnbd(truth, 30_000, rng)
    fitted = fit_bgnbd(x, t_x, np.full_like(x, CALIBRATION_DAYS))
    # r/alpha (mean purchase rate) and a/(a+b) (mean drop-out) are the well-identified pairs.
    assert fitted.r / fitted.alpha == pytest.approx(truth.r / truth.alpha, rel=0.05)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.1)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.25), name


@pytest.mark.parametrize(
    "truth", [BgNbd(r=0.8, alpha=40.0, a=2.5, b=6.0), BgNbd(r=0.8, alpha=40.0, a=0.6, b=3.0)]
)
def test_bgnbd_conditional_expectation_matches_what_simulated_customers_bought_next(
    truth: BgNbd,
) -> None:
    rng = np.random.default_rng(7)
    x, t_x, future = simulate_bgnbd(truth, 200_000, rng)
    expected = bgnbd_expected_purchases(
        truth, HOLDOUT_DAYS, x, t_x, np.full_like(x, CALIBRATION_DAYS)
    )
    assert expected.mean() == pytest.approx(future.mean(), rel=0.02)
    for k in (0, 1, 3, 6):
        group = x == k
        error = 4 * future[group].std() / np.sqrt(group.sum())
        assert abs(expected[group].mean() - future[group].mean()) < error, k


def test_bgnbd_unconditional_expectation_matches_the_simulated_mean() -> None:
    truth = BgNbd(r=0.8, alpha=40.0, a=2.5, b=6.0)
    x, _, _ = simulate_bgnbd(truth, 200_000, np.random.default_rng(3))
    error = 4 * x.std() / np.sqrt(len(x))
    assert abs(bgnbd_expected_purchases_new(truth, CALIBRATION_DAYS) - x.mean()) < error


def test_gamma_gamma_recovers_its_parameters_and_ranks_customers_by_true_spend() -> None:
    rng = np.random.default_rng(5)
    p, q, gamma = 6.0, 4.0, 30.0
    n = 20_000
    nu = rng.gamma(q, 1.0 / gamma, n)
    x = rng.integers(1, 8, n)
    orders = [rng.gamma(p, 1.0 / nu[i], x[i]) for i in range(n)]
    mean = np.array([o.mean() for o in orders])
    fitted = fit_gamma_gamma(x, mean)
    assert fitted.p == pytest.approx(p, rel=0.1)
    assert fitted.q == pytest.approx(q, rel=0.2)
    assert fitted.population_mean == pytest.approx(p * gamma / (q - 1), rel=0.05)
    true_mean = p / nu
    predicted = expected_order_value(fitted, x, mean)
    # Shrinkage estimator beats the raw mean in squared error (Bayes posterior mean).
    assert np.mean((predicted - true_mean) ** 2) < np.mean((mean - true_mean) ** 2)


def test_sbg_recovers_retention_from_censored_monthly_cohorts() -> None:
    rng = np.random.default_rng(11)
    alpha, beta = 1.2, 8.0
    n = 20_000
    theta = rng.beta(alpha, beta, n)
    lifetime = rng.geometric(theta)  # periods paid before cancelling at the next renewal
    age = rng.integers(1, 25, n)  # periods paid so far by the cutoff, per cohort
    cancelled = lifetime <= age
    paid = np.minimum(lifetime, age)
    fitted = fit_sbg(paid, cancelled)
    assert fitted.alpha == pytest.approx(alpha, rel=0.15)
    assert fitted.beta == pytest.approx(beta, rel=0.15)
    # Survival by the paper's recursion S(t) = S(t-1) (beta + t - 1) / (alpha + beta + t - 1).
    s, recursion = 1.0, []
    for t in range(1, 13):
        s *= (beta + t - 1) / (alpha + beta + t - 1)
        recursion.append(s)
    assert np.allclose(Sbg(alpha, beta).survival(np.arange(1, 13)), recursion)
    # Expected further renewals of survivors: checked against the simulated survivors.
    alive_at_3 = lifetime >= 3
    next_12 = np.minimum(lifetime[alive_at_3] - 3, 12)  # payments 4..15 that get made
    expected = expected_future_payments(
        np.array([alpha]), np.array([beta]), np.array([3.0]), np.array([12])
    )
    assert expected[0] == pytest.approx(next_12.mean(), rel=0.03)


def test_models_refuse_to_fit_too_little_data() -> None:
    with pytest.raises(ModelNotFitted, match="repeat buyers"):
        fit_bgnbd(np.array([0.0, 1.0]), np.array([0.0, 3.0]), np.array([10.0, 10.0]))
    with pytest.raises(ModelNotFitted, match="Gamma-Gamma"):
        fit_gamma_gamma(np.array([0.0, 2.0]), np.array([0.0, -5.0]))
    with pytest.raises(ModelNotFitted, match="cancellation"):
        fit_sbg(np.ones(50), np.zeros(50, dtype=bool))
    # A patient with no orders, or a single one, still gets a finite value.
    g = GammaGamma(p=6.0, q=4.0, gamma=30.0)
    assert np.isfinite(expected_order_value(g, np.array([0.0]), np.array([np.nan]))).all()


def _ingest(runtime: Runtime, events: list[dict]) -> None:
    now = max(runtime.clock.now(), datetime.fromisoformat(events[-1]["occurred_at"]))
    intake = runtime.intake()
    for start in range(0, len(events), 2000):
        batch = [parse_event(e, now=now) for e in events[start : start + 2000]]
        intake.accept(batch, source="import", actor="test")


def test_the_store_gives_back_the_history_the_platform_sent(runtime: Runtime) -> None:
    pop = population(300, 12, 8)
    _ingest(runtime, pop.events)
    stored = ea.from_store(runtime.engine, runtime.cipher())
    sent = ea.from_wire(pop.events)
    order = np.argsort(sent.keys)
    assert list(np.sort(stored.keys)) == list(sent.keys[order])
    remap = {k: i for i, k in enumerate(stored.keys)}
    to_stored = np.array([remap[k] for k in sent.keys])
    assert np.array_equal(np.sort(to_stored[sent.patient]), np.sort(stored.patient))
    assert np.allclose(np.sort(sent.t), np.sort(stored.t))
    assert np.nansum(stored.amount) == pytest.approx(np.nansum(sent.amount))
    cutoff = ea.to_days(pop.config.end)
    a, b = rfm_at(stored, cutoff), rfm_at(sent, cutoff)
    assert np.allclose(np.sort(a.monetary), np.sort(b.monetary))


def test_predicted_value_follows_the_simulators_hidden_spend() -> None:
    pop = population(2000, 24, 5)
    log = ea.from_wire(pop.events)
    cutoff = ea.to_days(pop.config.end) - CALIBRATION_DAYS
    model = fit_clv(log, cutoff)
    prediction = predict_clv(model, log, cutoff)
    value = prediction.clv_12m
    assert np.isfinite(value).all() and (value >= 0).all()

    latent = [pop.truth[k]["latent"] for k in log.keys]
    spend = np.array([t["spend_multiplier"] for t in latent])
    order_value = np.array([t["mean_order_value"] for t in latent])
    customers = value > 0
    assert customers.sum() > 300
    # Floors set below what was measured (0.31 and 0.95 here; docs/analytics.md).
    assert spearmanr(value[customers], spend[customers]).statistic > 0.2
    repeat = rfm_at(log, cutoff).x > 0
    assert spearmanr(prediction.expected_order_value[repeat], order_value[repeat]).statistic > 0.85
    # Calibration in the large: predicted revenue vs what the customers paid next year.
    later = (log.t >= cutoff) & np.isin(log.kind, (ea.ORDER, ea.RENEWAL_PAYMENT))
    paid = np.bincount(log.patient[later], weights=log.amount[later], minlength=log.patients)
    assert value.sum() == pytest.approx(paid[customers].sum(), rel=0.15)
