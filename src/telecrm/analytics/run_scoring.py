"""Every patient's five numbers from a run's inputs at once, and which of them changed.

The same vectorised functions the chunked scoring calls (`lead_points`, `engagement_scores`,
`pdc_table`, the population models' predictions), over all patients' columns in one go: per
patient, a score depends only on that patient's rows, so scoring everyone at once gives the
numbers scoring them chunk by chunk gives.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import numpy.typing as npt

from telecrm.analytics.adherence import MeasurementPeriod, pdc_table
from telecrm.analytics.engagement import engagement_scores
from telecrm.analytics.lead_score import lead_points_coded
from telecrm.analytics.population import PopulationScores
from telecrm.analytics.run_inputs import SCORE_FIELDS, RunInputs
from telecrm.analytics.scoring_config import ScoringConfig

FloatArray = npt.NDArray[np.float64]
DIGITS = {
    "lead_score": 1,
    "engagement_score": 1,
    "churn_risk": 3,
    "predicted_ltv": 2,
    "adherence_pdc": 3,
}


def rounded(value: float | None, name: str) -> float | None:
    """As stored and sent: rounded, and None for anything not finite."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DIGITS[name])


def mean_pdc(inputs: RunInputs, period: MeasurementPeriod) -> FloatArray:
    """Per patient: the mean PDC over their medications measured in `period`, NaN if none."""
    n = inputs.patients
    stride = len(inputs.medications) + 1
    group_key = inputs.fill_patient * stride + inputs.fill_medication
    groups, group = np.unique(group_key, return_inverse=True)
    table = pdc_table(len(groups), group.ravel(), inputs.fill_day, inputs.fill_supply, period)
    pdc = table.pdc
    owner = groups // stride
    measured = ~np.isnan(pdc)
    total = np.bincount(owner[measured], weights=pdc[measured], minlength=n)
    count = np.bincount(owner[measured], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def score_inputs(
    inputs: RunInputs, config: ScoringConfig, now: datetime, population: PopulationScores
) -> FloatArray:
    """(patients, 5) in `SCORE_FIELDS` order, unrounded; NaN where a score is empty."""
    n = inputs.patients
    adherence = mean_pdc(inputs, MeasurementPeriod.trailing(now.date()))
    coded = {name: (c.codes, c.book) for name, c in inputs.fit.items()}
    lead = lead_points_coded(config.lead, coded, inputs.events, now).score
    engagement = engagement_scores(
        config.engagement,
        inputs.events,
        now,
        features_used=inputs.features_used.tolist(),
        adherence=adherence.tolist(),
    ).score
    position = {k: i for i, k in enumerate(inputs.keys)}
    churn = np.full(n, np.nan)
    for key, risk in population.churn.items():
        i = position.get(key)
        if i is not None:
            churn[i] = risk
    ltv = np.full(n, 0.0 if population.ltv_fitted else np.nan)
    for key, value in population.ltv.items():
        i = position.get(key)
        if i is not None:
            ltv[i] = value
    return np.column_stack([lead, engagement, churn, ltv, adherence]).astype(np.float64)


def shown(raw: FloatArray) -> FloatArray:
    """`raw` (patients, 5) rounded as stored and sent, NaN where empty: exactly what `rounded`
    gives for each number. numpy rounds x as rint(x * 10**d) / 10**d, which is Python's
    correctly rounded result unless x * 10**d is within float error of a half unit (or too
    large for that error to be small); those few numbers are rounded by Python (`rounded`)."""
    scale = np.array([10.0 ** DIGITS[n] for n in SCORE_FIELDS])
    finite = np.isfinite(raw)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = raw * scale
        out = np.where(finite, np.rint(scaled) / scale, np.nan)
        near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
        huge = np.abs(scaled) >= 2.0**50  # x * 10**d no longer exact to a millionth
    for i, j in zip(*np.nonzero(finite & (near_half | huge)), strict=True):
        out[i, j] = rounded(float(raw[i, j]), SCORE_FIELDS[j])
    return out


def changed_rows(now: FloatArray, held: FloatArray) -> npt.NDArray[np.intp]:
    """Patients whose shown numbers differ from the ones they hold (NaN: empty)."""
    same = (now == held) | (np.isnan(now) & np.isnan(held))
    return np.flatnonzero(~same.all(axis=1))


def as_stored(row: list[float]) -> dict[str, float | None]:
    """One patient's shown numbers (a row of `shown`, as a list) as stored and sent."""
    return {n: (None if v != v else v) for n, v in zip(SCORE_FIELDS, row, strict=True)}
