"""The weekly-orders forecast: error measures by hand, weekly bucketing, the backtest against
seasonal-naive on simulated seasonal data, too-short history, and the chart files."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from xml.etree import ElementTree

import numpy as np
import pytest

from telecrm.analytics.charts import forecast_chart
from telecrm.analytics.forecast import (
    ForecastUnavailable,
    backtest,
    forecast,
    mase_scale,
    seasonal_naive,
    smape,
    weekly_counts,
)
from telecrm.domain.clock import to_micros
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate


def test_smape_mase_scale_and_seasonal_naive_by_hand() -> None:
    assert smape(np.array([100.0, 0.0]), np.array([50.0, 0.0])) == pytest.approx(
        100 * (2 * 50 / 150) / 2
    )
    # season 2: diffs |3-1|, |4-2|, |9-3| -> mean 10/3
    assert mase_scale(np.array([1.0, 2.0, 3.0, 4.0, 9.0]), season=2) == pytest.approx(10 / 3)
    np.testing.assert_array_equal(
        seasonal_naive(np.array([1.0, 2.0, 3.0]), 4, season=2), [2, 3, 2, 3]
    )
    with pytest.raises(ForecastUnavailable, match="constant"):
        mase_scale(np.ones(10), season=2)


def test_orders_are_counted_per_complete_monday_week() -> None:
    monday = datetime(2025, 3, 3, tzinfo=UTC)
    times = [
        monday,
        monday + timedelta(days=6, hours=23),
        monday + timedelta(days=7),
        monday + timedelta(days=15),
    ]
    s = weekly_counts(np.array([to_micros(t) for t in times]), as_of=monday + timedelta(days=16))
    assert s.first_week == date(2025, 3, 3)
    assert s.counts.tolist() == [2.0, 1.0]  # the third week is not over: left out


def test_too_little_history_is_a_clear_refusal_and_short_history_drops_seasonality() -> None:
    with pytest.raises(ForecastUnavailable, match="at least 8"):
        forecast(np.arange(5.0), 4)
    noisy = 20 + np.arange(30.0) + np.random.default_rng(2).normal(0, 3, 30)
    fc = forecast(noisy, 4)
    assert not fc.seasonal and fc.note and "104 weeks" in fc.note
    assert (fc.lower95 <= fc.lower80).all() and (fc.lower80 <= fc.mean + 1e-9).all()
    assert (fc.mean <= fc.upper80 + 1e-9).all() and (fc.upper80 <= fc.upper95).all()


def _simulated_weekly_orders() -> tuple[np.ndarray, SimulationConfig]:
    # Three years with a strong New-Year acquisition peak so the weekly orders have a season.
    config = SimulationConfig(
        patients=3000, months=36, seed=5, start=date(2023, 1, 2), yearly_amplitude=0.5
    )
    times = np.array(
        [
            to_micros(datetime.fromisoformat(e["occurred_at"]))
            for e in generate(config)
            if e["type"] == "order.paid"
        ]
    )
    return weekly_counts(times, as_of=config.end).counts, config


def test_holt_winters_beats_seasonal_naive_on_simulated_orders(tmp_path) -> None:
    y, _ = _simulated_weekly_orders()
    assert len(y) >= 150
    bt = backtest(y, horizon=13, folds=8)
    assert bt.seasonal_folds == len(bt.origins) == 8
    # Why it should: orders grow as subscribers accumulate, and seasonal naive repeats last
    # year's lower level, while the damped trend follows the growth.
    assert bt.model_mase < bt.naive_mase
    assert bt.model_smape < bt.naive_smape
    fc = forecast(y, 12, seed=1)
    assert fc.seasonal
    np.testing.assert_array_equal(forecast(y, 12, seed=1).upper95, fc.upper95)  # seeded
    paths = forecast_chart(_series(y), fc, tmp_path, bt=bt)
    png, svg = paths
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")  # noqa: S314 (our own file)


def test_on_white_noise_seasonal_naive_is_not_beaten_by_much_and_the_backtest_says_so() -> None:
    # A control: with no trend and no season, MASE near 1 for both is the honest answer.
    y = np.random.default_rng(3).poisson(50, size=140).astype(float)
    bt = backtest(y, horizon=8, folds=6)
    assert bt.model_mase < 1.0 < bt.naive_mase * 1.3
    assert bt.scale == pytest.approx(mase_scale(y[: bt.origins[0]]))


def _series(y: np.ndarray):
    from telecrm.analytics.forecast import WeeklySeries

    return WeeklySeries(date(2023, 1, 2), y)
