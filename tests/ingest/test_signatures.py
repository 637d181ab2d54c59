"""Our Standard Webhooks verifier agrees with the reference library, message for message."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from telecrm.ingest.signatures import SignatureError, Verifier, sign

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
secrets = st.binary(min_size=16, max_size=48).map(lambda b: "whsec_" + base64.b64encode(b).decode())
ids = st.from_regex(r"msg_[A-Za-z0-9]{1,30}", fullmatch=True)
# The reference library also parses the body as JSON, so the bodies are JSON.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
skews = st.integers(min_value=-900, max_value=900)


def reference_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def ours_accepts(secret: str, headers: dict[str, str], body: bytes, now: datetime) -> bool:
    try:
        Verifier.from_secrets([secret]).verify(headers, body, now=now)
    except SignatureError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(secrets, secrets, ids, bodies, skews, st.booleans(), st.booleans())
def test_we_accept_exactly_what_the_reference_library_accepts(
    signer: str, verifier: str, msg_id: str, body: bytes, skew: int, same_key: bool, tamper: bool
) -> None:
    verifier = signer if same_key else verifier
    # The reference library reads the real clock, so sign relative to it.
    now = datetime.now(UTC)
    timestamp = int((now + timedelta(seconds=skew)).timestamp())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(signer, msg_id, timestamp, body),
    }
    sent = body + b" " if tamper else body
    if abs(skew) in range(295, 306):  # the two clocks read a moment apart at the edge
        return
    assert ours_accepts(verifier, headers, sent, now) == reference_accepts(verifier, headers, sent)


def test_a_signature_made_by_the_reference_library_verifies() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"hello": "world"}'
    sig = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, body.decode())
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": str(int(NOW.timestamp())),
        "webhook-signature": f"v1,bm90LWEtc2lnbmF0dXJl {sig}",  # several signatures, one good
    }
    assert (
        Verifier.from_secrets([secret]).verify(headers, body, now=NOW)
        == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"webhook-timestamp": "1", "webhook-signature": "v1,x"}, "missing_headers"),
        (
            {"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
            "bad_timestamp",
        ),
        (
            {
                "webhook-id": "m",
                "webhook-timestamp": str(int(NOW.timestamp())),
                "webhook-signature": "v2,abc",
            },
            "bad_signature",
        ),
        (
            {
                "webhook-id": "m" * 300,
                "webhook-timestamp": str(int(NOW.timestamp())),
                "webhook-signature": "v1,x",
            },
            "bad_webhook_id",
        ),
    ],
)
def test_malformed_signature_headers_have_precise_reasons(
    headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        Verifier.from_secrets(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).verify(
            headers, b"{}", now=NOW
        )
    assert caught.value.reason == reason
