"""`telecrm pull`: the platform API read incrementally into the same events the webhooks carry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from telecrm.domain.events import parse_event
from telecrm.ingest.puller import PlatformPuller, PullError
from telecrm.ingest.tables import events, pull_checkpoints
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.simulate.platform_api import create_platform_app, mint_token
from telecrm.simulate.platform_data import PlatformData

JWT_SECRET = "test-platform-secret-of-enough-length-0123"


@pytest.fixture
def stream() -> list[dict]:
    return list(generate(SimulationConfig(patients=30, months=2, seed=4, start=date(2025, 11, 1))))


@pytest.fixture
def platform(stream, clock) -> Iterator[TestClient]:
    app = create_platform_app(
        PlatformData.from_events(stream), jwt_secret=JWT_SECRET, now=clock.now
    )
    with TestClient(app) as client:
        client.headers["Authorization"] = "Bearer " + mint_token(
            JWT_SECRET, sub="telecrm", role="admin", ttl_seconds=3600, now=clock.now()
        )
        yield client


def count(runtime, type_: str | None = None) -> int:
    query = select(func.count()).select_from(events)
    if type_:
        query = query.where(events.c.type == type_)
    with runtime.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def puller(client: httpx.Client, runtime, clock, **kw) -> PlatformPuller:
    return PlatformPuller(
        client, runtime.intake(), runtime.engine, clock, page_size=7, sleep=lambda _: None, **kw
    )


def test_a_pull_brings_every_patient_and_consultation(platform, runtime, clock, stream) -> None:
    report = puller(platform, runtime, clock).pull()
    patients = {e["patient"]["id"] for e in stream if e["type"] == "patient.registered"}
    consultations = {
        e["data"]["consultation_id"] for e in stream if e["type"] == "consultation.submitted"
    }
    assert report.rejected == []
    assert count(runtime, "patient.registered") == len(patients)
    assert count(runtime, "consultation.submitted") == len(consultations)
    assert report.pages > 2  # it really paged (7 per page)


def test_pulling_again_stores_nothing_new(platform, runtime, clock) -> None:
    puller(platform, runtime, clock).pull()
    before = count(runtime)
    again = puller(platform, runtime, clock).pull()
    assert again.accepted == 0 and count(runtime) == before


def test_a_pull_fills_webhook_gaps_without_duplicating_what_webhooks_brought(
    platform, runtime, clock, stream
) -> None:
    facts = [
        e
        for e in stream
        if e["type"] in ("patient.registered", "consultation.submitted", "consultation.assigned")
    ]
    delivered = facts[::2]  # half the webhooks were delivered, half were lost
    runtime.intake().accept(
        [parse_event(e, now=clock.now()) for e in delivered],
        source="webhook",
        actor="test",
        unknown_patients="skip",
    )
    puller(platform, runtime, clock).pull()
    for type_ in ("patient.registered", "consultation.submitted", "consultation.assigned"):
        expected = len(
            {
                (e["patient"]["id"], str(sorted(e["data"].items())))
                for e in facts
                if e["type"] == type_
            }
        )
        assert count(runtime, type_) == expected, type_


def test_server_errors_and_rate_limits_are_retried(platform, runtime, clock) -> None:
    answers = iter([503, 429])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(answers, None)
        if status is not None:
            return httpx.Response(status, headers={"retry-after": "1"})
        real = platform.get(request.url.path, params=dict(request.url.params))
        return httpx.Response(real.status_code, content=real.content)

    waits: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(flaky), base_url="http://platform") as client:
        report = PlatformPuller(
            client, runtime.intake(), runtime.engine, clock, sleep=waits.append
        ).pull()
    assert waits == [1.0, 1.0] and report.rejected == []
    assert count(runtime, "patient.registered") > 0


def test_a_malformed_page_stops_the_walk_and_keeps_the_checkpoint(platform, runtime, clock) -> None:
    calls = {"n": 0}

    def breaks_on_page_three(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 3:
            return httpx.Response(200, content=b"<html>gateway</html>")
        real = platform.get(request.url.path, params=dict(request.url.params))
        return httpx.Response(real.status_code, content=real.content)

    with (
        httpx.Client(
            transport=httpx.MockTransport(breaks_on_page_three), base_url="http://platform"
        ) as client,
        pytest.raises(PullError, match="not valid JSON"),
    ):
        puller(client, runtime, clock).pull()
    with runtime.engine.connect() as conn:
        saved = conn.execute(select(pull_checkpoints.c.cursor)).scalar_one()
    assert saved  # two pages landed; the walk resumes after them
    stored = count(runtime)
    puller(platform, runtime, clock).pull()
    assert count(runtime) > stored
    again = puller(platform, runtime, clock).pull()
    assert again.accepted == 0


def test_a_cursor_that_does_not_advance_is_refused(runtime, clock) -> None:
    def stuck(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [], "next_cursor": "same"})

    with (
        httpx.Client(transport=httpx.MockTransport(stuck), base_url="http://platform") as client,
        pytest.raises(PullError, match="same cursor"),
    ):
        puller(client, runtime, clock).pull(("patients",))


def test_a_record_that_fails_validation_is_reported_and_the_rest_land(runtime, clock) -> None:
    page = {
        "data": [
            {
                "id": "pat_ok",
                "first_name": "Ada",
                "last_name": "L",
                "email": "ada@example.com",
                "created_at": "2025-11-02T10:00:00Z",
                "updated_at": "2025-11-02T10:00:00Z",
            },
            {
                "id": "pat_bad",
                "first_name": "Bo",
                "last_name": "B",
                "email": "not-an-email",
                "created_at": "2025-11-02T10:00:00Z",
                "updated_at": "2025-11-02T10:00:00Z",
            },
        ],
        "next_cursor": None,
    }
    with httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=page)),
        base_url="http://platform",
    ) as client:
        report = puller(client, runtime, clock).pull(("patients",))
    assert report.accepted == 1
    assert [(rid, reason) for rid, reason, _ in report.rejected] == [
        ("patients/pat_bad", "invalid_data")
    ]
    assert all("not-an-email" not in detail for _, _, detail in report.rejected)


def test_a_timeout_is_retried_like_a_server_error(platform, runtime, clock) -> None:
    timeouts = {"left": 1}

    def slow_once(request: httpx.Request) -> httpx.Response:
        if timeouts["left"]:
            timeouts["left"] -= 1
            raise httpx.ReadTimeout("the platform did not answer in time", request=request)
        real = platform.get(request.url.path, params=dict(request.url.params))
        return httpx.Response(real.status_code, content=real.content)

    waits: list[float] = []
    with httpx.Client(
        transport=httpx.MockTransport(slow_once), base_url="http://platform"
    ) as client:
        report = PlatformPuller(
            client, runtime.intake(), runtime.engine, clock, sleep=waits.append
        ).pull()
    assert waits == [0.5] and report.accepted > 0
