"""Per-patient rows at a cutoff: purchase summaries for the value models, features and labels
for the churn model. Everything reads only events strictly before the cutoff (labels read the
window after it) and is computed with whole-array numpy operations, no loop over patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.event_arrays import EventArrays

SUBSCRIPTION_PERIOD_DAYS = 30.0  # monthly plans; every simulated and documented plan is monthly
CHURN_INACTIVITY_DAYS = 120  # lifecycle.Thresholds.churn_inactivity_days: already churned
PURCHASES = (ea.ORDER, ea.RENEWAL_PAYMENT)
ACTIVITY: tuple[int, ...] = (
    *PURCHASES,
    ea.SUB_STARTED,
    ea.SUB_RENEWED,
    ea.TICKET,
    ea.SESSION,
    ea.ENGAGED,
    ea.OTHER_ACTIVITY,
)


def _first(log: EventArrays, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per patient, `values` at the first masked row (rows are in time order); NaN if none."""
    out = np.full(log.patients, np.nan)
    idx = np.flatnonzero(mask)
    if idx.size:
        p = log.patient[idx]
        starts = np.r_[True, p[1:] != p[:-1]]
        out[p[starts]] = values[idx[starts]]
    return out


def _last(log: EventArrays, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(log.patients, np.nan)
    idx = np.flatnonzero(mask)
    if idx.size:
        p = log.patient[idx]
        ends = np.r_[p[1:] != p[:-1], True]
        out[p[ends]] = values[idx[ends]]
    return out


def _count(log: EventArrays, mask: np.ndarray) -> np.ndarray:
    return np.bincount(log.patient[mask], minlength=log.patients).astype(np.float64)


# -- one-off purchases (BG/NBD + Gamma-Gamma inputs) ------------------------------------------
@dataclass(frozen=True, slots=True)
class Rfm:
    """Per patient (index into keys); `buyer` marks those with at least one one-off order."""

    buyer: np.ndarray
    x: np.ndarray  # repeat purchase days
    t_x: np.ndarray  # days from first to last purchase
    big_t: np.ndarray  # days from first purchase to the cutoff
    monetary: np.ndarray  # mean value of the repeat purchase days (0 when x = 0)


def rfm_at(log: EventArrays, cutoff: float) -> Rfm:
    """Frequency, recency, T and monetary value of one-off orders before `cutoff` (days).

    Orders on the same UTC day count as one purchase of their summed value; zero-value orders
    count as purchases; the first purchase's value is left out of `monetary` (analytics.md §1.1).
    """
    keep = (log.kind == ea.ORDER) & (log.t < cutoff)
    p, t = log.patient[keep], log.t[keep]
    amount = np.nan_to_num(log.amount[keep], nan=0.0)
    day = np.floor(t)
    new_day = np.r_[True, (p[1:] != p[:-1]) | (day[1:] != day[:-1])][: len(p)]
    group = np.cumsum(new_day) - 1
    day_amount = np.bincount(group, weights=amount) if group.size else np.zeros(0)
    dp, dt = p[new_day], t[new_day]
    first_of_patient = np.r_[True, dp[1:] != dp[:-1]][: len(dp)]
    n = log.patients
    days = np.bincount(dp, minlength=n).astype(np.float64)
    buyer = days > 0
    first = np.full(n, np.nan)
    first[dp[first_of_patient]] = dt[first_of_patient]
    last = np.full(n, np.nan)
    last_of_patient = np.r_[dp[1:] != dp[:-1], True] if dp.size else np.zeros(0, dtype=bool)
    last[dp[last_of_patient]] = dt[last_of_patient]
    repeat_value = np.bincount(
        dp[~first_of_patient], weights=day_amount[~first_of_patient], minlength=n
    )
    x = np.maximum(days - 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(x > 0, repeat_value / np.maximum(x, 1.0), 0.0)
    return Rfm(
        buyer=buyer,
        x=x,
        t_x=np.where(buyer, last - first, 0.0),
        big_t=np.where(buyer, cutoff - first, 0.0),
        monetary=monetary,
    )


# -- subscriptions (sBG inputs) ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subscriptions:
    """One entry per subscription started before the cutoff."""

    patient: np.ndarray
    started: np.ndarray  # days
    paid: np.ndarray  # periods paid before the cutoff (>= 1)
    cancelled: np.ndarray  # bool: a cancellation before the cutoff
    amount: np.ndarray  # price per period
    cohort: np.ndarray  # start month, as year * 12 + month - 1


def subscriptions_at(log: EventArrays, cutoff: float) -> Subscriptions:
    before = log.t < cutoff
    count = len(log.subscriptions)

    def per_sub(kind: int) -> np.ndarray:
        mask = before & (log.kind == kind) & (log.sub >= 0)
        return np.bincount(log.sub[mask], minlength=count)

    started_mask = before & (log.kind == ea.SUB_STARTED) & (log.sub >= 0)
    subs = log.sub[started_mask]
    subs, first = np.unique(subs, return_index=True)  # one start per subscription
    rows = np.flatnonzero(started_mask)[first]
    in_time = np.argsort(rows)  # rows are in (patient, time) order
    subs, rows = subs[in_time], rows[in_time]
    payments = per_sub(ea.RENEWAL_PAYMENT)[subs]
    renewed = per_sub(ea.SUB_RENEWED)[subs]
    cancelled = per_sub(ea.SUB_CANCELLED)[subs] > 0
    started = log.t[rows]
    months = (started.astype("datetime64[D]").astype("datetime64[M]")).astype(np.int64)
    return Subscriptions(
        patient=log.patient[rows],
        started=started,
        paid=np.maximum(payments, renewed + 1).astype(np.float64),
        cancelled=cancelled,
        amount=np.nan_to_num(log.amount[rows], nan=0.0),
        cohort=months + 1970 * 12,
    )


def decided_cancellations(subs: Subscriptions, cutoff: float) -> np.ndarray:
    """Cancellations whose renewal date has passed: the ones sBG may count as churn.

    A patient may announce a cancellation any time in the period before the renewal; counting
    those early ones while the others in the same period are still undecided biases churn up,
    so an early cancellation is treated as censored until its renewal date.
    """
    return subs.cancelled & (subs.started + subs.paid * SUBSCRIPTION_PERIOD_DAYS <= cutoff)


def renewals_due(subs: Subscriptions, cutoff: float, horizon_days: float) -> np.ndarray:
    """Renewal dates of each subscription in (cutoff, cutoff + horizon], an overdue one included."""
    last_due = np.floor((cutoff + horizon_days - subs.started) / SUBSCRIPTION_PERIOD_DAYS)
    return np.maximum(last_due - subs.paid + 1.0, 0.0).astype(np.int64)


def _latest_subscription(
    subs: Subscriptions, patients: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per patient, of the latest subscription: (exists, cancelled, periods paid, start)."""
    exists = np.zeros(patients, dtype=bool)
    cancelled = np.zeros(patients, dtype=bool)
    paid = np.zeros(patients)
    started = np.zeros(patients)
    p = subs.patient
    if p.size:
        last = np.r_[p[1:] != p[:-1], True]  # subscriptions are in (patient, start) order
        exists[p[last]] = True
        cancelled[p[last]] = subs.cancelled[last]
        paid[p[last]] = subs.paid[last]
        started[p[last]] = subs.started[last]
    return exists, cancelled, paid, started


# -- churn model rows -------------------------------------------------------------------------
FEATURES = (
    "days_since_last_purchase",
    "tenure_days",
    "purchases",
    "one_off_orders",
    "mean_order_value",
    "subscribed",
    "subscription_periods_paid",
    "days_to_next_renewal",
    "past_cancellations",
    "payment_failures",
    "payment_failing_now",
    "days_since_payment_failure",
    "sessions_30d",
    "sessions_90d",
    "engagements_90d",
    "tickets_90d",
    "days_since_last_ticket",
    "days_since_last_activity",
)


@dataclass(frozen=True, slots=True)
class ChurnRows:
    """Feature matrix for the customers at risk at a cutoff (columns named by FEATURES)."""

    patient: np.ndarray  # index into keys
    features: np.ndarray  # float64 (rows, len(FEATURES)); NaN = not applicable
    subscribed: np.ndarray  # bool: an active subscription at the cutoff


def churn_rows(log: EventArrays, cutoff: float) -> ChurnRows:
    """Customers (a purchase before `cutoff`) not already churned then, with their features.

    Already churned: the latest subscription was cancelled with no purchase since, or no
    activity for CHURN_INACTIVITY_DAYS (the lifecycle's churned rule).
    """
    before = log.t < cutoff
    k = log.kind
    purchase = before & np.isin(k, PURCHASES)
    activity = before & np.isin(k, ACTIVITY)
    since_90 = before & (log.t >= cutoff - 90)
    since_30 = before & (log.t >= cutoff - 30)
    first_purchase = _first(log, purchase, log.t)
    last_purchase = _last(log, purchase, log.t)
    last_activity = _last(log, activity, log.t)
    subs = subscriptions_at(log, cutoff)
    has_sub, sub_cancelled, paid, started = _latest_subscription(subs, log.patients)
    cancel_time = _last(log, before & (k == ea.SUB_CANCELLED), log.t)
    lapsed = sub_cancelled & ~(last_purchase > cancel_time)
    customer = np.isfinite(first_purchase)
    idle = cutoff - last_activity
    at_risk = customer & ~lapsed & ~(idle >= CHURN_INACTIVITY_DAYS)
    subscribed = has_sub & ~sub_cancelled
    paid = np.where(subscribed, paid, np.nan)
    next_renewal = np.where(subscribed, started + paid * SUBSCRIPTION_PERIOD_DAYS - cutoff, np.nan)
    failure = before & (k == ea.PAYMENT_FAILED)
    last_failure = _last(log, failure, log.t)
    amounts = np.nan_to_num(log.amount, nan=0.0)
    spend = np.bincount(log.patient[purchase], weights=amounts[purchase], minlength=log.patients)
    purchases = _count(log, purchase)
    last_ticket = _last(log, before & (k == ea.TICKET), log.t)
    columns = {
        "days_since_last_purchase": cutoff - last_purchase,
        "tenure_days": cutoff - first_purchase,
        "purchases": purchases,
        "one_off_orders": _count(log, before & (k == ea.ORDER)),
        "mean_order_value": spend / np.maximum(purchases, 1.0),
        "subscribed": subscribed.astype(np.float64),
        "subscription_periods_paid": paid,
        "days_to_next_renewal": next_renewal,
        "past_cancellations": _count(log, before & (k == ea.SUB_CANCELLED)),
        "payment_failures": _count(log, failure),
        "payment_failing_now": (last_failure > last_purchase).astype(np.float64),
        "days_since_payment_failure": cutoff - last_failure,
        "sessions_30d": _count(log, since_30 & (k == ea.SESSION)),
        "sessions_90d": _count(log, since_90 & (k == ea.SESSION)),
        "engagements_90d": _count(log, since_90 & (k == ea.ENGAGED)),
        "tickets_90d": _count(log, since_90 & (k == ea.TICKET)),
        "days_since_last_ticket": cutoff - last_ticket,
        "days_since_last_activity": idle,
    }
    rows = np.flatnonzero(at_risk)
    matrix = np.column_stack([columns[name][rows] for name in FEATURES])
    return ChurnRows(patient=rows, features=matrix, subscribed=subscribed[rows])


def churn_labels(
    log: EventArrays, rows: ChurnRows, cutoff: float, horizon_days: float
) -> np.ndarray:
    """1 when the customer churned in [cutoff, cutoff + horizon): a subscriber cancelled, or a
    one-off buyer made no purchase in the window. The caller makes sure the window is observed."""
    window = (log.t >= cutoff) & (log.t < cutoff + horizon_days)
    cancelled = _count(log, window & (log.kind == ea.SUB_CANCELLED)) > 0
    bought = _count(log, window & np.isin(log.kind, PURCHASES)) > 0
    p = rows.patient
    return np.where(rows.subscribed, cancelled[p], ~bought[p]).astype(np.int64)
