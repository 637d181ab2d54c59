"""Shared bits of the journey tests: a consenting patient, the rows a journey wrote, a tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.journeys.runner import RunReport
from telecrm.journeys.tables import journey_instances, journey_steps
from telecrm.messaging.tables import messages
from tests.support.builders import registration

# Monday 2026-03-02 17:00 UTC: 12:00 in New York, inside the default quiet-hours window.
DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def consenting(patient_id: str, at: datetime, **prefs: object) -> dict[str, Any]:
    flags = {"sms_consent": True, "email_consent": True, "marketing_consent": True, **prefs}
    return registration(
        patient_id,
        at,
        data={"timezone": "America/New_York", "communication_preferences": flags},
    )


def instances(runtime: Runtime, journey: str | None = None) -> list[Any]:
    query = select(journey_instances).order_by(journey_instances.c.entered_us)
    if journey is not None:
        query = query.where(journey_instances.c.journey == journey)
    with runtime.engine.connect() as conn:
        return list(conn.execute(query))


def journey_messages(runtime: Runtime, journey: str) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(messages)
                .where(messages.c.source == f"journey:{journey}")
                .order_by(messages.c.created_us, messages.c.template)
            )
        )


def steps_of(runtime: Runtime, instance_id: str) -> list[tuple[str, str, str]]:
    with runtime.engine.connect() as conn:
        return [
            (r.step, r.action, r.outcome)
            for r in conn.execute(
                select(journey_steps)
                .where(journey_steps.c.instance_id == instance_id)
                .order_by(journey_steps.c.id)
            )
        ]


def tick(runtime: Runtime, clock: Any, **delta: float) -> RunReport:
    """Move the clock, let the sweep and worker catch up, and run the journeys until idle."""
    if delta:
        clock.advance(timedelta(**delta))
    runtime.worker().drain()
    runtime.sweep().run()
    return runtime.journeys().runner.drain()
