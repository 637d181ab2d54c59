"""Churn risk: calibrated gradient boosting on features at a cutoff, judged on a later period.

Training rows come from one or more earlier cutoffs whose label windows close before the
evaluation cutoff, so nothing about the evaluated period leaks into training (analytics.md
§2.1). Probabilities are calibrated with Platt scaling (sigmoid); isotonic only when each
calibration fold has at least ISOTONIC_MIN_ROWS rows (§2.2). The score is the probability of
churning within `horizon_days`; lifecycle.evaluate moves a customer to at_risk when it reaches
Thresholds.churn_risk_cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, roc_auc_score

from telecrm.analytics.clv import ModelNotFitted
from telecrm.analytics.event_arrays import EventArrays
from telecrm.analytics.features import FEATURES, churn_labels, churn_rows

DEFAULT_HORIZON_DAYS = 60  # research §2.1: H = 30 or 60
CALIBRATION_FOLDS = 3
ISOTONIC_MIN_ROWS = 1000  # scikit-learn warns isotonic overfits below ~1,000 rows
MIN_TRAINING_ROWS = 200
MIN_PER_CLASS = 20
RELIABILITY_BINS = 10


@dataclass(frozen=True, slots=True)
class ChurnModel:
    calibrated: CalibratedClassifierCV
    horizon_days: float
    method: str  # "sigmoid" | "isotonic"
    trained_on: tuple[float, ...]  # cutoffs (days since epoch)
    rows: int
    base_rate: float
    features: tuple[str, ...] = FEATURES


def training_set(
    log: EventArrays, cutoffs: tuple[float, ...], horizon_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (features, labels) over `cutoffs`."""
    xs, ys = [], []
    for cutoff in cutoffs:
        rows = churn_rows(log, cutoff)
        xs.append(rows.features)
        ys.append(churn_labels(log, rows, cutoff, horizon_days))
    return np.vstack(xs), np.concatenate(ys)


def train_churn_model(
    log: EventArrays,
    cutoffs: tuple[float, ...],
    *,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    method: str = "sigmoid",
    seed: int = 0,
) -> ChurnModel:
    """Fit on rows at `cutoffs`; each cutoff's label window must end before the data does."""
    x, y = training_set(log, cutoffs, horizon_days)
    positives = int(y.sum())
    if len(y) < MIN_TRAINING_ROWS or min(positives, len(y) - positives) < MIN_PER_CLASS:
        raise ModelNotFitted(
            f"churn model needs {MIN_TRAINING_ROWS} rows with {MIN_PER_CLASS} of each outcome;"
            f" got {len(y)} rows, {positives} churned"
        )
    if method == "isotonic" and len(y) // CALIBRATION_FOLDS < ISOTONIC_MIN_ROWS:
        method = "sigmoid"
    booster = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.08,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    calibrated = CalibratedClassifierCV(booster, method=method, cv=CALIBRATION_FOLDS)
    # A feature no patient has (no session events when patients come from a database source)
    # is all NaN, which HistGradientBoosting's binning cannot take (scikit-learn 1.9): make it
    # a constant, which carries as little information and which the booster never splits on.
    calibrated.fit(np.where(np.isnan(x).all(axis=0), 0.0, x), y)
    return ChurnModel(
        calibrated=calibrated,
        horizon_days=horizon_days,
        method=method,
        trained_on=tuple(cutoffs),
        rows=len(y),
        base_rate=positives / len(y),
    )


def predict_churn(model: ChurnModel, rows: np.ndarray) -> np.ndarray:
    """P(churn within the model's horizon) per row of features (columns in FEATURES order).

    Pure and vectorised; always finite and in [0, 1], so it can be written to a CRM field.
    """
    if rows.shape[0] == 0:
        return np.zeros(0)
    p = model.calibrated.predict_proba(rows)[:, 1]
    return np.clip(np.nan_to_num(p, nan=model.base_rate), 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    low: float
    high: float
    rows: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True, slots=True)
class ChurnReport:
    cutoff: float
    rows: int
    base_rate: float
    auc: float
    brier: float
    brier_of_base_rate: float  # what always predicting the base rate scores
    calibration_error: float  # expected calibration error over the reliability bins
    top_decile_rate: float
    lift_top_decile: float
    recency_only_auc: float  # baseline: days since last purchase alone
    bins: list[ReliabilityBin] = field(default_factory=list)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[ReliabilityBin]:
    """Equal-width bins of predicted probability: mean prediction vs observed churn rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mine = which == b
        if mine.any():
            out.append(
                ReliabilityBin(
                    low=float(edges[b]),
                    high=float(edges[b + 1]),
                    rows=int(mine.sum()),
                    mean_predicted=float(p[mine].mean()),
                    observed_rate=float(y[mine].mean()),
                )
            )
    return out


def top_decile(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(churn rate among the 10 % highest scored, that rate over the overall rate)."""
    k = max(1, int(np.ceil(len(p) * 0.1)))
    top = np.argsort(-p, kind="stable")[:k]
    rate = float(y[top].mean())
    base = float(y.mean())
    return rate, rate / base if base > 0 else float("nan")


def evaluate_churn(model: ChurnModel, log: EventArrays, cutoff: float) -> ChurnReport:
    """Score the customers at `cutoff` and compare with what happened in the next horizon."""
    rows = churn_rows(log, cutoff)
    y = churn_labels(log, rows, cutoff, model.horizon_days)
    if len(y) == 0 or y.min() == y.max():
        raise ModelNotFitted("the evaluation period needs churned and retained customers")
    p = predict_churn(model, rows.features)
    bins = reliability(y, p)
    ece = sum(b.rows * abs(b.mean_predicted - b.observed_rate) for b in bins) / len(y)
    rate, lift = top_decile(y, p)
    recency = np.nan_to_num(rows.features[:, FEATURES.index("days_since_last_purchase")])
    base = float(y.mean())
    return ChurnReport(
        cutoff=cutoff,
        rows=len(y),
        base_rate=base,
        auc=float(roc_auc_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        brier_of_base_rate=base * (1 - base),
        calibration_error=float(ece),
        top_decile_rate=rate,
        lift_top_decile=lift,
        recency_only_auc=float(roc_auc_score(y, recency)),
        bins=bins,
    )
