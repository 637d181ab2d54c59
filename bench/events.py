"""Fast synthetic event streams for load tests: valid events, each patient registered first.

The realistic business comes from `telecrm.simulate`; this is the lean stream that loads the
intake without spending the load generator's CPU on realism.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

_FOLLOW_UPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("questionnaire.started", {"questionnaire_id": "q_hair"}),
    ("consultation.submitted", {"consultation_id": "c", "condition_area": "hair_loss"}),
    ("prescription.approved", {"prescription_id": "rx", "medication": "Finasteride 1mg"}),
    ("order.paid", {"order_id": "o", "amount": 39.0}),
    ("session.tracked", {"page": "/dashboard"}),
)


def synthetic_events(
    *, patients: int, end: datetime, per_patient: int = 5, id_prefix: str = "s"
) -> Iterator[dict[str, Any]]:
    """`patients` times `per_patient` events, registration first, all within the hour before `end`."""
    for i in range(patients):
        pid = f"pat_{id_prefix}{i:07d}"
        at = end - timedelta(seconds=3600 - (i % 3000))
        yield {
            "id": f"evt_{id_prefix}{i:07d}_0",
            "type": "patient.registered",
            "occurred_at": at.isoformat(),
            "patient": {"id": pid},
            "data": {
                "first_name": "Pat",
                "last_name": f"Bench{i}",
                "email": f"{pid}@example.com",
                "phone": f"+1415555{i % 10000:04d}",
            },
        }
        for k in range(1, per_patient):
            type_, data = _FOLLOW_UPS[(k - 1) % len(_FOLLOW_UPS)]
            yield {
                "id": f"evt_{id_prefix}{i:07d}_{k}",
                "type": type_,
                "occurred_at": (at + timedelta(seconds=k)).isoformat(),
                "patient": {"id": pid},
                "data": {
                    key: (f"{v}_{pid}" if key.endswith("_id") else v) for key, v in data.items()
                },
            }
