"""Cohort retention: patients grouped by the month of their first paid order, and the share of
each cohort still purchasing (any paid order) or still subscribed in each later month.

Month 0 is the cohort's own month, so purchasing retention there is 100 % by definition. A
subscription counts as held in a month if its span overlaps the month: the span runs from its
first event (start, renewal or recurring payment) to the end of the paid period its cancellation
names, or to `as_of` while it is not cancelled. Months that have not fully elapsed at `as_of`
are not observed (NaN), so the newest cohorts show fewer columns instead of false drops.
Orders with a zero or negative amount (refund corrections) are not purchases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.funnels import month_index, month_label
from telecrm.analytics.small_cells import MIN_CELL

US_PER_DAY = 86_400_000_000


@dataclass(frozen=True, slots=True)
class RetentionMatrix:
    """Rows are cohorts (first-order month), columns are months since (0..months-1)."""

    cohorts: list[str]
    sizes: np.ndarray  # int64 patients per cohort
    purchasing: np.ndarray  # float64 share, NaN where not observed or suppressed
    subscribed: np.ndarray  # float64 share, NaN where not observed or suppressed
    suppressed: list[str]  # cohorts with fewer than MIN_CELL patients (shares hidden)

    @property
    def months(self) -> int:
        return int(self.purchasing.shape[1]) if self.purchasing.ndim == 2 else 0


def _months_of_days(t_days: np.ndarray) -> np.ndarray:
    return month_index(np.round(np.asarray(t_days) * US_PER_DAY).astype(np.int64))


def retention_matrix(arrays: ea.EventArrays, *, as_of_days: float) -> RetentionMatrix:
    """The purchasing and subscription retention matrices of every first-order cohort."""
    a = arrays.before(as_of_days)
    paid = np.isin(a.kind, (ea.ORDER, ea.RENEWAL_PAYMENT)) & ~(a.amount <= 0)
    n = arrays.patients
    event_month = _months_of_days(a.t)
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, a.patient[paid], event_month[paid])
    as_of_month = int(_months_of_days(np.asarray([as_of_days]))[0])
    last_full = as_of_month - 1  # the newest month that has fully elapsed
    # A cohort exists once its month is over: first orders in the current month wait.
    buyers = first <= last_full
    if not buyers.any():
        empty = np.zeros((0, 0))
        return RetentionMatrix([], np.zeros(0, dtype=np.int64), empty, empty, [])
    cohort_ids = np.arange(first[buyers].min(), last_full + 1)
    width = len(cohort_ids)
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[buyers] = first[buyers] - cohort_ids[0]
    sizes = np.bincount(row_of[buyers], minlength=width).astype(np.int64)

    purchase_hits = _unique_hits(a.patient[paid], event_month[paid] - first[a.patient[paid]])
    sub_hits = _subscription_hits(a, first, as_of_days, last_full)
    purchasing = _shares(purchase_hits, row_of, sizes, width)
    subscribed = _shares(sub_hits, row_of, sizes, width)
    # Cohort c's month k is observed only if c + k is a fully elapsed month.
    observed = (np.arange(width)[:, None] + np.arange(width)[None, :]) < width
    suppressed_rows = (sizes < MIN_CELL) & (sizes > 0)
    for m in (purchasing, subscribed):
        m[~observed] = np.nan
        m[suppressed_rows, :] = np.nan
    keep = sizes > 0
    labels = [month_label(int(c)) for c in cohort_ids]
    return RetentionMatrix(
        [lab for lab, k in zip(labels, keep, strict=True) if k],
        sizes[keep],
        purchasing[keep],
        subscribed[keep],
        [lab for lab, s in zip(labels, suppressed_rows, strict=True) if s],
    )


def _unique_hits(patient: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (patient, months-since) pairs with k >= 0."""
    ok = k >= 0
    pairs = np.unique(np.stack([patient[ok], k[ok]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _subscription_hits(
    a: ea.EventArrays, first: np.ndarray, as_of_days: float, last_full: int
) -> tuple[np.ndarray, np.ndarray]:
    has_sub = a.sub >= 0
    patients: list[np.ndarray] = []
    ks: list[np.ndarray] = []
    if not has_sub.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    subs = a.sub[has_sub]
    t = a.t[has_sub]
    kind = a.kind[has_sub]
    owner = a.patient[has_sub]
    paid_to = a.ends[has_sub]
    ends = np.where(kind == ea.SUB_CANCELLED, np.where(np.isnan(paid_to), t, paid_to), np.nan)
    count = len(a.subscriptions)
    start = np.full(count, np.inf)
    stop = np.full(count, as_of_days)
    who = np.full(count, -1, dtype=np.int64)
    opening = kind != ea.SUB_CANCELLED
    np.minimum.at(start, subs[opening], t[opening])
    cancelled = ~np.isnan(ends)
    # The latest cancellation wins (a cancellation can be revised to a later end).
    order = np.argsort(t[cancelled], kind="stable")
    stop[subs[cancelled][order]] = np.minimum(ends[cancelled][order], as_of_days)
    who[subs] = owner
    valid = np.isfinite(start) & (who >= 0) & (stop >= start)
    start_m = _months_of_days(start[valid])
    stop_m = np.minimum(_months_of_days(stop[valid]), last_full)
    owners = who[valid]
    for s_m, e_m, p in zip(start_m, stop_m, owners, strict=True):
        if first[p] == np.iinfo(np.int64).max or e_m < s_m:
            continue
        months = np.arange(s_m, e_m + 1) - first[p]
        patients.append(np.full(len(months), p, dtype=np.int64))
        ks.append(months)
    if not patients:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _unique_hits(np.concatenate(patients), np.concatenate(ks))


def _shares(
    hits: tuple[np.ndarray, np.ndarray], row_of: np.ndarray, sizes: np.ndarray, width: int
) -> np.ndarray:
    patient, k = hits
    counts = np.zeros((width, width), dtype=np.float64)
    inside = (k < width) & (row_of[patient] >= 0)
    np.add.at(counts, (row_of[patient[inside]], k[inside]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / sizes[:, None]
