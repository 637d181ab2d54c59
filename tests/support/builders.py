"""Plain builders for wire events and a signed-client for the intake, shared by the tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from telecrm.ingest.signatures import signed_headers

SECRET = (
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only, from the Standard Webhooks docs' shape
)
MASTER_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="  # test-only 32 bytes

# Canary PHI: values that must never appear in clear text anywhere they must not.
CANARY_FIRST = "Canaryfirst"
CANARY_LAST = "Zzyzxcanary"
CANARY_EMAIL = "canary.phi.7f3a@example.com"
CANARY_PHONE = "+14155550123"
CANARY_CONDITION = "Canarycondition syndrome"
CANARY_MEDICATION = "Canarymycin"

_ids = itertools.count(1)


def event(
    type_: str,
    patient_id: str | None,
    at: datetime,
    data: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    anonymous_id: str | None = None,
) -> dict[str, Any]:
    patient: dict[str, str] = {}
    if patient_id:
        patient["id"] = patient_id
    if anonymous_id:
        patient["anonymous_id"] = anonymous_id
    return {
        "id": event_id or f"evt_{next(_ids):08d}",
        "type": type_,
        "version": 1,
        "occurred_at": at.isoformat(),
        "patient": patient,
        "data": data or {},
    }


def registration(patient_id: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    data = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"{patient_id}@example.com",
        "phone": "+14155552671",
        "date_of_birth": "1985-04-12",
        "timezone": "America/Los_Angeles",
    }
    data.update(overrides.pop("data", {}))
    return event("patient.registered", patient_id, at, data, **overrides)


def customer_journey(patient_id: str, start: datetime) -> list[dict[str, Any]]:
    """Registration to first paid order: the patient ends as an active customer."""
    day = timedelta(days=1)
    return [
        registration(patient_id, start),
        event("questionnaire.started", patient_id, start + day, {"questionnaire_id": "q1"}),
        event(
            "consultation.submitted",
            patient_id,
            start + 2 * day,
            {"consultation_id": f"c_{patient_id}"},
        ),
        event(
            "prescription.approved",
            patient_id,
            start + 3 * day,
            {"prescription_id": f"rx_{patient_id}", "medication": "Finasteride 1mg"},
        ),
        event(
            "order.paid",
            patient_id,
            start + 4 * day,
            {"order_id": f"o_{patient_id}", "amount": 49.0},
        ),
    ]


class SignedClient:
    """Posts to /v1/events the way a platform would: Standard Webhooks headers over HTTP."""

    def __init__(self, client: httpx.Client, now: datetime, secret: str = SECRET) -> None:
        self.client = client
        self.now = now
        self.secret = secret
        self._msg = itertools.count(1)

    def post(
        self,
        payload: Any,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        body = raw if raw is not None else orjson.dumps(payload)
        headers = signed_headers(
            self.secret,
            msg_id or f"msg_{next(self._msg)}",
            timestamp if timestamp is not None else int(self.now.timestamp()),
            body,
        )
        headers["content-type"] = "application/json"
        return self.client.post("/v1/events", content=body, headers=headers)
