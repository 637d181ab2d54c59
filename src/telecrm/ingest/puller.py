"""`telecrm pull`: read the platform's REST API incrementally and turn what it says into events.

The safety net under the webhooks: whatever the platform's API shows that no webhook delivered
(a missed or dropped delivery) becomes the same event a webhook would have carried. Event ids are
derived from the record (`pull:consultation:<id>:assigned`), and the intake's fact keys make a
pulled fact that already came by webhook a duplicate, so pulling as often as you like stores
nothing twice.

Each page is stored with its checkpoint in one transaction; a crash resumes at the page after
the last one stored. 429, 5xx and transport errors are retried with backoff (Retry-After
honoured). A malformed page stops the walk with a PullError and leaves the checkpoint where it
was; a record that fails validation is reported by id and reason and the rest of the page lands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy import Connection, Engine, select

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import Event, EventRejected, parse_event
from telecrm.ingest.intake import EventIntake, IntakeResult
from telecrm.ingest.tables import pull_checkpoints
from telecrm.retry_policy import RETRYABLE_STATUS, backoff_seconds
from telecrm.store.upsert import upsert

log = structlog.get_logger("telecrm.pull")

RESOURCES = ("patients", "consultations")  # patients first: a consultation needs its patient


class PullError(RuntimeError):
    """The platform API answered something we cannot page through; the checkpoint is kept."""


@dataclass
class PullReport:
    pages: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (record, reason, detail)


def _iso(value: Any) -> str:
    if not isinstance(value, str):
        raise EventRejected("invalid_record", "a timestamp is missing")
    return value


def events_for(resource: str, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The wire events a webhook would have carried for what this record shows."""
    rid = record.get("id")
    if not isinstance(rid, str):
        raise EventRejected("invalid_record", "a record has no id")
    if resource == "patients":
        created = _iso(record.get("created_at"))
        data: dict[str, Any] = {
            k: record[k] for k in ("first_name", "last_name", "email", "phone") if record.get(k)
        }
        if record.get("state"):
            data["address"] = {"state": record["state"]}
        yield {
            "id": f"pull:patient:{rid}",
            "type": "patient.registered",
            "occurred_at": created,
            "patient": {"id": rid},
            "data": data,
        }
        updated = _iso(record.get("updated_at"))
        if updated != created:
            yield {
                "id": f"pull:patient:{rid}:{updated}"[:128],
                "type": "patient.updated",
                "occurred_at": updated,
                "patient": {"id": rid},
                "data": data,
            }
    elif resource == "consultations":
        patient = {"id": record.get("patient_id")}
        submitted: dict[str, Any] = {"consultation_id": rid}
        if record.get("condition_area"):
            submitted["condition_area"] = record["condition_area"]
        yield {
            "id": f"pull:consultation:{rid}:submitted",
            "type": "consultation.submitted",
            "occurred_at": _iso(record.get("created_at")),
            "patient": patient,
            "data": submitted,
        }
        status, provider = record.get("status"), record.get("provider_id")
        for step in ("assigned", "accepted"):
            if status == step or (step == "assigned" and status == "accepted"):
                yield {
                    "id": f"pull:consultation:{rid}:{step}:{provider}"[:128],
                    "type": f"consultation.{step}",
                    "occurred_at": _iso(record.get("updated_at")),
                    "patient": patient,
                    "data": {"consultation_id": rid, "provider_id": provider},
                }
    else:
        raise ValueError(f"unknown resource {resource!r}")


class PlatformPuller:
    def __init__(
        self,
        client: httpx.Client,
        intake: EventIntake,
        engine: Engine,
        clock: Clock,
        *,
        page_size: int = 200,
        max_attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client, self._intake, self._engine, self._clock = client, intake, engine, clock
        self._page_size, self._attempts, self._sleep = page_size, max_attempts, sleep

    def pull(
        self,
        resources: tuple[str, ...] = RESOURCES,
        on_page: Callable[[str, PullReport], None] | None = None,
    ) -> PullReport:
        report = PullReport()
        for resource in resources:
            self._walk(resource, report, on_page)
        return report

    def _walk(
        self, resource: str, report: PullReport, on_page: Callable[[str, PullReport], None] | None
    ) -> None:
        cursor, high_water = self._checkpoint(resource)
        while True:
            params: dict[str, Any] = {"limit": self._page_size}
            if cursor:
                params["cursor"] = cursor
            elif high_water:
                params["updated_since"] = high_water
            data, next_cursor = self._page(resource, params)
            if next_cursor is not None and next_cursor == cursor:
                raise PullError(f"{resource}: the API returned the same cursor again; stopped")
            batch: list[Event] = []
            newest = high_water
            for record in data:
                report.records += 1
                try:
                    if not isinstance(record, dict):
                        raise EventRejected("invalid_record", "a record is not an object")
                    for wire in events_for(resource, record):
                        batch.append(parse_event(wire, now=self._clock.now()))
                    stamp = record.get("updated_at")
                    if isinstance(stamp, str) and (newest is None or stamp > newest):
                        newest = stamp
                except EventRejected as exc:
                    rid = record.get("id") if isinstance(record, dict) else None
                    report.rejected.append((f"{resource}/{rid}", exc.reason, exc.detail))
                    # The record's id and the rule it broke; never its values (they may be PHI).
                    log.warning(
                        "pull.record_rejected",
                        resource=resource,
                        record_id=rid if isinstance(rid, str) else None,
                        reason=exc.reason,
                    )
            self._store(resource, batch, next_cursor, newest, report)
            report.pages += 1
            if on_page is not None:
                on_page(resource, report)
            if next_cursor is None:
                return
            cursor, high_water = next_cursor, newest

    def _store(
        self,
        resource: str,
        batch: list[Event],
        next_cursor: str | None,
        high_water: str | None,
        report: PullReport,
    ) -> None:
        now_us = to_micros(self._clock.now())

        def checkpoint(conn: Connection, _: IntakeResult) -> None:
            upsert(
                conn,
                pull_checkpoints,
                [
                    {
                        "resource": resource,
                        "cursor": next_cursor,
                        "high_water": high_water,
                        "updated_us": now_us,
                    }
                ],
                ["resource"],
                ["cursor", "high_water", "updated_us"],
            )

        result = self._intake.accept(
            batch, source="pull", actor="puller", unknown_patients="skip", in_transaction=checkpoint
        )
        report.accepted += result.accepted
        report.duplicates += result.duplicates
        report.rejected.extend((f"{resource}/{eid}", r, d) for eid, r, d in result.skipped)

    def _checkpoint(self, resource: str) -> tuple[str | None, str | None]:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(pull_checkpoints.c.cursor, pull_checkpoints.c.high_water).where(
                    pull_checkpoints.c.resource == resource
                )
            ).first()
        return (row.cursor, row.high_water) if row is not None else (None, None)

    def _page(self, resource: str, params: dict[str, Any]) -> tuple[list[Any], str | None]:
        for attempt in range(self._attempts):
            try:
                response = self._client.get(f"/{resource}", params=params)
            except httpx.TransportError:
                status, retry_after = 0, None
            else:
                status = response.status_code
                if status == 200:
                    return _parse_page(resource, response.content)
                if status not in RETRYABLE_STATUS:
                    raise PullError(f"{resource}: the API answered {status}")
                retry_after = response.headers.get("retry-after")
            if attempt == self._attempts - 1:
                raise PullError(
                    f"{resource}: no answer after {self._attempts} attempts ({status or 'no connection'})"
                )
            self._sleep(backoff_seconds(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover


def _parse_page(resource: str, body: bytes) -> tuple[list[Any], str | None]:
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PullError(f"{resource}: a page is not valid JSON") from None
    if not isinstance(page, dict) or not isinstance(page.get("data"), list):
        raise PullError(f"{resource}: a page has no `data` list")
    next_cursor = page.get("next_cursor")
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise PullError(f"{resource}: `next_cursor` is not a string")
    return page["data"], next_cursor
