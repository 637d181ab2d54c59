"""Lead score: points for fit (who the patient is) plus decaying points for behaviour, with reasons.

score = sum of fit points + sum over behaviour events of points * 0.5 ** (age_days / half_life),
as HubSpot and Salesforce Account Engagement score fit and (decaying) engagement
(research/analytics.md §4). Every rule's points now are kept, so the reasons sum to the score.
A reason names its rule ("has insurance"), never the value behind it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from telecrm.analytics.event_table import EventTable, FloatArray
from telecrm.analytics.scoring_config import FitRule, LeadConfig
from telecrm.domain.clock import to_micros

ProfileColumns = Mapping[str, Sequence[Any]]  # catalog field -> one value per patient (or None)


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    points: float


@dataclass(frozen=True, slots=True)
class LeadScore:
    score: float
    fit: float
    behaviour: float
    reasons: tuple[Reason, ...]  # rules that gave points, largest first


@dataclass(frozen=True, slots=True)
class LeadPoints:
    """Points per rule (rows, in config order: fit rules then behaviour) per patient (columns)."""

    rules: tuple[str, ...]
    fit_rules: int
    points: FloatArray

    @property
    def fit(self) -> FloatArray:
        return self.points[: self.fit_rules].sum(axis=0)

    @property
    def behaviour(self) -> FloatArray:
        return self.points[self.fit_rules :].sum(axis=0)

    @property
    def score(self) -> FloatArray:
        return self.points.sum(axis=0)

    def for_patient(self, i: int) -> LeadScore:
        column = self.points[:, i]
        reasons = sorted(
            (Reason(rule, float(p)) for rule, p in zip(self.rules, column, strict=True) if p),
            key=lambda r: -abs(r.points),
        )
        fit = float(column[: self.fit_rules].sum())
        behaviour = float(column[self.fit_rules :].sum())
        return LeadScore(fit + behaviour, fit, behaviour, tuple(reasons))


def columns_of(
    profiles: Sequence[Mapping[str, Any]], fields: frozenset[str]
) -> dict[str, list[Any]]:
    """Catalog values per patient (dicts) as columns of the fields the rules read."""
    return {name: [values.get(name) for values in profiles] for name in fields}


def age_on(born: Any, today: date) -> int | None:
    """Whole years on `today` from an ISO date_of_birth, or None when missing or unreadable."""
    if isinstance(born, str):
        try:
            born = date.fromisoformat(born[:10])
        except ValueError:
            return None
    if not isinstance(born, date):
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _fit_matches(
    rule: FitRule, profiles: ProfileColumns, n: int, today: date
) -> npt.NDArray[np.bool_]:
    if rule.field == "age":
        column: Sequence[Any] = [
            age_on(v, today) for v in profiles.get("date_of_birth", [None] * n)
        ]
    else:
        column = profiles.get(rule.field, [None] * n)
    if rule.present is not None:
        hit = np.fromiter((_present(v) for v in column), dtype=bool, count=n)
        return hit == rule.present
    if rule.in_ is not None:
        wanted = set(rule.in_)
        return np.fromiter((_hashable(v) and v in wanted for v in column), dtype=bool, count=n)
    assert rule.between is not None
    low, high = rule.between
    numbers = np.fromiter((_number(v) for v in column), dtype=np.float64, count=n)
    with np.errstate(invalid="ignore"):
        return (numbers >= low) & (numbers <= high)  # NaN (missing) matches nothing


def lead_points(
    config: LeadConfig, profiles: ProfileColumns, events: EventTable, now: datetime
) -> LeadPoints:
    """Every patient's points per rule: the vectorised form of `lead_score`."""
    n, today = events.patients, now.date()
    rows: list[FloatArray] = []
    for fit_rule in config.fit:
        hit = _fit_matches(fit_rule, profiles, n, today)
        rows.append(np.where(hit, float(fit_rule.points), 0.0))
    return _with_behaviour(config, rows, events, now)


def lead_points_coded(
    config: LeadConfig,
    coded: Mapping[str, tuple[npt.NDArray[np.int64], Sequence[Any]]],
    events: EventTable,
    now: datetime,
) -> LeadPoints:
    """`lead_points` with each profile field given as codes into its distinct values: a fit rule
    is tested once per distinct value (a million patients have a few thousand birth dates)."""
    today = now.date()
    rows: list[FloatArray] = []
    for fit_rule in config.fit:
        name = "date_of_birth" if fit_rule.field == "age" else fit_rule.field
        # A field nobody has a value for: everyone holds None.
        codes, book = coded.get(name, (np.zeros(events.patients, dtype=np.int64), [None]))
        hit = _fit_matches(fit_rule, {name: book}, len(book), today)[codes]
        rows.append(np.where(hit, float(fit_rule.points), 0.0))
    return _with_behaviour(config, rows, events, now)


def _with_behaviour(
    config: LeadConfig, rows: list[FloatArray], events: EventTable, now: datetime
) -> LeadPoints:
    now_us = to_micros(now)
    for rule in config.behaviour:
        counts = events.decayed_counts(
            rule.event, now_us, config.behaviour_half_life_days, max_per_day=rule.max_per_day
        )
        rows.append(counts * rule.points)
    points = np.vstack(rows) if rows else np.zeros((0, events.patients))
    return LeadPoints(config.rule_names, len(config.fit), points)


def lead_score(
    config: LeadConfig,
    profile: Mapping[str, Any],
    events: Sequence[tuple[str, datetime]],
    now: datetime,
) -> LeadScore:
    """One patient's lead score from their catalog values and (event type, occurred_at) pairs."""
    columns = {name: [profile.get(name)] for name in config.profile_fields()}
    return lead_points(config, columns, EventTable.for_one(events), now).for_patient(0)
