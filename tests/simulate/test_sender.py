"""`telecrm simulate --send`: a sender that behaves like a real webhook platform, against our intake."""

from __future__ import annotations

from datetime import date

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from telecrm.api.app import create_app
from telecrm.ingest.tables import events
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.simulate.sender import WebhookSender
from tests.support.builders import SECRET


class FakeTime:
    """Monotonic clock and sleep that only move when the sender sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def sender_for(
    client: httpx.Client, clock, fake: FakeTime, *, secret: str = SECRET, **kw
) -> WebhookSender:
    return WebhookSender(
        client,
        "/v1/events",
        secret,
        clock=fake.clock,
        sleep=fake.sleep,
        wall=lambda: clock.now().timestamp(),
        **kw,
    )


def stored(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def simulated(clock) -> list[dict]:
    config = SimulationConfig(patients=25, months=2, seed=3, start=date(2025, 11, 1))
    return list(generate(config))


def test_every_simulated_event_reaches_the_intake(runtime, clock) -> None:
    stream = simulated(clock)
    fake = FakeTime()
    with TestClient(create_app(runtime, embedded_worker=False)) as client:
        sender = sender_for(client, clock, fake, rate=10_000, batch=50)
        report = sender.send(stream)
    assert report.failed == []
    assert report.accepted == len(stream) == stored(runtime)


def test_the_sender_paces_itself_to_the_rate(runtime, clock) -> None:
    stream = simulated(clock)[:100]
    fake = FakeTime()
    with TestClient(create_app(runtime, embedded_worker=False)) as client:
        sender = sender_for(client, clock, fake, rate=50, batch=10)
        sender.send(stream)
    # 100 events at 50/s: the last of 10 batches goes out 1.8 s after the first.
    assert abs(sum(fake.slept) - 1.8) < 1e-6


def test_server_errors_are_retried_with_the_same_webhook_id(runtime, clock) -> None:
    stream = simulated(clock)[:30]
    seen_ids: list[str] = []
    failures = {"left": 2}
    fake = FakeTime()
    with TestClient(create_app(runtime, embedded_worker=False)) as app_client:

        def flaky(request: httpx.Request) -> httpx.Response:
            seen_ids.append(request.headers["webhook-id"])
            if failures["left"]:
                failures["left"] -= 1
                return httpx.Response(503, headers={"retry-after": "2"})
            answer = app_client.post(
                request.url.path, content=request.content, headers=dict(request.headers)
            )
            return httpx.Response(
                answer.status_code, content=answer.content, headers=answer.headers
            )

        with httpx.Client(transport=httpx.MockTransport(flaky), base_url="http://intake") as client:
            sender = sender_for(client, clock, fake, rate=10_000, batch=30)
            report = sender.send(stream)
    assert report.retries == 2 and report.failed == []
    assert len(set(seen_ids)) == 1  # one message, three attempts
    assert fake.slept.count(2.0) == 2  # Retry-After honoured over the shorter backoff
    assert report.accepted == 30 == stored(runtime)


def test_a_permanent_refusal_is_reported_not_retried(runtime, clock) -> None:
    fake = FakeTime()
    with TestClient(create_app(runtime, embedded_worker=False)) as client:
        sender = sender_for(
            client,
            clock,
            fake,
            secret="whsec_" + "d3JvbmctYnV0LXZhbGlkLXNlY3JldA==",
            rate=10_000,
            batch=10,
        )
        report = sender.send(simulated(clock)[:10])
    assert report.retries == 0
    assert report.failed == [(401, "Signature rejected")]
    assert stored(runtime) == 0


def test_the_sender_gives_up_when_the_intake_is_down(clock) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake = FakeTime()
    stream = simulated(clock)
    with httpx.Client(transport=httpx.MockTransport(down), base_url="http://intake") as client:
        report = sender_for(client, clock, fake, rate=10_000, batch=10).send(stream)
    assert report.gave_up
    assert report.events == 30 < len(stream)  # three batches, then it stopped
    assert len(report.failed) == 3
