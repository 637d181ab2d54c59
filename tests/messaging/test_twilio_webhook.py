"""Twilio webhooks: X-Twilio-Signature like the official validator, payload parsing, keywords."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from telecrm.messaging.provider_events import WebhookRejected
from telecrm.messaging.twilio_webhook import (
    HELP_KEYWORDS,
    START_KEYWORDS,
    STOP_KEYWORDS,
    classify_keyword,
    looks_like_revocation,
    parse_twilio_inbound,
    parse_twilio_status,
    twilio_signature,
    verify_twilio_signature,
)

# The official test vector (twilio-python tests/unit/test_request_validator.py; research §6.3).
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SID = "SM" + "ab12" * 8
SERVICE = "MG" + "cd34" * 8
CANARY_PHONE = "+12025550199"
CANARY_BODY = "canary-body-diabetes-7781"


def status_params(**overrides: str) -> dict[str, str]:
    params = {
        "AccountSid": "AC" + "00ff" * 8, "From": "+12025550101", "To": CANARY_PHONE,
        "MessageSid": SID, "SmsSid": SID, "SmsStatus": "undelivered",
        "MessageStatus": "undelivered", "ApiVersion": "2010-04-01", "ErrorCode": "30003",
        "MessagingServiceSid": SERVICE,
    }  # fmt: skip
    return params | overrides


def inbound_params(**overrides: str) -> dict[str, str]:
    params = {
        "MessageSid": SID, "SmsSid": SID, "AccountSid": "AC" + "00ff" * 8,
        "MessagingServiceSid": SERVICE, "From": CANARY_PHONE, "To": "+12025550101",
        "Body": "STOP", "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01",
    }  # fmt: skip
    return params | overrides


# -- signatures -------------------------------------------------------------------------------
def test_signature_reproduces_the_official_test_vector() -> None:
    assert twilio_signature(TOKEN, URL, PARAMS) == EXPECTED
    assert RequestValidator(TOKEN).compute_signature(URL, PARAMS) == EXPECTED


def test_verifier_accepts_the_official_vector_with_and_without_the_default_port() -> None:
    verify_twilio_signature([TOKEN], URL, PARAMS, EXPECTED)
    verify_twilio_signature([TOKEN], "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, EXPECTED)  # fmt: skip


def test_signature_of_repeated_params_matches_the_official_validator() -> None:
    pairs = [
        ("MediaUrl", "https://b.example/2"),
        ("Body", "hi"),
        ("MediaUrl", "https://a.example/1"),
    ]
    expected = RequestValidator(TOKEN).compute_signature(URL, MultiDict(pairs))
    params = {"MediaUrl": ["https://b.example/2", "https://a.example/1"], "Body": "hi"}
    assert twilio_signature(TOKEN, URL, params) == expected


def test_verifier_rejects_a_forged_signature() -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify_twilio_signature([TOKEN], URL, PARAMS, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert caught.value.reason == "signature_mismatch"


def test_verifier_rejects_a_changed_param() -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify_twilio_signature([TOKEN], URL, PARAMS | {"Digits": "9999"}, EXPECTED)
    assert caught.value.reason == "signature_mismatch"
    assert "9999" not in str(caught.value)


def test_verifier_rejects_a_changed_url() -> None:
    with pytest.raises(WebhookRejected):
        verify_twilio_signature([TOKEN], URL.replace("foo=1", "foo=2"), PARAMS, EXPECTED)


@pytest.mark.parametrize("header", [None, ""])
def test_verifier_rejects_a_missing_header(header: str | None) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify_twilio_signature([TOKEN], URL, PARAMS, header)
    assert caught.value.reason == "missing_signature"


def test_verifier_accepts_the_second_token_during_rotation() -> None:
    signed_with_new = twilio_signature("new-token", URL, PARAMS)
    verify_twilio_signature(["old-token", "new-token"], URL, PARAMS, signed_with_new)
    with pytest.raises(WebhookRejected):
        verify_twilio_signature(["old-token"], URL, PARAMS, signed_with_new)


def test_verifier_with_no_token_configured_rejects() -> None:
    with pytest.raises(WebhookRejected):
        verify_twilio_signature([], URL, PARAMS, EXPECTED)


# -- status callbacks -------------------------------------------------------------------------
def test_status_callback_becomes_a_delivery_report() -> None:
    report = parse_twilio_status(status_params(), NOW)
    assert report.provider == "twilio"
    assert report.kind == "undelivered"
    assert report.receipt_id == f"{SID}:undelivered"
    assert report.provider_id == SID
    assert report.code == "30003"
    assert report.address == CANARY_PHONE
    assert report.at == NOW


def test_delivered_callback_has_no_error_code() -> None:
    params = status_params(MessageStatus="delivered", SmsStatus="delivered")
    del params["ErrorCode"]
    report = parse_twilio_status(params, NOW)
    assert (report.kind, report.code, report.receipt_id) == ("delivered", None, f"{SID}:delivered")


@pytest.mark.parametrize(
    "broken",
    [
        {"MessageSid": "SM123"},
        {"MessageSid": "XX" + "ab12" * 8},
        {"MessageStatus": "exploded", "SmsStatus": "exploded"},
        {"MessageStatus": "received", "SmsStatus": "received"},
        {"To": "not-a-number-" + CANARY_BODY},
        {"ErrorCode": "3000x"},
    ],
)
def test_malformed_status_callbacks_are_rejected_without_values(broken: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_twilio_status(status_params(**broken), NOW)
    assert caught.value.reason == "malformed_body"
    for value in broken.values():
        assert value not in str(caught.value)
    assert CANARY_PHONE not in str(caught.value)


def test_status_callback_without_message_sid_is_rejected() -> None:
    params = status_params()
    del params["MessageSid"]
    with pytest.raises(WebhookRejected, match="MessageSid"):
        parse_twilio_status(params, NOW)


# -- inbound ----------------------------------------------------------------------------------
def test_inbound_sms_becomes_inbound_sms() -> None:
    sms = parse_twilio_inbound(inbound_params(OptOutType="STOP"), NOW)
    assert sms.receipt_id == SID
    assert (sms.from_phone, sms.to_phone, sms.body) == (CANARY_PHONE, "+12025550101", "STOP")
    assert sms.messaging_service_sid == SERVICE
    assert sms.opt_out_type == "STOP"
    assert sms.at == NOW


@pytest.mark.parametrize(
    "broken",
    [
        {"From": "2025550199"},
        {"From": CANARY_BODY},
        {"MessageSid": ""},
        {"MessagingServiceSid": "MG1"},
    ],
)
def test_malformed_inbound_is_rejected_without_values(broken: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_twilio_inbound(inbound_params(**broken), NOW)
    assert caught.value.reason == "malformed_body"
    assert CANARY_BODY not in str(caught.value)
    assert CANARY_PHONE not in str(caught.value)


def test_inbound_without_body_is_rejected() -> None:
    params = inbound_params()
    del params["Body"]
    with pytest.raises(WebhookRejected, match="Body"):
        parse_twilio_inbound(params, NOW)


field_names = st.sampled_from(
    ["MessageSid", "MessageStatus", "SmsStatus", "To", "From", "Body", "ErrorCode",
     "MessagingServiceSid", "OptOutType", "AccountSid"]
) | st.text(max_size=12)  # fmt: skip
field_values = st.sampled_from([SID, "delivered", "failed", CANARY_PHONE, "", "30003", SERVICE]) | st.text(max_size=40)  # fmt: skip


@given(st.dictionaries(field_names, field_values, max_size=12))
def test_status_parser_raises_only_webhook_rejected(params: dict[str, str]) -> None:
    try:
        report = parse_twilio_status(params, NOW)
    except WebhookRejected as exc:
        assert exc.reason == "malformed_body"
    else:
        assert report.provider_id == params["MessageSid"]


@given(st.dictionaries(field_names, field_values, max_size=12))
def test_inbound_parser_raises_only_webhook_rejected(params: dict[str, str]) -> None:
    try:
        sms = parse_twilio_inbound(params, NOW)
    except WebhookRejected as exc:
        assert exc.reason == "malformed_body"
    else:
        assert sms.from_phone == params["From"]


# -- keywords ---------------------------------------------------------------------------------
ALL_KEYWORDS = sorted(STOP_KEYWORDS | START_KEYWORDS | HELP_KEYWORDS)


def keyword_model(body: str) -> str | None:
    """Twilio's default handling, stated plainly: one word from the lists, any case, trimmed."""
    word = body.strip()
    for kind, words in (("stop", STOP_KEYWORDS), ("start", START_KEYWORDS), ("help", HELP_KEYWORDS)):  # fmt: skip
        if word.isascii() and word.upper() in words:
            return kind
    return None


def random_case(draw: st.DrawFn, word: str) -> str:
    return "".join(c.lower() if draw(st.booleans()) else c for c in word)


@st.composite
def keyword_like(draw: st.DrawFn) -> str:
    word = random_case(draw, draw(st.sampled_from(ALL_KEYWORDS)))
    pad = st.text(alphabet=" \t\n\r", max_size=3)
    suffix = draw(st.sampled_from(["", "", " PLEASE", "!", "S", " now"]))
    return draw(pad) + word + suffix + draw(pad)


@given(keyword_like() | st.text(max_size=20))
def test_classify_keyword_agrees_with_the_model(body: str) -> None:
    assert classify_keyword(body) == keyword_model(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", "stop"), (" stop\n", "stop"), ("Unsubscribe", "stop"), ("revoke", "stop"),
        ("OptOut", "stop"), ("start", "start"), ("UNSTOP", "start"), ("yes", "start"),
        ("help", "help"), ("Info", "help"), ("STOP PLEASE", None), ("stop.", None),
        ("opt out", None), ("", None), ("\u017ftop", None),
    ],
)  # fmt: skip
def test_classify_keyword_examples(body: str, expected: str | None) -> None:
    assert classify_keyword(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me", "Opt out", "opt-out", "no more texts", "STOP PLEASE",
        "Stop!", "unsubscribe me", "Don't text me again", "remove me from this list",
        "para", "Alto", "cancelar", "Basta ya", "no más mensajes por favor",
        "dejen de enviarme mensajes", "CANCEL", "quit",
    ],
)  # fmt: skip
def test_free_text_revocations_are_flagged(body: str) -> None:
    assert looks_like_revocation(body)


@pytest.mark.parametrize(
    "body",
    [
        "9", "Yes, see you Monday", "I need to cancel my appointment", "cancelar mi cita",
        "para el lunes por favor", "I can't stop coughing", "What time does it end?", "",
        "Thanks!",
    ],
)  # fmt: skip
def test_ordinary_replies_are_not_revocations(body: str) -> None:
    assert not looks_like_revocation(body)


@given(st.sampled_from(sorted(STOP_KEYWORDS)), st.text(alphabet=" \t", max_size=2))
def test_every_twilio_stop_keyword_is_also_a_revocation(word: str, pad: str) -> None:
    assert looks_like_revocation(pad + word.lower() + pad)
