"""`telecrm serve` sends the triggers' messages by itself: the embedded worker's messaging thread
plans and dispatches them to providers configured only through settings."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pydantic import SecretStr

from telecrm.bootstrap import EmbeddedWorker, bootstrap
from telecrm.domain.events import parse_event
from telecrm.sandbox.sendgrid import SendGridSandboxConfig, create_sendgrid_sandbox
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from tests.support.builders import registration
from tests.support.live_server import live_server

DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def test_the_embedded_worker_sends_the_triggers_messages(runtime, clock) -> None:
    clock.set(DAYTIME)
    sendgrid = create_sendgrid_sandbox(SendGridSandboxConfig(), deliver=lambda u, h, b: 200)
    twilio = TwilioSandbox(TwilioSandboxConfig(), deliver=lambda u, h, b: 200)
    with live_server(sendgrid.app) as sg_url, live_server(twilio.app) as tw_url:
        settings = runtime.settings.model_copy(
            update={
                "sendgrid_api_key": SecretStr("SG.sandbox-key"),
                "sendgrid_url": sg_url,
                "twilio_url": tw_url,
                "twilio_account_sid": twilio.config.account_sid,
                "twilio_auth_token": SecretStr(twilio.config.auth_token),
                "twilio_messaging_service_sid": twilio.config.messaging_service_sid,
            }
        )
        rt = bootstrap(settings, clock=clock, engine=runtime.engine, migrate=False)
        worker = EmbeddedWorker(rt, sweep_every_seconds=3600)
        worker.start()
        try:
            data = {"communication_preferences": {"sms_consent": True}}
            rt.intake().accept(
                [parse_event(registration("P-1", DAYTIME, data=data), now=DAYTIME)],
                source="webhook",
                actor="test",
            )
            rt.work_available.set()
            deadline = time.monotonic() + 30
            while not (sendgrid.messages and twilio.messages):  # waiting on threads, not a timer
                assert time.monotonic() < deadline, "the messaging thread never sent"
                time.sleep(0.05)
        finally:
            worker.stop()
            worker.join(timeout=10)
    assert [m["categories"] for m in sendgrid.messages] == [["welcome"]]
    assert len(twilio.messages) == 1
    from prometheus_client import generate_latest

    assert (
        'telecrm_messages_total{outcome="sent"} 2.0'
        in generate_latest(rt.metrics.registry).decode()
    )
