"""SendGrid's signed Event Webhook: the official test vector verifies, tampering does not, parsing is total."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from telecrm.messaging.provider_events import WebhookRejected
from telecrm.messaging.sendgrid_webhook import (
    load_public_key,
    parse_sendgrid_events,
    verify_sendgrid_signature,
)
from telecrm.sandbox.faults import sandbox_client
from telecrm.sandbox.sendgrid import SendGridSandboxConfig, create_sendgrid_sandbox

# The official vector: sendgrid/sendgrid-python test/unit/test_eventwebhook.py (messaging.md §3.1).
SDK_PUBLIC_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
SDK_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
SDK_TIMESTAMP = "1600112502"
SDK_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()
SDK_NOW = float(SDK_TIMESTAMP)


def reason_of(call: Any) -> str:
    with pytest.raises(WebhookRejected) as caught:
        call()
    return caught.value.reason


def verify(body: bytes = SDK_PAYLOAD, *, signature: str | None = SDK_SIGNATURE,
           timestamp: str | None = SDK_TIMESTAMP, now: float = SDK_NOW, key: str = SDK_PUBLIC_KEY) -> None:  # fmt: skip
    verify_sendgrid_signature(load_public_key(key), signature, timestamp, body, now=now)


# -- signature ----------------------------------------------------------------------------------------
def test_the_official_sdk_vector_verifies() -> None:
    verify()


def test_the_key_loads_from_pem_as_well_as_bare_base64() -> None:
    pem = f"-----BEGIN PUBLIC KEY-----\n{SDK_PUBLIC_KEY}\n-----END PUBLIC KEY-----\n"
    verify_sendgrid_signature(load_public_key(pem), SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, now=SDK_NOW)  # fmt: skip
    with pytest.raises(ValueError):
        load_public_key("not a key at all")


def test_a_tampered_body_is_a_mismatch() -> None:
    tampered = SDK_PAYLOAD.replace(b"Bounced", b"Spammed")
    assert reason_of(lambda: verify(tampered)) == "signature_mismatch"


def test_a_body_without_the_trailing_crlf_is_a_mismatch() -> None:
    assert reason_of(lambda: verify(SDK_PAYLOAD.rstrip(b"\r\n"))) == "signature_mismatch"


def test_re_serialised_json_is_a_mismatch() -> None:
    again = json.dumps(json.loads(SDK_PAYLOAD)).encode()
    assert reason_of(lambda: verify(again)) == "signature_mismatch"


def test_old_and_future_timestamps_are_refused() -> None:
    assert reason_of(lambda: verify(now=SDK_NOW + 301)) == "stale_timestamp"
    assert reason_of(lambda: verify(now=SDK_NOW - 301)) == "future_timestamp"
    assert reason_of(lambda: verify(timestamp="16001125O2")) == "bad_timestamp"
    verify(now=SDK_NOW + 299)


def test_a_signature_from_another_key_is_a_mismatch() -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = forger.sign(SDK_TIMESTAMP.encode() + SDK_PAYLOAD, ec.ECDSA(hashes.SHA256()))
    assert reason_of(lambda: verify(signature=base64.b64encode(forged).decode())) == "signature_mismatch"  # fmt: skip
    # ...and the forger's own key accepts it, so the forgery itself is well formed
    der = forger.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verify(signature=base64.b64encode(forged).decode(), key=base64.b64encode(der).decode())


def test_missing_or_garbage_signatures_are_refused() -> None:
    assert reason_of(lambda: verify(signature=None)) == "missing_signature"
    assert reason_of(lambda: verify(timestamp="")) == "missing_signature"
    assert reason_of(lambda: verify(signature="!!not base64!!")) == "bad_signature_encoding"
    assert reason_of(lambda: verify(signature=base64.b64encode(b"junk").decode())) == "signature_mismatch"  # fmt: skip


def test_the_sandbox_signature_verifies_with_our_verifier_and_parses() -> None:
    posts: list[tuple[dict[str, str], bytes]] = []

    def deliver(url: str, headers: dict[str, str], body: bytes) -> int:
        posts.append((headers, body))
        return 200

    sandbox = create_sendgrid_sandbox(
        SendGridSandboxConfig(webhook_url="https://hooks.test/sg"),
        now=lambda: 1_700_000_000.0,
        deliver=deliver,
    )
    with sandbox_client(sandbox.app) as client:
        body = {
            "personalizations": [{"to": [{"email": "a@example.com"}], "custom_args": {"telecrm_message_id": "msg-1"}}],
            "from": {"email": "clinic@example.com"}, "subject": "s",
            "content": [{"type": "text/plain", "value": "t"}], "categories": ["reminder"],
        }  # fmt: skip
        sent = client.post("/v3/mail/send", json=body, headers={"Authorization": "Bearer SG.sandbox-key"})  # fmt: skip
        key = load_public_key(client.get("/_sandbox/public_key").json()["public_key"])
    sandbox.flush_events()
    headers, raw = posts[0]
    verify_sendgrid_signature(
        key, headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"], raw, now=1_700_000_010.0,
    )  # fmt: skip
    reports = parse_sendgrid_events(raw)
    assert reports[0].kind == "processed"
    assert {r.message_id for r in reports} == {"msg-1"}
    assert {r.provider_id for r in reports} == {sent.headers["X-Message-Id"]}


# -- parsing ------------------------------------------------------------------------------------------
def event(kind: str, **extra: Any) -> dict[str, Any]:
    base = {"email": "p@example.com", "event": kind, "timestamp": 1_700_000_000,
            "sg_event_id": f"id-{kind}", "sg_message_id": "abc.filter0001.0.0"}  # fmt: skip
    return base | extra


def test_event_kinds_are_normalised_and_unknown_ones_skipped() -> None:
    names = ["processed", "deferred", "delivered", "dropped", "bounce", "open", "click",
             "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe", "account_status_change"]  # fmt: skip
    reports = parse_sendgrid_events(json.dumps([event(n) for n in names]).encode())
    assert [r.kind for r in reports] == [
        "processed", "deferred", "delivered", "dropped", "bounced", "opened", "clicked",
        "spam_report", "unsubscribed", "group_unsubscribed", "group_resubscribed",
    ]  # fmt: skip
    assert {r.provider_id for r in reports} == {"abc"}
    assert all(r.provider == "sendgrid" and r.at.tzinfo is not None for r in reports)


def test_per_type_fields_become_categories_not_free_text() -> None:
    body = [
        event(
            "bounce", type="blocked", status="5.7.1", reason="550 rejected canary-xyz@example.com"
        ),
        event("dropped", reason="Unsubscribed Address", status="5.0.0"),
        event("dropped", reason="Invalid SMTPAPI header"),
        event("open", sg_machine_open=True, telecrm_message_id="m-1"),
        event("click", url="https://app.test/x", asm_group_id=4),
    ]
    bounce, unsubscribed, other, opened, clicked = parse_sendgrid_events(json.dumps(body).encode())
    assert (bounce.reason, bounce.code) == ("blocked", "5.7.1")
    assert unsubscribed.reason == "Unsubscribed Address"
    assert other.reason == "other"
    assert opened.machine_open and opened.message_id == "m-1"
    assert (clicked.url, clicked.asm_group_id) == ("https://app.test/x", 4)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b'{"email": "canary-xyz@example.com"}', b"[1]",
     json.dumps([{"event": "open", "timestamp": 1, "sg_event_id": "x"}]).encode(),
     json.dumps([event("open", timestamp="canary-xyz")]).encode(),
     json.dumps([event("open", timestamp=10**30)]).encode(),
     json.dumps([event("open", sg_event_id=None, email="canary-xyz@example.com")]).encode()],
)  # fmt: skip
def test_malformed_bodies_are_refused_without_echoing_values(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_sendgrid_events(body)
    assert caught.value.reason == "malformed_body"
    assert "canary" not in str(caught.value)


def test_too_many_events_are_refused() -> None:
    body = json.dumps([event("open")] * 3).encode()
    assert reason_of(lambda: parse_sendgrid_events(body, max_events=2)) == "malformed_body"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)  # fmt: skip
event_like = st.fixed_dictionaries(
    {},
    optional={
        "email": st.one_of(st.text(), st.integers(), st.none()),
        "event": st.sampled_from(["open", "click", "bounce", "dropped", "weird"]) | st.text(),
        "timestamp": st.one_of(st.integers(), st.floats(), st.text(), st.booleans()),
        "sg_event_id": st.one_of(st.text(), st.none()),
        "sg_message_id": st.one_of(st.text(), st.integers()),
        "asm_group_id": json_values, "url": json_values, "reason": json_values,
        "telecrm_message_id": json_values,
    },
)  # fmt: skip


def _only_webhook_rejected(raw: bytes) -> None:
    with contextlib.suppress(WebhookRejected):
        parse_sendgrid_events(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsing_arbitrary_bytes_only_ever_raises_webhook_rejected(raw: bytes) -> None:
    _only_webhook_rejected(raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parsing_arbitrary_json_only_ever_raises_webhook_rejected(value: Any) -> None:
    _only_webhook_rejected(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(event_like, max_size=5))
# Found by this test: a dropped event whose reason is not a string was a TypeError (a 500).
@example([{"email": "0", "event": "dropped", "reason": [], "sg_event_id": "0", "timestamp": 0}])
def test_parsing_event_shaped_json_only_ever_raises_webhook_rejected(events: list[Any]) -> None:
    _only_webhook_rejected(json.dumps(events).encode())
