"""The effects of journey steps other than messages, written in the runner's transaction:
journey events (milestones, CRM fields set, tasks and cases opened) into the event log through
the intake, so the projection and the sync carry them like any event; webhook rows into their
outbox. Each is keyed by the step visit, so a re-run after a crash repeats nothing."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import Connection

from telecrm.domain.clock import to_micros
from telecrm.domain.events import parse_event
from telecrm.ingest.intake import EventIntake
from telecrm.journeys.steps import Effect
from telecrm.journeys.tables import journey_webhooks
from telecrm.store.upsert import insert_ignoring_conflicts


def write_effects(
    conn: Connection, intake: EventIntake | None, effects: list[tuple[Any, Effect]], now: Any
) -> None:
    """Milestone events into the event log, webhook rows into their outbox: both in this
    transaction, both keyed by the step visit, so a re-run after a crash repeats nothing."""
    now_us = to_micros(now)
    emitted = []
    for r, e in effects:
        event_id = "je_" + hashlib.sha256(e.key.encode()).hexdigest()[:24]
        data: dict[str, Any]
        if e.milestone is not None:
            kind, data = "journey.milestone", {"milestone": e.milestone}
        elif e.case is not None:
            kind, data = (
                "journey.case_opened",
                {
                    "case_id": event_id,
                    "kind": e.case_kind,
                    "subject": e.case.subject,
                    "priority": e.case.priority,
                    "due_at": (now + e.case.due_in).isoformat(),
                },
            )
        elif e.update is not None:
            kind, data = "journey.fields_set", {"fields": e.update}
        else:
            continue
        emitted.append(
            parse_event(
                {
                    "id": event_id,
                    "type": kind,
                    "version": 1,
                    "occurred_at": now.isoformat(),
                    "patient": {"id": r.patient_key},
                    "data": {"journey": r.journey, **data},
                },
                now=now,
            )
        )
    milestones = emitted
    if milestones:
        if intake is None:
            raise RuntimeError("emit_event / crm_* steps need the runner built with an intake")
        intake.store_in(conn, milestones, source="journey", actor="journeys")
    hooks = [
        {
            "webhook_id": "jw_" + hashlib.sha256(e.key.encode()).hexdigest()[:24],
            "instance_id": r.instance_id,
            "journey": r.journey,
            "step": e.step,
            "patient_key": r.patient_key,
            "url": e.webhook.url,
            "secret_env": e.webhook.secret_env,
            "fields": orjson.dumps(e.webhook.fields).decode(),
            "status": "pending",
            "attempts": 0,
            "due_us": now_us,
            "created_us": now_us,
        }
        for r, e in effects
        if e.webhook is not None
    ]
    if hooks:
        insert_ignoring_conflicts(conn, journey_webhooks, hooks, ["webhook_id"])
