"""The simulated platform's own records, materialised from its event stream.

`PlatformData.from_events(generate(config))` replays the simulator's wire events into the rows a
real telehealth platform would hold (patients, consultations, orders), so `platform_api` can
serve them the way the platform's REST API would. Every record carries `created_at` and
`updated_at` (aware, UTC) taken from the events' `occurred_at`; assigning or accepting a
consultation through the API stamps `updated_at` with the API's clock.

Collections are paged in `(updated_at, id)` order: a record that changes moves to the end, so a
client that pages with `updated_since` sees every change at least once. Cursors are opaque
(base64url JSON of the last row's key and the collection's name) and `InvalidCursor` is raised
for anything that does not decode to one of ours.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import orjson

from telecrm.domain.clock import from_micros, to_micros

ConsultationStatus = Literal["submitted", "assigned", "accepted"]


@dataclass(frozen=True, slots=True)
class PatientRecord:
    id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    state: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConsultationRecord:
    id: str
    patient_id: str
    status: ConsultationStatus
    provider_id: str | None
    condition_area: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: str
    patient_id: str
    amount: float
    currency: str
    recurring: bool
    created_at: datetime
    updated_at: datetime


R = TypeVar("R", PatientRecord, ConsultationRecord, OrderRecord)


class InvalidCursor(ValueError):
    """The cursor is not one this collection handed out (its value is never repeated)."""


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """The consultation is not in a state that allows the change."""


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    data: list[R]
    next_cursor: str | None


def encode_cursor(collection: str, updated_at: datetime, record_id: str) -> str:
    raw = orjson.dumps({"c": collection, "u": to_micros(updated_at), "i": record_id})
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(collection: str, cursor: str) -> tuple[int, str]:
    if not cursor or len(cursor) > 512:
        raise InvalidCursor("cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("cursor") from None
    if not (
        isinstance(body, dict)
        and body.get("c") == collection
        and type(body.get("u")) is int
        and isinstance(body.get("i"), str)
    ):
        raise InvalidCursor("cursor")
    return body["u"], body["i"]


class _Collection(Generic[R]):
    """Rows by id plus a sorted `(updated_at micros, id)` index for keyset paging."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, R] = {}
        self._keys: list[tuple[int, str]] = []
        self._sorted = True

    def put(self, row: R, *, bulk: bool = False) -> None:
        old = self.rows.get(row.id)
        self.rows[row.id] = row
        if bulk:  # from_events: sort once at the end
            self._sorted = False
            return
        if old is not None:
            key = (to_micros(old.updated_at), old.id)
            i = bisect.bisect_left(self._keys, key)
            if i < len(self._keys) and self._keys[i] == key:
                del self._keys[i]
        bisect.insort(self._keys, (to_micros(row.updated_at), row.id))

    def finish(self) -> None:
        if not self._sorted:
            self._keys = sorted((to_micros(r.updated_at), r.id) for r in self.rows.values())
            self._sorted = True

    def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        updated_since: datetime | None = None,
        where: Callable[[R], bool] | None = None,
    ) -> Page[R]:
        start = 0
        if cursor is not None:
            start = bisect.bisect_right(self._keys, decode_cursor(self.name, cursor))
        if updated_since is not None:
            start = max(start, bisect.bisect_left(self._keys, (to_micros(updated_since),)))
        out: list[R] = []
        for _, row_id in self._keys[start:]:  # one extra row tells whether there is more
            row = self.rows[row_id]
            if where is None or where(row):
                out.append(row)
                if len(out) > limit:
                    break
        more = len(out) > limit
        del out[limit:]
        nxt = encode_cursor(self.name, out[-1].updated_at, out[-1].id) if more else None
        return Page(out, nxt)

    def __iter__(self) -> Iterator[R]:
        return (self.rows[k[1]] for k in self._keys)


def _at(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError("occurred_at needs a timezone")
    return at.astimezone(UTC)


_PATIENT_FIELDS = ("first_name", "last_name", "email", "phone")


class PlatformData:
    """In-memory platform records; safe to share between request threads."""

    def __init__(self) -> None:
        self.patients: _Collection[PatientRecord] = _Collection("patients")
        self.consultations: _Collection[ConsultationRecord] = _Collection("consultations")
        self.orders: _Collection[OrderRecord] = _Collection("orders")
        self._lock = threading.RLock()

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> PlatformData:
        data = cls()
        seen: set[str] = set()
        for event in events:
            event_id = event.get("id")
            if event_id is not None:
                if event_id in seen:
                    continue  # redelivery: ids are idempotency keys
                seen.add(event_id)
            data._apply(event)
        for collection in (data.patients, data.consultations, data.orders):
            collection.finish()
        return data

    def _apply(self, event: dict[str, Any]) -> None:
        patient_id = (event.get("patient") or {}).get("id")
        if not patient_id:
            return  # anonymous traffic has no platform record
        kind, at, d = event["type"], _at(event["occurred_at"]), event.get("data") or {}
        if kind == "patient.registered":
            address = d.get("address") or {}
            self.patients.put(
                PatientRecord(
                    id=patient_id,
                    first_name=d["first_name"],
                    last_name=d["last_name"],
                    email=d["email"],
                    phone=d.get("phone"),
                    state=address.get("state"),
                    created_at=at,
                    updated_at=at,
                ),
                bulk=True,
            )
        elif kind == "patient.updated":
            old = self.patients.rows.get(patient_id)
            if old is None:
                return
            changes: dict[str, Any] = {f: d[f] for f in _PATIENT_FIELDS if d.get(f) is not None}
            if (d.get("address") or {}).get("state"):
                changes["state"] = d["address"]["state"]
            self.patients.put(
                replace(old, updated_at=max(at, old.updated_at), **changes), bulk=True
            )
        elif kind == "consultation.submitted":
            self.consultations.put(
                ConsultationRecord(
                    id=d["consultation_id"],
                    patient_id=patient_id,
                    status="submitted",
                    provider_id=None,
                    condition_area=d.get("condition_area"),
                    created_at=at,
                    updated_at=at,
                ),
                bulk=True,
            )
        elif kind in ("consultation.assigned", "consultation.accepted"):
            con = self.consultations.rows.get(d["consultation_id"])
            if con is None:
                return
            status: ConsultationStatus = (
                "assigned" if kind == "consultation.assigned" else "accepted"
            )
            self.consultations.put(
                replace(
                    con,
                    status=status,
                    provider_id=d["provider_id"],
                    updated_at=max(at, con.updated_at),
                ),
                bulk=True,
            )
        elif kind == "order.paid":
            self.orders.put(
                OrderRecord(
                    id=d["order_id"],
                    patient_id=patient_id,
                    amount=float(d["amount"]),
                    currency=d.get("currency") or "USD",
                    recurring=bool(d.get("recurring", False)),
                    created_at=at,
                    updated_at=at,
                ),
                bulk=True,
            )

    # -- reading -----------------------------------------------------------------------------

    def page_patients(
        self, *, limit: int, cursor: str | None = None, updated_since: datetime | None = None
    ) -> Page[PatientRecord]:
        with self._lock:
            return self.patients.page(limit=limit, cursor=cursor, updated_since=updated_since)

    def page_consultations(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        updated_since: datetime | None = None,
        status: ConsultationStatus | None = None,
        patient_id: str | None = None,
    ) -> Page[ConsultationRecord]:
        def where(c: ConsultationRecord) -> bool:
            return (status is None or c.status == status) and (
                patient_id is None or c.patient_id == patient_id
            )

        with self._lock:
            return self.consultations.page(
                limit=limit,
                cursor=cursor,
                updated_since=updated_since,
                where=None if status is None and patient_id is None else where,
            )

    def page_orders(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        updated_since: datetime | None = None,
        patient_id: str | None = None,
    ) -> Page[OrderRecord]:
        with self._lock:
            return self.orders.page(
                limit=limit,
                cursor=cursor,
                updated_since=updated_since,
                where=None if patient_id is None else (lambda o: o.patient_id == patient_id),
            )

    def has_patient(self, patient_id: str) -> bool:
        return patient_id in self.patients.rows

    def all_orders(self) -> list[OrderRecord]:
        with self._lock:
            return list(self.orders)

    def order_stats(self) -> dict[str, Any]:
        """Count, total and average amount, overall and per currency (sums in whole cents)."""
        by: dict[str, list[int]] = {}
        for order in self.all_orders():
            tally = by.setdefault(order.currency, [0, 0])
            tally[0] += 1
            tally[1] += round(order.amount * 100)

        def summary(count: int, cents: int) -> dict[str, Any]:
            return {
                "count": count,
                "total_amount": cents / 100,
                "average_amount": round(cents / count / 100, 2) if count else 0.0,
            }

        count = sum(t[0] for t in by.values())
        cents = sum(t[1] for t in by.values())
        return {
            **summary(count, cents),
            "by_currency": {cur: summary(*t) for cur, t in sorted(by.items())},
        }

    # -- writing -----------------------------------------------------------------------------

    def assign_consultation(
        self, consultation_id: str, provider_id: str, *, now: datetime
    ) -> ConsultationRecord:
        """Submitted (or already assigned: reassignment) -> assigned. Accepted -> `Conflict`."""
        with self._lock:
            con = self.consultations.rows.get(consultation_id)
            if con is None:
                raise NotFound(consultation_id)
            if con.status == "accepted":
                raise Conflict("accepted")
            row = replace(con, status="assigned", provider_id=provider_id, updated_at=_utc(now))
            self.consultations.put(row)
            return row

    def accept_consultation(self, consultation_id: str, *, now: datetime) -> ConsultationRecord:
        """Assigned -> accepted, by the assigned provider. Anything else -> `Conflict`."""
        with self._lock:
            con = self.consultations.rows.get(consultation_id)
            if con is None:
                raise NotFound(consultation_id)
            if con.status != "assigned":
                raise Conflict(con.status)
            row = replace(con, status="accepted", updated_at=_utc(now))
            self.consultations.put(row)
            return row


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("the clock must return aware datetimes")
    # Round-trip through micros so the stored instant equals what the cursor encodes.
    return from_micros(to_micros(at))
