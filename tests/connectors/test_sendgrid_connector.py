"""The SendGrid connector against the sandbox: batching, per-message rejections, errors, no PHI leaks.

Every request the connector sends is checked against SendGrid's own OpenAPI documents in
../shared/specs/sendgrid (openapi-core), so the sandbox cannot drift into accepting bodies the
real API would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from werkzeug.datastructures import Headers, ImmutableMultiDict

from telecrm.connectors.base import AuthFailed, ConnectorError, RateLimited, TransientFailure
from telecrm.connectors.messaging_base import EmailMessage, SendResult
from telecrm.connectors.sendgrid import SendGridConfig, SendGridConnector, plan_requests
from telecrm.sandbox.faults import Faults, SandboxTransport
from telecrm.sandbox.sendgrid import SendGridSandbox, SendGridSandboxConfig, create_sendgrid_sandbox

BASE = "https://api.sendgrid.com"
START = 1_700_000_000.0
SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "sendgrid"
CANARY_EMAIL = "canary-xyz@example.com"
CANARY_TEXT = "canary-subject-7d1f"


def _spec(name: str) -> OpenAPI:
    path = SPECS / name
    if not path.is_file():
        raise FileNotFoundError(f"SendGrid spec missing: {path} (expected ../shared/specs beside the repo)")  # fmt: skip
    return OpenAPI.from_file_path(str(path))


MAIL_SPEC = _spec("tsg_mail_v3.json")
SUPPRESSIONS_SPEC = _spec("tsg_suppressions_v3.json")


@dataclass
class SpecRequest:
    """An httpx.Request seen through openapi-core's Request protocol."""

    request: httpx.Request
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        query = ImmutableMultiDict(parse_qsl(self.request.url.query.decode()))
        self.parameters = RequestParameters(
            query=query, header=Headers(dict(self.request.headers)), cookie=ImmutableMultiDict()
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.host}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        return self.request.headers.get("content-type", "").lower()


class CheckedTransport(httpx.BaseTransport):
    """Validates each request against the official spec, then hands it to the sandbox.

    Strict by default: a request the spec refuses fails the test. A test that feeds the connector
    bad data on purpose turns `strict` off and asserts on `spec_invalid` instead.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []
        self.spec_invalid: list[int] = []  # indexes into `requests`
        self.strict = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        spec = MAIL_SPEC if request.url.path.startswith("/v3/mail") else SUPPRESSIONS_SPEC
        try:
            spec.validate_request(SpecRequest(request))
        except OpenAPIError:
            if self.strict:
                raise
            self.spec_invalid.append(len(self.requests))
        self.requests.append(request)
        return self.inner.handle_request(request)


class Clock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Rig:
    sandbox: SendGridSandbox
    connector: SendGridConnector
    transport: CheckedTransport
    clock: Clock

    def mail_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.transport.requests if r.url.path == "/v3/mail/send"]  # fmt: skip


def make_rig(**config: Any) -> Rig:
    clock = Clock()
    sandbox = create_sendgrid_sandbox(
        SendGridSandboxConfig(**config),
        now=clock.now,
        sleep=clock.sleep,
        deliver=lambda u, h, b: 200,
    )
    transport = CheckedTransport(SandboxTransport(sandbox.app, base_url=BASE))
    client = httpx.Client(transport=transport, base_url=BASE)
    settings = SendGridConfig(api_key="SG.sandbox-key", from_email="care@clinic.example", from_name="Clinic")  # fmt: skip
    return Rig(sandbox, SendGridConnector(settings, client, now=clock.now), transport, clock)


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = make_rig(asm_groups={11: "appointments"})
    yield made
    made.connector.close()


def message(n: int, **changes: Any) -> EmailMessage:
    fields: dict[str, Any] = {
        "message_id": f"msg-{n}", "to_email": f"patient{n}@example.com", "to_name": f"Patient {n}",
        "subject": f"Your appointment #{n}", "html": f'<p>See <a href="https://app.test/a/{n}">it</a></p>',
        "text": f"See https://app.test/a/{n}", "category": "appointment_reminder",
    }  # fmt: skip
    return EmailMessage(**(fields | changes))


def outcomes(results: list[SendResult]) -> dict[str, str]:
    return {r.message_id: r.outcome for r in results}


# -- sending ------------------------------------------------------------------------------------------
def test_a_batch_renders_each_message_exactly_through_substitutions(rig: Rig) -> None:
    batch = [message(1, unsubscribe_group=11), message(2, unsubscribe_group=11, to_name=None)]
    results = rig.connector.send_emails(batch)
    assert outcomes(results) == {"msg-1": "sent", "msg-2": "sent"}
    (body,) = rig.mail_bodies()
    assert body["asm"] == {"group_id": 11} and body["categories"] == ["appointment_reminder"]
    assert all("custom_args" not in body for body in rig.mail_bodies())  # only per personalization
    assert body["personalizations"][0]["custom_args"] == {"telecrm_message_id": "msg-1"}
    stored = {m["email"]: m for m in rig.sandbox.messages}
    for m in batch:
        got = stored[m.to_email]
        assert (got["subject"], got["html"], got["text"]) == (m.subject, m.html, m.text)
        assert got["x_message_id"] == results[0].provider_id
    assert rig.connector.stats.calls == 1


def test_2500_messages_take_three_calls(rig: Rig) -> None:
    results = rig.connector.send_emails([message(n) for n in range(2500)])
    assert len(results) == 2500 and {r.outcome for r in results} == {"sent"}
    assert rig.connector.stats.calls == 3
    assert [len(b["personalizations"]) for b in rig.mail_bodies()] == [1000, 1000, 500]


def test_category_group_and_repeated_address_split_the_requests() -> None:
    batch = [message(1), message(2, category="billing"), message(3, unsubscribe_group=11),
             message(4, to_email="patient1@example.com"), message(5)]  # fmt: skip
    plans = [[m.message_id for m in request] for request in plan_requests(batch)]
    assert plans == [["msg-1", "msg-5"], ["msg-4"], ["msg-2"], ["msg-3"]]


def test_oversized_substitutions_go_alone_with_inline_content(rig: Rig) -> None:
    big = message(1, html="<p>" + "x" * 12_000 + "</p>")
    results = rig.connector.send_emails([big, message(2)])
    assert {r.outcome for r in results} == {"sent"}
    inline = next(b for b in rig.mail_bodies() if "substitutions" not in b["personalizations"][0])
    assert inline["content"][1]["value"] == big.html
    stored = {m["email"]: m for m in rig.sandbox.messages}
    assert stored[big.to_email]["html"] == big.html


def test_a_bad_address_is_rejected_and_the_rest_sent(rig: Rig) -> None:
    rig.transport.strict = False
    batch = [message(1), message(2, to_email="not-an-address"), message(3)]
    results = outcomes_by_id = {r.message_id: r for r in rig.connector.send_emails(batch)}
    assert {k: r.outcome for k, r in results.items()} == {"msg-1": "sent", "msg-2": "rejected", "msg-3": "sent"}  # fmt: skip
    assert outcomes_by_id["msg-2"].code == "400"
    assert outcomes_by_id["msg-2"].detail == "personalizations.1.to.0.email"
    assert rig.connector.stats.calls == 2 and rig.connector.stats.retried == 1
    assert rig.transport.spec_invalid == [
        0
    ]  # the spec refuses the first body too; the resend is valid


def test_a_body_too_large_is_split_in_halves() -> None:
    rig = make_rig(max_body_bytes=1_000)
    results = rig.connector.send_emails([message(n) for n in range(4)])
    assert {r.outcome for r in results} == {"sent"}
    assert [len(b["personalizations"]) for b in rig.mail_bodies()] == [4, 2, 2]


# -- failures ------------------------------------------------------------------------------------------
def test_429_is_rate_limited_until_the_reset(rig: Rig) -> None:
    rig.clock.t = START + 0.25
    rig.sandbox.faults.set(Faults(storm_requests=1))
    with pytest.raises(RateLimited) as caught:
        rig.connector.send_emails([message(1)])
    assert caught.value.retry_after == pytest.approx(0.75)
    assert rig.connector.stats.rate_limited == 1


def test_a_limit_hit_after_part_of_the_batch_went_out_returns_retry_not_an_error() -> None:
    rig = make_rig(requests_per_second=1)
    results = rig.connector.send_emails([message(1), message(2, category="billing")])
    assert outcomes(results) == {"msg-1": "sent", "msg-2": "retry"}
    assert results[1].code == "rate_limited"


def test_a_dropped_connection_is_transient(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        rig.connector.send_emails([message(1)])
    assert caught.value.code == "connection_failed"


def test_server_errors_are_transient_and_bad_keys_are_auth_failures(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as transient:
        rig.connector.send_emails([message(1)])
    assert transient.value.status in (500, 503)
    rig.sandbox.faults.set(Faults())
    rig.connector.config.api_key = type(rig.connector.config.api_key)("SG.revoked")
    with pytest.raises(AuthFailed):
        rig.connector.send_emails([message(1)])


def test_no_address_subject_or_body_reaches_an_error_or_a_detail(rig: Rig) -> None:
    rig.transport.strict = False  # message 2 is invalid on purpose
    canary = message(1, to_email=CANARY_EMAIL, subject=CANARY_TEXT, html=CANARY_TEXT, text=CANARY_TEXT)  # fmt: skip
    broken = message(2, to_email=f"{CANARY_TEXT} {CANARY_EMAIL}", subject="", html=CANARY_TEXT)
    seen: list[str] = []
    for result in rig.connector.send_emails([canary, broken, message(3, to_email=CANARY_EMAIL)]):
        seen.append(f"{result.code} {result.detail}")
    for faults in (Faults(storm_requests=1), Faults(error_rate=1.0), Faults(drop_rate=1.0)):
        rig.sandbox.faults.set(faults)
        with pytest.raises(ConnectorError) as caught:
            rig.connector.send_emails([canary])
        seen += [str(caught.value), repr(caught.value), caught.value.detail]
    assert not any("canary" in text for text in seen), seen


# -- provisioning ---------------------------------------------------------------------------------------
def test_unsubscribe_groups_are_created_once(rig: Rig) -> None:
    first = rig.connector.ensure_unsubscribe_groups(["appointments", "billing"])
    assert first["appointments"] == 11 and first["billing"] != 11
    calls = rig.connector.stats.calls
    assert rig.connector.ensure_unsubscribe_groups(["billing"]) == {"billing": first["billing"]}
    assert rig.connector.stats.calls == calls + 1  # one GET, no POST


def test_global_unsubscribe_round_trip_and_drop(rig: Rig) -> None:
    assert not rig.connector.is_globally_unsubscribed("patient1@example.com")
    rig.connector.add_global_unsubscribe("patient1@example.com")
    assert rig.connector.is_globally_unsubscribed("patient1@example.com")
    assert outcomes(rig.connector.send_emails([message(1)])) == {
        "msg-1": "sent"
    }  # 202, then dropped
    dropped = [e for e in rig.sandbox.pending_events if e["event"] == "dropped"]
    assert [(e["telecrm_message_id"], e["reason"]) for e in dropped] == [("msg-1", "Unsubscribed Address")]  # fmt: skip


# -- SendGrid-hosted dynamic templates --------------------------------------------------------------
HOSTED = "d-" + "0123456789abcdef" * 2


def test_a_hosted_template_gets_dynamic_data_per_recipient_and_no_content(rig: Rig) -> None:
    rig.sandbox.add_template(
        HOSTED,
        subject="Order {{event.order_id}} confirmed",
        html="<p>Hi {{patient.first_name}}, order {{event.order_id}}</p>",
        text="Hi {{patient.first_name}}",
    )
    data = [
        {"patient": {"first_name": "Ana <b>"}, "event": {"order_id": "o-1"}},
        {"patient": {"first_name": "Ben"}, "event": {"order_id": "o-2"}},
    ]
    batch = [
        message(i + 1, template_id=HOSTED, dynamic_data=d, category="order_confirmation")
        for i, d in enumerate(data)
    ]
    batch.append(message(9))  # a locally rendered one goes in its own request
    assert set(outcomes(rig.connector.send_emails(batch)).values()) == {"sent"}
    hosted_body, local_body = sorted(rig.mail_bodies(), key=lambda b: "template_id" not in b)
    assert hosted_body["template_id"] == HOSTED
    assert "content" not in hosted_body and "subject" not in hosted_body
    assert [p["dynamic_template_data"] for p in hosted_body["personalizations"]] == data
    assert "content" in local_body and "template_id" not in local_body
    stored = {m["email"]: m for m in rig.sandbox.messages}
    assert stored["patient1@example.com"]["subject"] == "Order o-1 confirmed"
    assert stored["patient1@example.com"]["html"] == "<p>Hi Ana &lt;b&gt;, order o-1</p>"


def test_an_unknown_hosted_template_is_refused_by_field(rig: Rig) -> None:
    results = rig.connector.send_emails([message(1, template_id=HOSTED, dynamic_data={})])
    assert [(r.outcome, r.detail) for r in results] == [("rejected", "template_id")]
