"""Adherence: proportion of days covered (PDC) per patient and medication, the PQA definition.

research/analytics.md §3: the measurement period runs from the index date (the first fill in
the period) to the period's end; a patient needs at least 2 fills on distinct dates and an
index date at least 91 days before the end; an early refill of the same drug starts the day
after the previous supply runs out; supply past the period's end is cut; PDC >= 80 % is
adherent. `pdc_of` walks one medication's fills (the reference); `pdc_table` computes the same
for millions of (patient, medication) groups in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt

ADHERENT_PERCENT = 80  # PQA threshold for diabetes, RAS antagonists, statins (§3.1)
MIN_PERIOD_DAYS = 91  # index date at least 91 days before the period's end (NCQA FAQ, §3.1)
TOO_FEW_FILLS = "fewer than 2 fills on distinct dates"
TOO_SHORT = f"first fill less than {MIN_PERIOD_DAYS} days before the period ends"
_EPOCH = date(1970, 1, 1)
_GROUP_STRIDE = 1 << 40  # larger than any day number plus supply: keeps groups apart in cummax


@dataclass(frozen=True, slots=True)
class Fill:
    """A dispensed supply: on `filled_on`, `days_supply` days of `medication` (PHI: never log it)."""

    filled_on: date
    days_supply: int
    medication: str


@dataclass(frozen=True, slots=True)
class MeasurementPeriod:
    start: date
    end: date  # inclusive

    @classmethod
    def trailing(cls, today: date, days: int = 365) -> MeasurementPeriod:
        """The `days` days ending today: a rolling year, for a metric that moves with the CRM."""
        return cls(today - timedelta(days=days - 1), today)

    @classmethod
    def calendar_year(cls, year: int) -> MeasurementPeriod:
        return cls(date(year, 1, 1), date(year, 12, 31))


@dataclass(frozen=True, slots=True)
class Pdc:
    medication: str
    fills: int  # fills inside the period
    index_date: date | None
    days_in_period: int  # index date to period end, inclusive; 0 when excluded
    days_covered: int
    excluded: str | None = None  # why no PDC is measured

    @property
    def pdc(self) -> float | None:
        if self.excluded is not None or self.days_in_period <= 0:
            return None
        return self.days_covered / self.days_in_period

    @property
    def adherent(self) -> bool | None:
        if self.pdc is None:
            return None
        return self.days_covered * 100 >= ADHERENT_PERCENT * self.days_in_period  # exact at 80 %


def pdc_of(
    fills: Sequence[Fill],
    period: MeasurementPeriod,
    *,
    shift_overlaps: bool = True,
    min_period_days: int = MIN_PERIOD_DAYS,
) -> Pdc:
    """PDC of one medication's fills (all fills must be of one medication; others are ignored).

    With `shift_overlaps=False` overlapping supplies are merged instead of carried forward (for
    comparison only; PQA shifts).
    """
    medication = fills[0].medication if fills else ""
    inside = sorted(
        (
            f
            for f in fills
            if f.medication == medication and period.start <= f.filled_on <= period.end
        ),
        key=lambda f: f.filled_on,
    )
    inside = [f for f in inside if f.days_supply > 0]
    if len({f.filled_on for f in inside}) < 2:
        return Pdc(medication, len(inside), None, 0, 0, TOO_FEW_FILLS)
    index = inside[0].filled_on
    if (period.end - index).days < min_period_days:
        return Pdc(medication, len(inside), index, 0, 0, TOO_SHORT)
    covered, next_free = 0, index
    for f in inside:
        start = max(f.filled_on, next_free)
        if shift_overlaps:  # the early refill waits for the previous supply to run out
            end = start + timedelta(days=f.days_supply - 1)
        else:  # the union of the supplies as dispensed
            end = f.filled_on + timedelta(days=f.days_supply - 1)
        last = min(end, period.end)
        if last >= start:
            covered += (last - start).days + 1
        next_free = max(next_free, end + timedelta(days=1))
    return Pdc(medication, len(inside), index, (period.end - index).days + 1, covered)


def pdc_by_medication(
    fills: Sequence[Fill], period: MeasurementPeriod, *, min_period_days: int = MIN_PERIOD_DAYS
) -> list[Pdc]:
    """One Pdc per medication, in order of each medication's first fill."""
    by_medication: dict[str, list[Fill]] = {}
    for f in sorted(fills, key=lambda f: f.filled_on):
        by_medication.setdefault(f.medication, []).append(f)
    return [
        pdc_of(group, period, min_period_days=min_period_days) for group in by_medication.values()
    ]


def pseudonyms(results: Sequence[Pdc]) -> list[str]:
    """ "medication 1", "medication 2"...: what logs, tables and CRMs see instead of the name."""
    return [f"medication {i + 1}" for i in range(len(results))]


def day_number(d: date) -> int:
    return (d - _EPOCH).days


IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PdcTable:
    """Per group (a patient's medication): PDC or NaN when excluded, and the figures behind it."""

    covered: IntArray
    days: IntArray  # 0 when excluded
    index: IntArray  # day number of the first fill in the period
    fills: IntArray
    distinct_dates: IntArray
    eligible: npt.NDArray[np.bool_]

    @property
    def pdc(self) -> npt.NDArray[np.float64]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.eligible, self.covered / np.maximum(self.days, 1), np.nan)

    @property
    def adherent(self) -> npt.NDArray[np.bool_]:
        return self.eligible & (self.covered * 100 >= ADHERENT_PERCENT * self.days)

    def result(self, g: int, medication: str) -> Pdc:
        """Group g as a Pdc, as `pdc_of` returns it."""
        fills = int(self.fills[g])
        if self.distinct_dates[g] < 2:
            return Pdc(medication, fills, None, 0, 0, TOO_FEW_FILLS)
        index = _EPOCH + timedelta(days=int(self.index[g]))
        if not self.eligible[g]:
            return Pdc(medication, fills, index, 0, 0, TOO_SHORT)
        return Pdc(medication, fills, index, int(self.days[g]), int(self.covered[g]))


def pdc_table(
    groups: int,
    group: IntArray,
    day: IntArray,
    supply: IntArray,
    period: MeasurementPeriod,
    *,
    min_period_days: int = MIN_PERIOD_DAYS,
) -> PdcTable:
    """PDC for `groups` groups at once: fill i belongs to `group[i]`, on day number `day[i]`.

    Shifting is a running maximum: with S the group's cumulative supply, the day after fill i's
    (shifted) supply ends is S_i + max over k <= i of (day_k - S_(k-1)).
    """
    start, end = day_number(period.start), day_number(period.end)
    keep = (day >= start) & (day <= end) & (supply > 0)
    g, d, s = group[keep], day[keep], supply[keep]
    order = np.lexsort((d, g))
    g, d, s = g[order], d[order], s[order]
    fills = np.bincount(g, minlength=groups)
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    new_date = first.copy()
    new_date[1:] |= d[1:] != d[:-1]
    distinct = np.bincount(g, weights=new_date, minlength=groups)
    index = np.full(groups, end + 1, dtype=np.int64)
    index[g[first]] = d[first]
    cum = np.cumsum(s)
    group_base = np.repeat(cum[first] - s[first], np.diff(np.append(np.flatnonzero(first), g.size)))
    local = cum - group_base  # S_i within the group
    running = np.maximum.accumulate(d - (local - s) + g * _GROUP_STRIDE) - g * _GROUP_STRIDE
    next_free = local + running
    first_day = next_free - s
    counted = np.clip(np.minimum(next_free - 1, end) - first_day + 1, 0, None)
    covered = np.bincount(g, weights=counted, minlength=groups).astype(np.int64)
    eligible = (distinct >= 2) & (end - index >= min_period_days)
    days = np.where(eligible, end - index + 1, 0)
    return PdcTable(
        np.where(eligible, covered, 0),
        days,
        index,
        fills.astype(np.int64),
        distinct.astype(np.int64),
        eligible,
    )
