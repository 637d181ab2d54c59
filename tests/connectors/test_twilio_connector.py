"""The Twilio connector against the Twilio sandbox, in process: outcomes, errors, no PHI leaks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from telecrm.connectors.base import AuthFailed, ConfigurationError, RateLimited, TransientFailure
from telecrm.connectors.messaging_base import SendResult, SmsMessage, SmsProvider
from telecrm.connectors.twilio import TwilioConfig, TwilioConnector
from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from tests.sandbox.twilio_contract import check_request

BASE = "http://sandbox"
CANARY_PHONE = "+12025550177"
CANARY_BODY = "canary-phi-metformin-7781: your refill is ready"
STATUS_URL = "https://hooks.example.com/twilio/status"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class Rig:
    """A sandbox, a connector wired to it, and every request the connector sent."""

    def __init__(self, *, token: str | None = None, service: str | None = None, **sandbox: Any) -> None:  # fmt: skip
        self.clock = FakeClock()
        self.hooks: list[str] = []
        self.sandbox = TwilioSandbox(
            TwilioSandboxConfig(**sandbox), now=self.clock.now, sleep=self.clock.sleep,
            deliver=self._receive,
        )  # fmt: skip
        cfg = self.sandbox.config
        self.sent: list[httpx.Request] = []
        client = sandbox_client(self.sandbox.app, base_url=BASE, event_hooks={"request": [self.sent.append]})  # fmt: skip
        self.config = TwilioConfig(
            base_url=BASE, account_sid=cfg.account_sid, auth_token=token or cfg.auth_token,
            messaging_service_sid=service or cfg.messaging_service_sid, status_callback_url=STATUS_URL,
        )  # fmt: skip
        self.connector = TwilioConnector(self.config, client)

    def _receive(self, url: str, headers: dict[str, str], body: bytes) -> int:
        self.hooks.append(url)
        return 204

    def send(self, *messages: SmsMessage) -> list[SendResult]:
        return self.connector.send_sms(list(messages))

    def check_requests(self) -> None:
        for request in self.sent:
            check_request(request)


def sms(n: int = 1, to: str = CANARY_PHONE, body: str = CANARY_BODY) -> SmsMessage:
    return SmsMessage(message_id=f"msg-{n}", to_phone=to, body=body)


def assert_no_phi(*texts: object) -> None:
    for text in texts:
        assert CANARY_PHONE not in str(text)
        assert CANARY_BODY not in str(text)
        assert "metformin" not in str(text)


def test_connector_is_an_sms_provider_with_batch_max_one() -> None:
    provider: SmsProvider = Rig().connector
    assert (provider.name, provider.batch_max) == ("twilio", 1)


def test_send_creates_one_message_per_call_through_the_service() -> None:
    rig = Rig()
    results = rig.send(sms(1), sms(2, to="+12025550178"))
    assert [(r.message_id, r.outcome) for r in results] == [("msg-1", "sent"), ("msg-2", "sent")]
    stored = {m["sid"]: m for m in rig.sandbox.messages}
    assert [stored[r.provider_id or ""]["to"] for r in results] == [CANARY_PHONE, "+12025550178"]
    assert stored[results[0].provider_id or ""]["body"] == CANARY_BODY
    assert rig.connector.stats.calls == 2
    rig.check_requests()
    form = dict(httpx.QueryParams(rig.sent[0].content.decode()))
    assert form == {
        "To": CANARY_PHONE, "MessagingServiceSid": rig.config.messaging_service_sid,
        "Body": CANARY_BODY, "StatusCallback": STATUS_URL,
    }  # fmt: skip
    assert rig.sent[0].headers["Authorization"].startswith("Basic ")


def test_status_callback_goes_to_the_configured_url() -> None:
    rig = Rig()
    rig.send(sms())
    rig.sandbox.flush_callbacks()
    assert set(rig.hooks) == {STATUS_URL}


def test_no_status_callback_param_when_not_configured() -> None:
    rig = Rig()
    connector = TwilioConnector(
        rig.config.model_copy(update={"status_callback_url": None}),
        sandbox_client(rig.sandbox.app, base_url=BASE, event_hooks={"request": [rig.sent.append]}),
    )
    assert connector.send_sms([sms()])[0].outcome == "sent"
    assert "StatusCallback" not in rig.sent[-1].content.decode()
    rig.check_requests()


def test_opted_out_recipient_is_opted_out_21610() -> None:
    rig = Rig()
    rig.sandbox.inbound(CANARY_PHONE, "STOP")
    [result] = rig.send(sms())
    assert (result.outcome, result.code) == ("opted_out", "21610")
    assert_no_phi(result)
    rig.check_requests()


@pytest.mark.parametrize(
    ("message", "code"),
    [(sms(to="5551234"), "21211"), (sms(body="x" * 1601), "21617"), (sms(body=""), "21602")],
)
def test_bad_messages_are_rejected_with_twilio_codes(message: SmsMessage, code: str) -> None:
    rig = Rig()
    [result] = rig.send(message)
    assert (result.outcome, result.code) == ("rejected", code)
    assert_no_phi(result.detail)
    rig.check_requests()


def test_wrong_token_is_auth_failed() -> None:
    rig = Rig(token="wrong-token")
    with pytest.raises(AuthFailed) as caught:
        rig.send(sms())
    assert (caught.value.code, caught.value.status) == ("20003", 401)
    assert_no_phi(caught.value, caught.value.detail)


def test_unknown_messaging_service_is_a_configuration_error() -> None:
    rig = Rig(service="MG" + "0" * 32)
    with pytest.raises(ConfigurationError) as caught:
        rig.send(sms())
    assert caught.value.code == "21701"


def test_429_is_rate_limited_with_retry_after() -> None:
    rig = Rig()
    rig.sandbox.faults.set(Faults(storm_requests=1))
    with pytest.raises(RateLimited) as caught:
        rig.send(sms())
    assert (caught.value.code, caught.value.status, caught.value.retry_after) == ("20429", 429, 1.0)
    assert rig.connector.stats.rate_limited == 1
    assert_no_phi(caught.value)
    assert rig.send(sms())[0].outcome == "sent"


def test_account_rate_limit_is_rate_limited() -> None:
    rig = Rig(requests_per_second=1)
    assert rig.send(sms())[0].outcome == "sent"
    with pytest.raises(RateLimited):
        rig.send(sms())


def test_500_is_a_transient_failure() -> None:
    rig = Rig()
    rig.sandbox.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        rig.send(sms())
    assert (caught.value.code, caught.value.status) == ("20500", 500)
    assert_no_phi(caught.value)


def test_dropped_connection_is_a_transient_failure_though_twilio_kept_the_message() -> None:
    rig = Rig()
    rig.sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        rig.send(sms())
    assert caught.value.code == "connection_dropped"
    assert len(rig.sandbox.messages) == 1
    assert_no_phi(caught.value, caught.value.detail)


def test_a_limit_after_the_first_message_returns_retry_for_the_rest() -> None:
    rig = Rig(requests_per_second=1)
    results = rig.send(sms(1), sms(2), sms(3))
    assert [r.outcome for r in results] == ["sent", "retry", "retry"]
    assert results[1].code == "20429"
    assert len(rig.sandbox.messages) == 1


def test_no_canary_in_any_exception_or_detail_across_failures() -> None:
    seen: list[object] = []
    for faults in (Faults(error_rate=1.0), Faults(storm_requests=1), Faults(drop_rate=1.0)):
        rig = Rig()
        rig.sandbox.faults.set(faults)
        with pytest.raises(TransientFailure) as caught:
            rig.send(sms())
        seen += [caught.value, caught.value.detail, repr(caught.value)]
    rig = Rig()
    rig.sandbox.inbound(CANARY_PHONE, "STOP")
    seen += [repr(r) for r in rig.send(sms(), sms(to="+1555", body=CANARY_BODY * 40))]
    assert_no_phi(*seen)
