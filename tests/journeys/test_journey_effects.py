"""emit_event and webhook steps: a milestone event lands in the event log once (and another
journey can enter on it); a webhook reaches a receiver signed, once per step, retried on 5xx,
with only the fields the step names and PHI only under a BAA."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import select

from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.ingest.signatures import SignatureError, Verifier
from telecrm.ingest.tables import events
from telecrm.journeys.definition import JourneyError
from telecrm.journeys.tables import journey_webhooks
from telecrm.journeys.validate import check_text
from telecrm.journeys.webhooks import JourneyWebhookSender
from telecrm.messaging.templates import TemplateCatalog
from telecrm.sandbox.faults import sandbox_client
from telecrm.sync.tables import disclosures
from tests.journeys.helpers import DAYTIME, consenting, instances, tick
from tests.support.builders import CANARY_EMAIL, event

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EMITTER = """version: 1
name: probe_emit
entry: {event: questionnaire.started}
steps:
  - {id: mark, emit_event: {milestone: nurtured}}
  - id: tell
    webhook: {url: "https://care.example.com/hooks", secret_env: PROBE_SECRET,
              fields: [acquisition_channel, stage]}
"""
LISTENER = """version: 1
name: probe_listen
entry: {event: journey.milestone, when: {milestone: nurtured}}
steps:
  - {id: done, exit: heard}
"""


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # what to answer, in order (then 204)
    received: list[tuple[str, dict]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def app(self, now) -> FastAPI:  # type: ignore[no-untyped-def]
        api = FastAPI()
        verifier = Verifier.from_secrets([SECRET])

        @api.post("/hooks")
        async def hooks(request: Request) -> Response:
            body = await request.body()
            self.raw.append(body)
            try:
                webhook_id = verifier.verify(request.headers, body, now=now())
            except SignatureError:
                return Response(status_code=401)
            status = self.statuses.pop(0) if self.statuses else 204
            if status < 300:
                self.received.append((webhook_id, orjson.loads(body)))
            return Response(status_code=status)

        return api


def _runtime(runtime: Runtime, folder: Path) -> Runtime:
    return bootstrap(
        runtime.settings.model_copy(update={"journeys_dir": folder}),
        clock=runtime.clock,
        engine=runtime.engine,
        migrate=False,
    )


def _folder(tmp_path: Path, *texts: str) -> Path:
    folder = tmp_path / "journeys"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"probe_{i}.yaml").write_text(text)
    return folder


def _feed(rt: Runtime, raw: list[dict]) -> None:
    from telecrm.domain.events import parse_event

    now = rt.clock.now()
    rt.intake().accept([parse_event(e, now=now) for e in raw], source="webhook", actor="t")
    rt.worker().drain()


def _sender(rt: Runtime, clock: FrozenClock, receiver: Receiver) -> JourneyWebhookSender:
    client = sandbox_client(receiver.app(clock.now), base_url="https://care.example.com")
    return JourneyWebhookSender(
        rt.engine, rt.cipher, clock, client, environ={"PROBE_SECRET": SECRET}
    )


def test_a_milestone_is_emitted_once_and_another_journey_enters_on_it(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    rt = _runtime(runtime, _folder(tmp_path, EMITTER, LISTENER))
    _feed(rt, [consenting("p1", DAYTIME), event("questionnaire.started", "p1", DAYTIME,
                                                 {"questionnaire_id": "q1"})])  # fmt: skip
    tick(rt, clock)
    tick(rt, clock)  # the milestone is folded, then heard
    with rt.engine.connect() as conn:
        emitted = conn.execute(
            select(events.c.event_id, events.c.source).where(events.c.type == "journey.milestone")
        ).all()
    assert len(emitted) == 1 and emitted[0].source == "journey"
    (listener,) = instances(rt, "probe_listen")
    assert listener.entry_event_id == emitted[0].event_id
    assert (listener.state, listener.exit_reason) == ("exited", "step:heard")


def test_a_webhook_is_signed_retried_on_5xx_and_delivered_once(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    rt = _runtime(runtime, _folder(tmp_path, EMITTER))
    registration = consenting("p1", DAYTIME)
    registration["data"]["email"] = CANARY_EMAIL
    registration["data"]["acquisition_channel"] = "paid_search"
    _feed(rt, [registration, event("questionnaire.started", "p1", DAYTIME,
                                   {"questionnaire_id": "q1"})])  # fmt: skip
    tick(rt, clock)
    receiver = Receiver(statuses=[503])
    sender = _sender(rt, clock, receiver)
    first = sender.drain()
    assert (first.delivered, first.retried) == (0, 1)
    clock.advance(timedelta(seconds=31))
    second = sender.drain()
    assert second.delivered == 1
    assert sender.drain().attempted == 0  # delivered rows are never sent again
    (webhook_id, body) = receiver.received[0]
    assert len(receiver.raw) == 2  # the 503 and the retry carried the same webhook-id
    assert body["data"] == {"acquisition_channel": "paid_search", "stage": "lead"}
    assert all(CANARY_EMAIL.encode() not in raw for raw in receiver.raw)
    with rt.engine.connect() as conn:
        row = conn.execute(select(journey_webhooks)).one()
        disclosed = conn.execute(select(disclosures)).all()
    assert (row.webhook_id, row.status, row.attempts, row.code) == (
        webhook_id, "delivered", 2, "204",
    )  # fmt: skip
    assert [(d.destination, d.phi) for d in disclosed] == [("webhook:care.example.com", False)]


def test_a_4xx_fails_at_once_and_a_missing_secret_waits(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    rt = _runtime(runtime, _folder(tmp_path, EMITTER))
    _feed(rt, [consenting("p1", DAYTIME), event("questionnaire.started", "p1", DAYTIME,
                                                 {"questionnaire_id": "q1"})])  # fmt: skip
    tick(rt, clock)
    receiver = Receiver(statuses=[422])
    unconfigured = JourneyWebhookSender(
        rt.engine, rt.cipher, clock,
        sandbox_client(receiver.app(clock.now), base_url="https://care.example.com"),
        environ={},
    )  # fmt: skip
    assert unconfigured.drain().retried == 1 and receiver.raw == []
    clock.advance(timedelta(minutes=1))
    assert _sender(rt, clock, receiver).drain().failed == 1
    with rt.engine.connect() as conn:
        row = conn.execute(select(journey_webhooks)).one()
    assert (row.status, row.code) == ("failed", "422")


def test_a_phi_field_in_a_webhook_needs_a_baa() -> None:
    templates = {(t.name, t.channel) for t in TemplateCatalog.load().all()}
    text = EMITTER.replace("fields: [acquisition_channel, stage]", "fields: [medications]")
    with pytest.raises(JourneyError, match="'medications' is PHI"):
        check_text(text, "probe.yaml", templates)
    under_baa = text.replace("fields: [medications]}", "fields: [medications], baa: true}")
    assert check_text(under_baa, "probe.yaml", templates).name == "probe_emit"
    with pytest.raises(JourneyError, match="https"):
        check_text(EMITTER.replace("https://care", "http://care"), "probe.yaml", templates)


FORGED = {
    "journey.case_opened": {"journey": "x", "case_id": "c1", "kind": "case", "subject": "forged"},
    "analytics.scored": {"lead_score": 99, "engagement_score": 99, "model": "forged"},
}


@pytest.mark.parametrize("kind", sorted(FORGED))
def test_a_platform_cannot_post_telecrm_s_own_events(api, runtime: Runtime, kind: str) -> None:  # type: ignore[no-untyped-def]
    response = api.post(
        {
            "id": "evt_forged",
            "type": kind,
            "version": 1,
            "occurred_at": api.now.isoformat(),
            "patient": {"id": "p1"},
            "data": FORGED[kind],
        }
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Reserved event type"
    assert kind in response.json()["detail"]
    with runtime.engine.connect() as conn:
        assert conn.execute(select(events.c.event_id)).first() is None
