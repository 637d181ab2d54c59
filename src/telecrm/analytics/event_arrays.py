"""The purchase and activity history the value and churn models read, as numpy columns.

One row per event that matters to them (orders, subscription changes, payment failures,
support tickets, sessions and message engagement), built in one pass from simulator / wire
events, domain events, or the store's event log (one query, payloads decrypted only for the
types whose amounts or subscription ids are needed). Times are days since the Unix epoch (UTC).
No names, contact details or clinical values are kept: a patient is an index into `keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, exists, select

from telecrm.analytics.fills import IN_CHUNK
from telecrm.domain.events import Event
from telecrm.ingest.tables import events
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

DAY_US = 86_400_000_000

# Event kinds, as small integer codes.
ORDER = 0  # one-off order.paid
RENEWAL_PAYMENT = 1  # recurring order.paid (a subscription's period)
SUB_STARTED = 2
SUB_RENEWED = 3
SUB_CANCELLED = 4
PAYMENT_FAILED = 5
TICKET = 6
SESSION = 7
ENGAGED = 8  # email opened / clicked, SMS reply
OTHER_ACTIVITY = 9  # registration, questionnaire, consultation, profile update, referral, review

_KIND_OF_TYPE = {
    "subscription.started": SUB_STARTED,
    "subscription.renewed": SUB_RENEWED,
    "subscription.cancelled": SUB_CANCELLED,
    "payment.failed": PAYMENT_FAILED,
    "support_ticket.created": TICKET,
    "session.tracked": SESSION,
    "email.opened": ENGAGED,
    "email.clicked": ENGAGED,
    "sms.replied": ENGAGED,
    "patient.registered": OTHER_ACTIVITY,
    "patient.updated": OTHER_ACTIVITY,
    "questionnaire.started": OTHER_ACTIVITY,
    "consultation.submitted": OTHER_ACTIVITY,
    "referral.made": OTHER_ACTIVITY,
    "review.posted": OTHER_ACTIVITY,
}
READ_TYPES = ("order.paid", *_KIND_OF_TYPE)
# Only these need their (encrypted) payload: amounts, subscription ids, cancellation ends.
PAYLOAD_TYPES = frozenset(
    {"order.paid", "subscription.started", "subscription.renewed", "subscription.cancelled"}
)


# A patient with none of these has bought nothing: no lifetime value to predict, no churn risk.
CUSTOMER_TYPES = ("order.paid", "subscription.started")


def to_days(at: datetime) -> float:
    """Days since the Unix epoch, the time axis of every array here."""
    return at.astimezone(UTC).timestamp() / 86_400.0


@dataclass(frozen=True, slots=True)
class EventArrays:
    """Columns sorted by (patient, time). `sub` indexes `subscriptions`, -1 when none."""

    keys: np.ndarray  # patient key per patient index (object array of str)
    patient: np.ndarray  # int64 patient index per row
    kind: np.ndarray  # int8 kind code
    t: np.ndarray  # float64 days
    amount: np.ndarray  # float64, NaN when the event has none
    ends: np.ndarray  # float64 days: a cancellation's end of paid service, else NaN
    sub: np.ndarray  # int64 subscription index
    subscriptions: np.ndarray  # subscription id per index (object array)

    @property
    def patients(self) -> int:
        return len(self.keys)

    def before(self, cutoff: float) -> EventArrays:
        """Only what had happened strictly before `cutoff` (days)."""
        keep = self.t < cutoff
        return EventArrays(
            self.keys,
            self.patient[keep],
            self.kind[keep],
            self.t[keep],
            self.amount[keep],
            self.ends[keep],
            self.sub[keep],
            self.subscriptions,
        )


def build(rows: Iterable[tuple[str, str, float, dict[str, Any] | None]]) -> EventArrays:
    """From (type, patient key, time in days, data) tuples; other event types are skipped."""
    key_index: dict[str, int] = {}
    sub_index: dict[str, int] = {}
    patient: list[int] = []
    kind: list[int] = []
    t: list[float] = []
    amount: list[float] = []
    ends: list[float] = []
    sub: list[int] = []
    nan = float("nan")
    for type_, key, at, data in rows:
        if type_ == "order.paid":
            code = RENEWAL_PAYMENT if data and data.get("recurring") else ORDER
        else:
            found = _KIND_OF_TYPE.get(type_)
            if found is None:
                continue
            code = found
        data = (data or {}) if type_ in PAYLOAD_TYPES else {}
        patient.append(key_index.setdefault(key, len(key_index)))
        kind.append(code)
        t.append(at)
        value = data.get("amount")
        amount.append(float(value) if isinstance(value, int | float) else nan)
        ends_at = data.get("ends_at")
        ends.append(_days_of(ends_at) if ends_at is not None else nan)
        sub_id = data.get("subscription_id") if code != ORDER else None
        sub.append(sub_index.setdefault(sub_id, len(sub_index)) if sub_id else -1)
    # Patients are numbered in key order, not in the order the rows came: the models see the
    # same rows in the same order however the store returned them (a fit is reproducible).
    seen = np.asarray(list(key_index), dtype=object)
    by_key = np.argsort(seen, kind="stable")
    rank = np.empty(len(seen), dtype=np.int64)
    rank[by_key] = np.arange(len(seen))
    p = rank[np.asarray(patient, dtype=np.int64)]
    keys = seen[by_key]
    times = np.asarray(t, dtype=np.float64)
    order = np.lexsort((times, p))
    return EventArrays(
        keys=keys,
        patient=p[order],
        kind=np.asarray(kind, dtype=np.int8)[order],
        t=times[order],
        amount=np.asarray(amount, dtype=np.float64)[order],
        ends=np.asarray(ends, dtype=np.float64)[order],
        sub=np.asarray(sub, dtype=np.int64)[order],
        subscriptions=np.asarray(list(sub_index), dtype=object),
    )


def _days_of(value: Any) -> float:
    if isinstance(value, datetime):
        return to_days(value)
    return to_days(datetime.fromisoformat(str(value)))


def from_wire(raw: Iterable[dict[str, Any]]) -> EventArrays:
    """From wire-format events (the simulator's output, a JSONL import file)."""

    def rows() -> Iterator[tuple[str, str, float, dict[str, Any] | None]]:
        for e in raw:
            key = e["patient"].get("id")
            if key is not None:
                yield e["type"], key, _days_of(e["occurred_at"]), e.get("data")

    return build(rows())


def from_events(stream: Iterable[Event]) -> EventArrays:
    """From validated domain events."""

    def rows() -> Iterator[tuple[str, str, float, dict[str, Any] | None]]:
        for e in stream:
            if e.patient_id is not None:
                data = e.data.model_dump(mode="json") if e.type in PAYLOAD_TYPES else None
                yield e.type, e.patient_id, to_days(e.occurred_at), data

    return build(rows())


def _log_query(customers_only: bool, upto: int | None = None) -> Any:
    query = (
        with_salts(
            select(
                events.c.type,
                events.c.patient_key,
                events.c.occurred_us,
                events.c.event_id,
                events.c.payload,
            )
        )
        .where(events.c.type.in_(READ_TYPES))
        .where(events.c.patient_id.is_not(None))
    )
    if upto is not None:
        query = query.where(events.c.seq <= upto)
    if customers_only:
        bought = events.alias("bought")
        customers = select(bought.c.patient_key).where(bought.c.type.in_(CUSTOMER_TYPES))
        if upto is not None:
            customers = customers.where(bought.c.seq <= upto)
        query = query.where(events.c.patient_key.in_(customers))
    return query


def _opened(
    result: Iterable[Any], cipher: FieldCipher
) -> Iterator[tuple[str, str, float, dict[str, Any] | None]]:
    for row in result:
        data = None
        if row.type in PAYLOAD_TYPES:
            data = open_payload(cipher, row)
            if data is None:  # an erased patient's event: left out
                continue
        yield row.type, row.patient_key, row.occurred_us / DAY_US, data


def from_store(
    engine: Engine,
    cipher: FieldCipher,
    *,
    batch: int = 20_000,
    customers_only: bool = False,
    upto: int | None = None,
) -> EventArrays:
    """The whole event log in one streamed query (no per-patient SQL).

    `customers_only`: only the patients with an order or a subscription, all that the value and
    churn models read (`analytics run`: about 30 % fewer rows; everyone else is not a buyer).
    `upto`: only the events with a seq at or below it (a customer is one by then)."""
    with engine.connect() as conn:
        return from_connection(conn, cipher, batch=batch, customers_only=customers_only, upto=upto)


def from_connection(
    conn: Connection,
    cipher: FieldCipher,
    *,
    keys: Sequence[str] | None = None,
    batch: int = 20_000,
    customers_only: bool = True,
    upto: int | None = None,
) -> EventArrays:
    """`from_store` on the caller's connection; with `keys`, only those patients' history (a
    few queries per 500 patients; customers only)."""
    if keys is None:
        query = _log_query(customers_only, upto)
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
        return build(_opened(result, cipher))
    bought = events.alias("bought")
    customer = (
        exists()
        .where(bought.c.patient_key == events.c.patient_key)
        .where(bought.c.type.in_(CUSTOMER_TYPES))
    )
    if upto is not None:
        customer = customer.where(bought.c.seq <= upto)
    query = (
        _log_query(False, upto)
        .where(events.c.patient_key.in_(bindparam("keys", expanding=True)))
        .where(customer)
    )
    wanted = list(keys)
    rows: list[Any] = []
    for start in range(0, len(wanted), IN_CHUNK):
        rows.extend(conn.execute(query, {"keys": wanted[start : start + IN_CHUNK]}))
    return build(_opened(rows, cipher))


def empty() -> EventArrays:
    return build(())


def canonical(log: EventArrays) -> EventArrays:
    """The same history in one order whatever order it was read in: subscriptions numbered by
    id, rows by (patient, time, kind, amount, end, subscription)."""
    subs = log.subscriptions
    by_id = np.argsort(subs, kind="stable") if subs.size else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(subs), dtype=np.int64)
    rank[by_id] = np.arange(len(subs))
    sub = np.where(log.sub >= 0, rank[np.maximum(log.sub, 0)] if subs.size else -1, -1)
    order = canonical_order(log.patient, log.t, (log.kind, log.amount, log.ends, sub))
    return EventArrays(
        keys=log.keys,
        patient=log.patient[order],
        kind=log.kind[order],
        t=log.t[order],
        amount=log.amount[order],
        ends=log.ends[order],
        sub=sub[order].astype(np.int64),
        subscriptions=subs[by_id] if subs.size else subs,
    )


def canonical_order(patient: np.ndarray, t: np.ndarray, rest: tuple[np.ndarray, ...]) -> np.ndarray:
    """The order of `np.lexsort((*reversed(rest), t, patient))`, sorting by (patient, t) in two
    passes and by the `rest` only within the few runs of rows equal on both (same result)."""
    order = np.lexsort((t, patient))
    p, at = patient[order], t[order]
    tied = (p[1:] == p[:-1]) & (at[1:] == at[:-1])
    if tied.any():
        in_run = np.zeros(order.size, dtype=np.bool_)
        in_run[1:] |= tied
        in_run[:-1] |= tied
        rows = order[in_run]  # the tied rows, their runs in (patient, t) order already
        keys = tuple(k[rows] for k in reversed(rest))
        order[in_run] = rows[np.lexsort((*keys, t[rows], patient[rows]))]
    return order


def join(parts: Sequence[tuple[EventArrays, Sequence[str] | np.ndarray]]) -> EventArrays:
    """One history from parts, each with the patients to take from it (sorted; a patient taken
    from several parts has all their rows; one missing from a part's history is not in it)."""
    found = []
    for log, ks in parts:
        wanted = np.asarray(ks, dtype=str)
        at = locate(log.keys, wanted)
        found.append((log, at[at >= 0], wanted[at >= 0]))
    keys = np.unique(np.concatenate([w for _, _, w in found] or [np.zeros(0, dtype=str)]))
    if not keys.size:
        return empty()
    subs: dict[Any, int] = {}
    cols: dict[str, list[np.ndarray]] = {n: [] for n in ("p", "kind", "t", "amount", "ends", "sub")}
    for log, src, wanted in found:
        new_of = np.full(log.patients, -1, dtype=np.int64)
        new_of[src] = np.searchsorted(keys, wanted)
        moved = new_of[log.patient]
        keep = moved >= 0
        remap = np.asarray([subs.setdefault(s, len(subs)) for s in log.subscriptions], np.int64)
        sub = log.sub[keep]
        cols["p"].append(moved[keep])
        cols["kind"].append(log.kind[keep])
        cols["t"].append(log.t[keep])
        cols["amount"].append(log.amount[keep])
        cols["ends"].append(log.ends[keep])
        cols["sub"].append(np.where(sub >= 0, remap[np.maximum(sub, 0)] if remap.size else -1, -1))
    return EventArrays(
        keys=keys.astype(object),
        patient=np.concatenate(cols["p"]).astype(np.int64),
        kind=np.concatenate(cols["kind"]).astype(np.int8),
        t=np.concatenate(cols["t"]).astype(np.float64),
        amount=np.concatenate(cols["amount"]).astype(np.float64),
        ends=np.concatenate(cols["ends"]).astype(np.float64),
        sub=np.concatenate(cols["sub"]).astype(np.int64),
        subscriptions=np.asarray(list(subs), dtype=object),
    )


def locate(
    sorted_keys: Sequence[str] | np.ndarray, wanted: Sequence[str] | np.ndarray
) -> np.ndarray:
    """Positions of `wanted` in `sorted_keys`, -1 where absent (numpy, no dict of keys)."""
    haystack = np.asarray(sorted_keys, dtype=str)  # no copy when already strings
    needles = np.asarray(wanted, dtype=str)
    if not haystack.size or not needles.size:
        return np.full(needles.size, -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(haystack, needles), haystack.size - 1)
    return np.where(haystack[at] == needles, at, -1).astype(np.int64)
