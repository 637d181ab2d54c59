"""The Twilio sandbox keeps Twilio's contract: Messages API, errors, STOP, segments, signed webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.request_validator import RequestValidator

from telecrm.messaging.twilio_webhook import parse_twilio_inbound, parse_twilio_status
from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from tests.sandbox.twilio_contract import check_request, check_response

START = 1_700_000_000.0
STATUS_URL = "https://hooks.example.com/twilio/status?tenant=1"
INBOUND_URL = "https://hooks.example.com/twilio/inbound"
PATIENT = "+12025550150"
CANARY_BODY = "canary-body-insulin-7781"


class FakeClock:
    def __init__(self) -> None:
        self.t = START
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


class Receiver:
    """Where the sandbox's webhooks land: records each and answers with the queued statuses."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.answers: list[int] = []

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        self.calls.append((url, headers, dict(parse_qsl(body.decode(), keep_blank_values=True))))
        return self.answers.pop(0) if self.answers else 204

    def statuses(self) -> list[tuple[str, str]]:
        return [
            (p["MessageSid"], p["MessageStatus"]) for _, _, p in self.calls if "MessageStatus" in p
        ]


class Rig:
    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.hooks = Receiver()
        config.setdefault("status_callback_url", STATUS_URL)
        self.sandbox = TwilioSandbox(
            TwilioSandboxConfig(**config),
            now=self.clock.now,
            sleep=self.clock.sleep,
            deliver=self.hooks,
        )
        self.config = self.sandbox.config
        self.client = sandbox_client(self.sandbox.app)
        self.auth = (self.config.account_sid, self.config.auth_token)
        self.messages_path = f"/2010-04-01/Accounts/{self.config.account_sid}/Messages.json"

    def send(
        self, to: str = PATIENT, body: str = "Your order shipped.", **form: str
    ) -> httpx.Response:
        data = {"To": to, "Body": body, **form}
        if "From" not in form:
            data.setdefault("MessagingServiceSid", self.config.messaging_service_sid)
        response = self.client.post(self.messages_path, data=data, auth=self.auth)
        check_request(response.request)
        if response.status_code == 201:
            check_response(response.request, response)
        return response

    def fetch(self, sid: str) -> dict[str, Any]:
        path = self.messages_path.replace("Messages.json", f"Messages/{sid}.json")
        response = self.client.get(path, auth=self.auth)
        check_request(response.request)
        check_response(response.request, response)
        return dict(response.json())

    def admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        if payload is None and path in ("/messages", "/stats", "/faults"):
            return self.client.get(f"/_sandbox{path}").json()
        return self.client.post(f"/_sandbox{path}", json=payload or {}).json()


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.client.close()


def assert_twilio_error(response: httpx.Response, code: int, status: int) -> None:
    assert response.status_code == status
    assert response.json() == {
        "code": code,
        "message": response.json()["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert PATIENT not in response.text and CANARY_BODY not in response.text


# -- create ------------------------------------------------------------------------------------
def test_send_through_the_service_is_accepted_with_no_sender_and_zero_segments(rig: Rig) -> None:
    response = rig.send(body=CANARY_BODY)
    assert response.status_code == 201
    message = response.json()
    assert message["sid"].startswith("SM") and len(message["sid"]) == 34
    assert (message["status"], message["from"], message["num_segments"]) == ("accepted", None, "0")
    assert message["messaging_service_sid"] == rig.config.messaging_service_sid
    assert (message["direction"], message["api_version"], message["num_media"]) == ("outbound-api", "2010-04-01", "0")  # fmt: skip
    assert message["date_created"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert message["uri"] == rig.messages_path.replace("Messages.json", f"Messages/{message['sid']}.json")  # fmt: skip


def test_send_from_a_pool_number_is_queued_with_its_segments(rig: Rig) -> None:
    response = rig.send(From=rig.config.sender_pool[1], body="a" * 161)
    assert response.status_code == 201
    message = response.json()
    assert (message["status"], message["from"], message["num_segments"]) == ("queued", rig.config.sender_pool[1], "2")  # fmt: skip


def test_wrong_token_or_no_auth_is_20003(rig: Rig) -> None:
    bad = rig.client.post(rig.messages_path, data={"To": PATIENT}, auth=(rig.config.account_sid, "nope"))  # fmt: skip
    assert_twilio_error(bad, 20003, 401)
    assert_twilio_error(rig.client.post(rig.messages_path, data={"To": PATIENT}), 20003, 401)


def test_secondary_token_is_accepted_during_rotation() -> None:
    rig = Rig(secondary_auth_token="second-token")
    response = rig.client.post(
        rig.messages_path,
        data={"To": PATIENT, "Body": "hi", "MessagingServiceSid": rig.config.messaging_service_sid},
        auth=(rig.config.account_sid, "second-token"),
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": "5551234"}, 21211),
        ({"To": "+1555"}, 21211),
        ({"Body": ""}, 21602),
        ({"Body": "x" * 1601}, 21617),
        ({"From": "+19995550000"}, 21606),
        ({"MessagingServiceSid": "MG" + "0" * 32}, 21701),
        ({"StatusCallback": "https://bad_host.example.com/cb"}, 21609),
    ],
)
def test_refusals_use_twilio_codes_without_echoing_values(rig: Rig, form: dict[str, str], code: int) -> None:  # fmt: skip
    data = {"To": PATIENT, "Body": CANARY_BODY} | form
    assert_twilio_error(rig.send(**data), code, 400)


def test_from_or_service_is_required(rig: Rig) -> None:
    response = rig.client.post(rig.messages_path, data={"To": PATIENT, "Body": "hi"}, auth=rig.auth)
    assert_twilio_error(response, 21603, 400)


def test_body_of_exactly_1600_chars_is_accepted(rig: Rig) -> None:
    assert rig.send(body="x" * 1600).status_code == 201


def test_another_accounts_path_is_not_found(rig: Rig) -> None:
    path = rig.messages_path.replace(rig.config.account_sid, "AC" + "1" * 32)
    assert_twilio_error(rig.client.get(path, auth=rig.auth), 20404, 404)


def test_list_pages_newest_first_and_fits_the_spec(rig: Rig) -> None:
    sids = [rig.send(body=f"n{i}").json()["sid"] for i in range(3)]
    response = rig.client.get(rig.messages_path, params={"PageSize": 2}, auth=rig.auth)
    check_request(response.request)
    check_response(response.request, response)
    page = response.json()
    assert [m["sid"] for m in page["messages"]] == sids[::-1][:2]
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["next_page_uri"].endswith("PageSize=2&Page=1")
    second = rig.client.get(rig.messages_path, params={"PageSize": 2, "Page": 1}, auth=rig.auth).json()  # fmt: skip
    assert [m["sid"] for m in second["messages"]] == sids[:1]
    assert second["next_page_uri"] is None


# -- STOP / START ------------------------------------------------------------------------------
def test_stop_blocks_the_next_send_with_21610_until_start(rig: Rig) -> None:
    assert rig.send().status_code == 201
    assert rig.admin("/inbound", {"from": PATIENT, "body": " stop "})["keyword"] == "stop"
    assert_twilio_error(rig.send(), 21610, 400)
    assert rig.admin("/inbound", {"from": PATIENT, "body": "START"})["keyword"] == "start"
    assert rig.send().status_code == 201
    stats = rig.admin("/stats")
    assert (stats["opt_outs"], stats["opt_ins"]) == (1, 1)
    assert [r["keyword"] for r in rig.sandbox.auto_replies] == ["stop", "start"]


def test_opt_out_covers_every_number_of_the_service(rig: Rig) -> None:
    rig.sandbox.inbound(PATIENT, "UNSUBSCRIBE", to=rig.config.sender_pool[2])
    assert_twilio_error(rig.send(From=rig.config.sender_pool[0]), 21610, 400)


def test_stop_inside_a_sentence_is_not_a_keyword(rig: Rig) -> None:
    assert rig.sandbox.inbound(PATIENT, "STOP PLEASE")["keyword"] is None
    assert rig.send().status_code == 201


def test_help_gets_an_auto_reply_and_no_opt_out(rig: Rig) -> None:
    rig.sandbox.inbound(PATIENT, "help")
    assert rig.sandbox.auto_replies[-1]["keyword"] == "help"
    assert not rig.sandbox.is_opted_out(PATIENT)


def test_inbound_admin_refuses_a_bad_sender(rig: Rig) -> None:
    response = rig.client.post("/_sandbox/inbound", json={"from": "12345", "body": "STOP"})
    assert response.status_code == 422


# -- segments ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, "1"), ("a" * 161, "2"), ("✓" * 70, "1"), ("✓" * 71, "2"),
        ("{" * 80, "1"), ("{" * 81, "2"), ("€" * 80, "1"), ("😀" * 35, "1"), ("😀" * 36, "2"),
    ],
)  # fmt: skip
def test_segments_are_counted_once_sent(rig: Rig, body: str, segments: str) -> None:
    sid = rig.send(body=body).json()["sid"]
    rig.sandbox.flush_callbacks()
    message = rig.fetch(sid)
    assert message["num_segments"] == segments
    assert message["from"] in rig.config.sender_pool


# -- status callbacks --------------------------------------------------------------------------
def test_callbacks_follow_queued_sent_delivered_and_validate_with_the_official_validator(rig: Rig) -> None:  # fmt: skip
    sid = rig.send().json()["sid"]
    assert rig.hooks.calls == []  # none for the initial status
    assert rig.admin("/callbacks/flush") == {"sent": 3, "failed": 0, "pending": 0}
    assert rig.hooks.statuses() == [(sid, "queued"), (sid, "sent"), (sid, "delivered")]
    validator = RequestValidator(rig.config.auth_token)
    for url, headers, params in rig.hooks.calls:
        assert url == STATUS_URL
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert validator.validate(url, params, headers["X-Twilio-Signature"])
        assert params["SmsSid"] == sid and params["SmsStatus"] == params["MessageStatus"]
        assert params["To"] == PATIENT and params["From"] in rig.config.sender_pool
        assert params["MessagingServiceSid"] == rig.config.messaging_service_sid
        assert "ErrorCode" not in params
    assert "RawDlrDoneDate" in rig.hooks.calls[-1][2]
    assert "RawDlrDoneDate" not in rig.hooks.calls[0][2]
    assert rig.fetch(sid)["status"] == "delivered"


def test_callbacks_parse_into_delivery_reports() -> None:
    rig = Rig(undelivered_rate=1.0, failed_rate=0.0)
    sid = rig.send().json()["sid"]
    rig.sandbox.flush_callbacks()
    final = rig.hooks.calls[-1][2]
    assert final["MessageStatus"] == "undelivered"
    assert final["ErrorCode"] in {"30003", "30005", "30006", "30007"}
    report = parse_twilio_status(final, datetime.now(UTC))
    assert (report.provider_id, report.kind, report.code) == (
        sid,
        "undelivered",
        final["ErrorCode"],
    )
    assert rig.fetch(sid)["error_code"] == int(final["ErrorCode"])


def test_failed_messages_skip_sent() -> None:
    rig = Rig(failed_rate=1.0)
    sid = rig.send().json()["sid"]
    rig.sandbox.flush_callbacks()
    assert rig.hooks.statuses() == [(sid, "queued"), (sid, "failed")]
    assert rig.hooks.calls[-1][2]["ErrorCode"].startswith("300")


def test_request_status_callback_overrides_the_service_default(rig: Rig) -> None:
    rig.send(StatusCallback="https://other.example.com/cb")
    rig.sandbox.flush_callbacks()
    assert {url for url, _, _ in rig.hooks.calls} == {"https://other.example.com/cb"}


def test_a_refused_callback_is_retried_on_the_next_flush(rig: Rig) -> None:
    rig.send()
    rig.hooks.answers = [500, 204, 503]
    assert rig.sandbox.flush_callbacks() == {"sent": 1, "failed": 2, "pending": 2}
    assert rig.sandbox.flush_callbacks() == {"sent": 2, "failed": 0, "pending": 0}
    stats = rig.admin("/stats")
    assert (stats["callbacks_sent"], stats["callback_failures"]) == (3, 2)
    retried = rig.hooks.calls[3:]
    assert [p["MessageStatus"] for _, _, p in retried] == ["queued", "delivered"]
    first_try = rig.hooks.calls[0][1]["I-Twilio-Idempotency-Token"]
    assert retried[0][1]["I-Twilio-Idempotency-Token"] == first_try


def test_a_dead_endpoint_counts_as_a_failure() -> None:
    def refuse(url: str, headers: dict[str, str], body: bytes) -> int:
        raise httpx.ConnectError("refused")

    sandbox = TwilioSandbox(TwilioSandboxConfig(status_callback_url=STATUS_URL), deliver=refuse)
    client = sandbox_client(sandbox.app)
    cfg = sandbox.config
    client.post(
        f"/2010-04-01/Accounts/{cfg.account_sid}/Messages.json",
        data={"To": PATIENT, "Body": "hi", "MessagingServiceSid": cfg.messaging_service_sid},
        auth=(cfg.account_sid, cfg.auth_token),
    )
    assert sandbox.flush_callbacks() == {"sent": 0, "failed": 3, "pending": 3}


def test_shuffled_order_delivers_some_final_status_before_sent() -> None:
    rig = Rig(callback_order="shuffled", seed=3, undelivered_rate=0, failed_rate=0)
    for _ in range(5):
        rig.send()
    rig.sandbox.flush_callbacks()
    seen: dict[str, list[str]] = {}
    for sid, status in rig.hooks.statuses():
        seen.setdefault(sid, []).append(status)
    assert all(sorted(s) == ["delivered", "queued", "sent"] for s in seen.values())
    assert any(s != ["queued", "sent", "delivered"] for s in seen.values())


def test_in_order_is_the_default() -> None:
    rig = Rig(undelivered_rate=0, failed_rate=0)
    for _ in range(5):
        rig.send()
    rig.sandbox.flush_callbacks()
    for sid in {sid for sid, _ in rig.hooks.statuses()}:
        assert [s for m, s in rig.hooks.statuses() if m == sid] == ["queued", "sent", "delivered"]


# -- inbound webhook ---------------------------------------------------------------------------
def test_inbound_webhook_is_signed_and_parses() -> None:
    rig = Rig(advanced_opt_out=True)
    assert rig.admin("/webhook", {"inbound_url": INBOUND_URL})["inbound_url"] == INBOUND_URL
    answer = rig.admin("/inbound", {"from": PATIENT, "body": "Stop"})
    assert answer["webhook_status"] == 204
    url, headers, params = rig.hooks.calls[-1]
    assert url == INBOUND_URL
    assert RequestValidator(rig.config.auth_token).validate(url, params, headers["X-Twilio-Signature"])  # fmt: skip
    assert params["OptOutType"] == "STOP" and params["NumMedia"] == "0"
    assert params["FromCountry"] == "US"
    sms = parse_twilio_inbound(params, datetime.now(UTC))
    assert (sms.receipt_id, sms.from_phone, sms.body) == (answer["sid"], PATIENT, "Stop")
    assert sms.to_phone == rig.config.sender_pool[0]
    assert rig.admin("/stats")["inbound_sent"] == 1


def test_inbound_without_advanced_opt_out_has_no_opt_out_type() -> None:
    rig = Rig(inbound_url=INBOUND_URL)
    rig.sandbox.inbound(PATIENT, "STOP")
    assert "OptOutType" not in rig.hooks.calls[-1][2]


def test_survey_questions_get_numeric_answers() -> None:
    rig = Rig(inbound_url=INBOUND_URL, reply_rate=1.0, undelivered_rate=0, failed_rate=0)
    rig.send(body="How likely are you to recommend us, 0-10?")
    rig.send(body="Your order shipped.")
    rig.sandbox.flush_callbacks()
    inbound = [p for url, _, p in rig.hooks.calls if url == INBOUND_URL]
    assert len(inbound) == 1
    assert inbound[0]["From"] == PATIENT and 0 <= int(inbound[0]["Body"]) <= 10


def test_stop_rate_makes_recipients_opt_out() -> None:
    rig = Rig(inbound_url=INBOUND_URL, stop_rate=1.0, undelivered_rate=0, failed_rate=0)
    rig.send()
    rig.sandbox.flush_callbacks()
    assert rig.sandbox.is_opted_out(PATIENT)
    assert [p["Body"] for url, _, p in rig.hooks.calls if url == INBOUND_URL] == ["STOP"]
    assert_twilio_error(rig.send(), 21610, 400)


# -- limits and faults -------------------------------------------------------------------------
def test_rate_limit_answers_20429_until_the_window_passes() -> None:
    rig = Rig(requests_per_second=3)
    assert [rig.send().status_code for _ in range(4)] == [201, 201, 201, 429]
    assert_twilio_error(rig.send(), 20429, 429)
    rig.clock.t += 1.0
    assert rig.send().status_code == 201
    assert rig.admin("/stats")["rate_limited"] == 2


def test_error_rate_answers_500_with_a_twilio_body(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(error_rate=1.0))
    assert_twilio_error(rig.send(), 20500, 500)
    assert rig.sandbox.messages == []


def test_storm_answers_429_for_n_requests(rig: Rig) -> None:
    assert rig.admin("/faults", {"storm_requests": 2})["storm_requests"] == 2
    assert [rig.send().status_code for _ in range(3)] == [429, 429, 201]


def test_drop_applies_the_message_then_cuts_the_connection(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        rig.client.post(
            rig.messages_path,
            data={
                "To": PATIENT,
                "Body": "hi",
                "MessagingServiceSid": rig.config.messaging_service_sid,
            },
            auth=rig.auth,
        )
    assert len(rig.sandbox.messages) == 1


def test_latency_sleeps_on_the_injected_clock(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(latency_seconds=0.5))
    rig.send()
    assert rig.clock.slept == [0.5]


def test_admin_shows_messages_stats_and_faults_and_resets(rig: Rig) -> None:
    rig.send()
    rig.sandbox.inbound(PATIENT, "STOP")
    view = rig.admin("/messages")
    assert [m["direction"] for m in view["messages"]] == ["outbound-api", "inbound"]
    assert view["opted_out"] == [PATIENT] and view["pending_callbacks"] == 0
    stats = rig.admin("/stats")
    assert stats["created"] == 1
    assert stats["requests"]["POST /2010-04-01/Accounts/{AccountSid}/Messages.json"] == 1
    assert rig.admin("/faults")["error_rate"] == 0.0
    assert rig.client.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 422
    rig.admin("/reset")
    assert rig.sandbox.messages == [] and not rig.sandbox.is_opted_out(PATIENT)
