"""A runtime wired to the SendGrid and Twilio sandboxes, with their callbacks posted, signed, to
telecrm's real API app: events in, triggers planned, messages sent over HTTP, engagement back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr

from telecrm.api.app import create_app
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.connectors.sendgrid import SendGridConfig, SendGridConnector
from telecrm.connectors.twilio import TwilioConfig, TwilioConnector
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.messaging.dispatcher import DispatchReport
from telecrm.messaging.planner import PlanReport
from telecrm.messaging.wiring import STATUS_PATH, Messaging, build_messaging
from telecrm.sandbox.faults import sandbox_client
from telecrm.sandbox.sendgrid import SendGridSandbox, SendGridSandboxConfig, create_sendgrid_sandbox
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from telecrm.settings import Settings

PUBLIC = "http://testserver"
SENDGRID_KEY = "SG.sandbox-key"


class MessagingHarness:
    def __init__(self, runtime: Runtime, clock: FrozenClock, client: TestClient,
                 sendgrid: SendGridSandbox, twilio: TwilioSandbox) -> None:  # fmt: skip
        self.runtime, self.clock, self.api = runtime, clock, client
        self.sendgrid, self.twilio = sendgrid, twilio
        # Every byte telecrm sent to each provider, as it left (for the PHI canary tests).
        self.sent_bytes: dict[str, list[bytes]] = {"sendgrid": [], "twilio": []}

        def capture(kind: str) -> Any:
            def hook(request: httpx.Request) -> None:
                self.sent_bytes[kind].append(request.url.raw_path + b"\n" + request.read())

            return hook

        self.email = SendGridConnector(
            SendGridConfig(base_url="http://sendgrid", api_key=SecretStr(SENDGRID_KEY),
                           from_email="care@example.com", from_name="Telecrm Health"),
            sandbox_client(
                sendgrid.app, base_url="http://sendgrid",
                event_hooks={"request": [capture("sendgrid")]},
            ),
            now=lambda: clock.now().timestamp(),
        )  # fmt: skip
        tc = twilio.config
        self.sms = TwilioConnector(
            TwilioConfig(base_url="http://twilio", account_sid=tc.account_sid,
                         auth_token=SecretStr(tc.auth_token),
                         messaging_service_sid=tc.messaging_service_sid,
                         status_callback_url=PUBLIC + STATUS_PATH),
            sandbox_client(
                twilio.app, base_url="http://twilio", event_hooks={"request": [capture("twilio")]}
            ),
        )  # fmt: skip
        self.parts: Messaging = build_messaging(
            runtime, email=self.email, sms=self.sms, from_settings=False
        )
        runtime.use_messaging(self.parts)

    def feed(self, raw_events: Iterable[dict[str, Any]]) -> None:
        now = self.clock.now()
        self.runtime.intake().accept(
            [parse_event(e, now=now) for e in raw_events], source="webhook", actor="test"
        )
        self.runtime.worker().drain()

    def plan(self) -> PlanReport:
        return self.parts.planner.drain()

    def send(self) -> DispatchReport:
        return self.parts.dispatcher.drain()

    def run(self) -> tuple[PlanReport, DispatchReport]:
        return self.plan(), self.send()

    def callbacks(self) -> None:
        """Every pending provider callback, delivered (signed) to telecrm's API; then profiles."""
        self.sendgrid.flush_events()
        self.twilio.flush_callbacks()
        self.runtime.worker().drain()

    def later(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))


def _deliver_to(client: TestClient) -> Any:
    def deliver(url: str, headers: dict[str, str], body: bytes) -> int:
        path = httpx.URL(url).raw_path.decode()
        return client.post(path, content=body, headers=headers).status_code

    return deliver


@contextmanager
def messaging_harness(
    runtime: Runtime,
    clock: FrozenClock,
    *,
    settings: dict[str, Any] | None = None,
    sendgrid: dict[str, Any] | None = None,
    twilio: dict[str, Any] | None = None,
) -> Iterator[MessagingHarness]:
    """Sandboxes, the API app (callbacks land there) and a runtime whose settings know both."""
    now = lambda: clock.now().timestamp()  # noqa: E731

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    holder: dict[str, TestClient] = {}

    def deliver(url: str, headers: dict[str, str], body: bytes) -> int:
        return _deliver_to(holder["client"])(url, headers, body)

    sg = create_sendgrid_sandbox(
        SendGridSandboxConfig(webhook_url=PUBLIC + "/webhooks/sendgrid", **(sendgrid or {})),
        now=now, sleep=sleep, deliver=deliver,
    )  # fmt: skip
    tw = TwilioSandbox(
        TwilioSandboxConfig(status_callback_url=PUBLIC + STATUS_PATH,
                            inbound_url=PUBLIC + "/webhooks/twilio/inbound", **(twilio or {})),
        now=now, sleep=sleep, deliver=deliver,
    )  # fmt: skip
    updated: Settings = runtime.settings.model_copy(
        update={
            "public_url": PUBLIC,
            "sendgrid_webhook_public_key": sg.public_key,
            "twilio_account_sid": tw.config.account_sid,
            "twilio_auth_token": SecretStr(tw.config.auth_token),
            "twilio_messaging_service_sid": tw.config.messaging_service_sid,
            **(settings or {}),
        }
    )
    rt = bootstrap(updated, clock=clock, engine=runtime.engine, migrate=False)
    with TestClient(create_app(rt, embedded_worker=False), raise_server_exceptions=False) as client:
        holder["client"] = client
        yield MessagingHarness(rt, clock, client, sg, tw)
