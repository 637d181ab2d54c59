"""Weekly paid orders: a Holt-Winters forecast with intervals, and its rolling-origin backtest
against the seasonal-naive benchmark (research/analytics.md §5).

The model is statsmodels' ExponentialSmoothing: additive damped trend plus additive yearly
seasonality (52 weeks) when the history holds two full years, otherwise the damped trend alone
(the result says so). Intervals come from simulating the fitted model with bootstrapped
residuals, seeded. Accuracy is MASE (headline; its scale fixed once per series from the first
training window's seasonal-naive error, so folds are comparable) and sMAPE (the 0-200 form).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, select
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from telecrm.domain.clock import to_micros
from telecrm.ingest.tables import events

SEASON_WEEKS = 52  # weekly data, yearly cycle (analytics.md §5.1)
MIN_WEEKS = 8  # below this a trend cannot be told from noise; we refuse to forecast
US_PER_WEEK = 7 * 86_400_000_000
SIMULATIONS = 1000  # interval draws: enough for stable 2.5 % / 97.5 % quantiles


class ForecastUnavailable(ValueError):
    """Too little history to fit or to backtest; the message says how much is needed."""


@dataclass(frozen=True, slots=True)
class WeeklySeries:
    """Counts per complete ISO week (Monday 00:00 UTC), oldest first."""

    first_week: date
    counts: np.ndarray  # float64

    def week(self, i: int) -> date:
        return self.first_week + timedelta(weeks=i)


@dataclass(frozen=True, slots=True)
class Forecast:
    mean: np.ndarray
    lower80: np.ndarray
    upper80: np.ndarray
    lower95: np.ndarray
    upper95: np.ndarray
    seasonal: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Backtest:
    horizon: int
    origins: list[int]  # index of the first forecast week of each fold
    scale: float  # the fixed MASE denominator
    model_mase: float
    model_smape: float
    naive_mase: float
    naive_smape: float
    seasonal_folds: int  # folds whose training window was long enough for seasonality
    fold_forecasts: list[np.ndarray] = field(default_factory=list)

    @property
    def beats_naive(self) -> bool:
        return self.model_mase < self.naive_mase


def monday_of(at: datetime) -> datetime:
    day = at.astimezone(UTC).date()
    start = day - timedelta(days=day.weekday())
    return datetime(start.year, start.month, start.day, tzinfo=UTC)


def weekly_counts(times_us: np.ndarray, *, as_of: datetime) -> WeeklySeries:
    """Events per complete week before `as_of` (the week `as_of` falls in is not complete)."""
    times = np.asarray(times_us, dtype=np.int64)
    end = to_micros(monday_of(as_of))
    times = times[times < end]
    if len(times) == 0:
        return WeeklySeries(monday_of(as_of).date(), np.zeros(0))
    first = to_micros(monday_of(datetime.fromtimestamp(int(times.min()) / 1e6, UTC)))
    weeks = (end - first) // US_PER_WEEK
    counts = np.bincount((times - first) // US_PER_WEEK, minlength=weeks).astype(np.float64)
    return WeeklySeries(datetime.fromtimestamp(first / 1e6, UTC).date(), counts)


def weekly_orders(conn: Connection, *, as_of: datetime) -> WeeklySeries:
    """Paid orders (one-off and recurring) per week, from the event log's clear columns only."""
    rows = conn.execute(select(events.c.occurred_us).where(events.c.type == "order.paid"))
    return weekly_counts(np.fromiter((r[0] for r in rows), dtype=np.int64), as_of=as_of)


def seasonal_naive(history: np.ndarray, horizon: int, season: int = SEASON_WEEKS) -> np.ndarray:
    """Same week last year; the last value when there is less than a year."""
    y = np.asarray(history, dtype=np.float64)
    if len(y) >= season:
        last_year = y[len(y) - season :]
        return np.asarray([last_year[i % season] for i in range(horizon)])
    return np.full(horizon, y[-1])


def mase_scale(history: np.ndarray, season: int = SEASON_WEEKS) -> float:
    """In-sample MAE of the seasonal-naive forecast (naive when shorter than two seasons)."""
    y = np.asarray(history, dtype=np.float64)
    lag = season if len(y) > season else 1
    scale = float(np.mean(np.abs(y[lag:] - y[:-lag]))) if len(y) > lag else 0.0
    if scale == 0.0:
        raise ForecastUnavailable("the history is constant, so MASE is undefined")
    return scale


def smape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Symmetric MAPE, 0-200 form; a week where both are 0 counts as a perfect forecast."""
    a, f = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    denom = np.abs(a) + np.abs(f)
    terms = np.divide(2 * np.abs(a - f), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(terms))


def forecast(
    history: np.ndarray,
    horizon: int,
    *,
    season: int = SEASON_WEEKS,
    seed: int = 0,
    intervals: bool = True,
) -> Forecast:
    """Holt-Winters point forecast with 80 % and 95 % intervals, never below zero.

    `intervals=False` skips the simulation (the backtest needs only the point forecast); the
    interval arrays then equal the mean.
    """
    y = np.asarray(history, dtype=np.float64)
    if len(y) < MIN_WEEKS:
        raise ForecastUnavailable(f"need at least {MIN_WEEKS} complete weeks, have {len(y)}")
    seasonal = len(y) >= 2 * season
    model = ExponentialSmoothing(
        y,
        trend="add",
        damped_trend=True,
        seasonal="add" if seasonal else None,
        seasonal_periods=season if seasonal else None,
        initialization_method="estimated",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on short, noisy series
        fit = model.fit(optimized=True)
    mean = np.clip(np.asarray(fit.forecast(horizon), dtype=np.float64), 0, None)
    note = None
    if not seasonal:
        note = f"trend only: yearly seasonality needs {2 * season} weeks of history, have {len(y)}"
    if not intervals:
        return Forecast(mean, mean, mean, mean, mean, seasonal, note)
    rng = np.random.default_rng(seed)
    errors = rng.choice(np.asarray(fit.resid, dtype=np.float64), size=(horizon, SIMULATIONS))
    paths = np.asarray(
        fit.simulate(horizon, repetitions=SIMULATIONS, random_errors=errors), dtype=np.float64
    ).reshape(horizon, SIMULATIONS)
    q = np.clip(np.quantile(paths, [0.025, 0.10, 0.90, 0.975], axis=1), 0, None)
    return Forecast(mean, q[1], q[2], q[0], q[3], seasonal, note)


def backtest(
    history: np.ndarray,
    *,
    horizon: int = 13,
    folds: int = 8,
    step: int = 4,
    season: int = SEASON_WEEKS,
) -> Backtest:
    """Rolling origin, expanding window: refit at each origin, forecast `horizon` weeks.

    Origins are spaced `step` weeks apart and end where the last fold's horizon meets the
    end of the history. The first training window must be at least MIN_WEEKS long.
    """
    y = np.asarray(history, dtype=np.float64)
    last = len(y) - horizon
    origins = [o for o in range(last - step * (folds - 1), last + 1, step) if o >= MIN_WEEKS]
    if not origins:
        raise ForecastUnavailable(
            f"a backtest of {horizon} weeks needs at least {MIN_WEEKS + horizon} complete "
            f"weeks, have {len(y)}"
        )
    scale = mase_scale(y[: origins[0]], season)
    model_err: list[np.ndarray] = []
    naive_err: list[np.ndarray] = []
    model_smapes: list[float] = []
    naive_smapes: list[float] = []
    fold_forecasts: list[np.ndarray] = []
    seasonal_folds = 0
    for origin in origins:
        train, actual = y[:origin], y[origin : origin + horizon]
        fc = forecast(train, horizon, season=season, intervals=False)
        naive = seasonal_naive(train, horizon, season)
        seasonal_folds += fc.seasonal
        fold_forecasts.append(fc.mean)
        model_err.append(np.abs(actual - fc.mean))
        naive_err.append(np.abs(actual - naive))
        model_smapes.append(smape(actual, fc.mean))
        naive_smapes.append(smape(actual, naive))
    return Backtest(
        horizon=horizon,
        origins=origins,
        scale=scale,
        model_mase=float(np.mean(np.concatenate(model_err)) / scale),
        model_smape=float(np.mean(model_smapes)),
        naive_mase=float(np.mean(np.concatenate(naive_err)) / scale),
        naive_smape=float(np.mean(naive_smapes)),
        seasonal_folds=seasonal_folds,
        fold_forecasts=fold_forecasts,
    )
