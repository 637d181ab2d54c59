"""The projection's side of journeys: what it folded that a journey listens to, written to
`journey_inbox` in the projection's own transaction (so nothing is lost between an event and
the journey it starts, exits or resumes). History is not news: activity older than the entry
age is not written at all, which keeps a bulk import of months of events cheap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from telecrm.domain.messages import PatientActivity
from telecrm.journeys.tables import journey_inbox


def inbox_writer(
    event_types: Callable[[], frozenset[str]],
    stages: Callable[[], bool],
    max_age_us: int,
) -> Callable[[Connection, list[PatientActivity], int], None]:
    def write(conn: Connection, activity: list[PatientActivity], now_us: int) -> None:
        types, with_stages, oldest = event_types(), stages(), now_us - max_age_us
        rows: list[dict[str, Any]] = [
            {
                "patient_key": a.patient_key,
                "kind": a.kind,
                "name": a.name,
                "event_id": a.event_id,
                "occurred_us": a.at_us,
                "enqueued_us": now_us,
            }
            for a in activity
            if a.at_us >= oldest
            and ((a.kind == "event" and a.name in types) or (a.kind == "stage" and with_stages))
        ]
        if rows:
            conn.execute(journey_inbox.insert(), rows)

    return write
