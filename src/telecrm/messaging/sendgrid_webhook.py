"""SendGrid's signed Event Webhook: signature verification and event parsing into DeliveryReports.

Verification follows messaging.md §3.1: ECDSA P-256 / SHA-256 over the UTF-8 bytes of
`timestamp + raw body`, the signature base64 DER in `X-Twilio-Email-Event-Webhook-Signature`,
the timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`. It runs over the exact bytes received
(re-serialised JSON never verifies, and real bodies end with CRLF). SendGrid documents no replay
window; we refuse timestamps more than 5 minutes off (§3.1). Parsing follows §3.2: a JSON array
of events, our `telecrm_message_id` custom arg flattened into each. No WebhookRejected detail
ever holds a value from the payload: only indexes, field names and counts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from telecrm.messaging.provider_events import DeliveryReport, ReportKind, WebhookRejected

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"  # SDK EventWebhookHeader (§3.1)
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"  # SDK EventWebhookHeader (§3.1)
TOLERANCE_SECONDS = 300  # ours: SendGrid documents no replay window (messaging.md §3.1)
MAX_EVENTS = 10_000  # ours: a bound on one POST; SendGrid's batch size is unconfirmed (§3.2)
MESSAGE_ID_ARG = "telecrm_message_id"  # the custom arg the SendGrid connector sets

KINDS: dict[str, ReportKind] = {
    "processed": "processed", "deferred": "deferred", "delivered": "delivered",
    "dropped": "dropped", "bounce": "bounced", "open": "opened", "click": "clicked",
    "spamreport": "spam_report", "unsubscribe": "unsubscribed",
    "group_unsubscribe": "group_unsubscribed", "group_resubscribe": "group_resubscribed",
}  # fmt: skip
# Dropped reasons we pass on as categories (§2.3, §3.2); any other text becomes "other".
DROP_REASONS = frozenset(
    {"Bounced Address", "Unsubscribed Address", "Spam Reporting Address", "Invalid"}
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "load_public_key",
    "parse_sendgrid_events",
    "verify_sendgrid_signature",
]


def load_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER (no armour) or from a PEM block."""
    text = key.strip()
    try:
        if "-----BEGIN" in text:
            loaded = load_pem_public_key(text.encode())
        else:
            loaded = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("the Event Webhook public key is not a base64 DER or PEM key") from exc
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
        raise ValueError("the Event Webhook public key must be an EC P-256 key")
    return loaded


def verify_sendgrid_signature(
    public_key: ec.EllipticCurvePublicKey,
    signature_b64: str | None,
    timestamp: str | None,
    raw_body: bytes,
    *,
    now: float,
    tolerance_seconds: float = TOLERANCE_SECONDS,
) -> None:
    """Return if SendGrid signed exactly these bytes recently enough; raise WebhookRejected if not."""
    if not signature_b64 or not timestamp:
        raise WebhookRejected("missing_signature", "the signature or timestamp header is missing")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookRejected("bad_timestamp", "the timestamp header is not unix seconds")
    age = now - int(timestamp)
    if age > tolerance_seconds:
        raise WebhookRejected("stale_timestamp", f"signed more than {tolerance_seconds:g} s ago")
    if age < -tolerance_seconds:
        raise WebhookRejected(
            "future_timestamp", f"signed more than {tolerance_seconds:g} s in the future"
        )
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise WebhookRejected("bad_signature_encoding", "the signature is not base64") from None
    if not signature:
        raise WebhookRejected("bad_signature_encoding", "the signature is empty")
    try:
        public_key.verify(signature, timestamp.encode() + raw_body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise WebhookRejected(
            "signature_mismatch", "the signature does not match the timestamp and body"
        ) from None


def parse_sendgrid_events(raw_body: bytes, *, max_events: int = MAX_EVENTS) -> list[DeliveryReport]:
    """The body's events as DeliveryReports; event types we do not know are skipped."""
    try:
        payload = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise WebhookRejected("malformed_body", "the body is not UTF-8 JSON") from None
    if not isinstance(payload, list):
        raise WebhookRejected("malformed_body", "the body must be a JSON array of events")
    if len(payload) > max_events:
        raise WebhookRejected("malformed_body", f"more than {max_events} events in one body")
    reports = []
    for i, item in enumerate(payload):
        report = _report(i, item)
        if report is not None:
            reports.append(report)
    return reports


def _report(i: int, item: Any) -> DeliveryReport | None:
    if not isinstance(item, dict):
        raise WebhookRejected("malformed_body", f"event {i} is not an object")
    for name in ("email", "event", "sg_event_id"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise WebhookRejected("malformed_body", f"event {i} lacks a valid {name}")
    stamp = item.get("timestamp")
    if not isinstance(stamp, int | float) or isinstance(stamp, bool) or not math.isfinite(stamp):
        raise WebhookRejected("malformed_body", f"event {i} lacks a valid timestamp")
    try:
        at = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise WebhookRejected(
            "malformed_body", f"event {i} has an out-of-range timestamp"
        ) from None
    kind = KINDS.get(item["event"])
    if kind is None:
        return None
    message_id = item.get(MESSAGE_ID_ARG)
    sg_message_id = item.get("sg_message_id")
    provider_id = sg_message_id.split(".", 1)[0] if isinstance(sg_message_id, str) else ""
    group = item.get("asm_group_id")
    url = item.get("url")
    return DeliveryReport(
        provider="sendgrid",
        receipt_id=item["sg_event_id"],
        kind=kind,
        at=at,
        message_id=message_id if isinstance(message_id, str) and message_id else None,
        provider_id=provider_id or None,
        address=item["email"],
        code=_code(item),
        reason=_reason(kind, item),
        asm_group_id=group if isinstance(group, int) and not isinstance(group, bool) else None,
        machine_open=item.get("sg_machine_open") is True,
        url=url if kind == "clicked" and isinstance(url, str) else None,
    )


def _code(item: dict[str, Any]) -> str | None:
    status = item.get("status")
    return status if isinstance(status, str) and status else None


def _reason(kind: ReportKind, item: dict[str, Any]) -> str | None:
    """A category only: the bounce type, or a known dropped reason (never SMTP free text)."""
    if kind == "bounced":
        return "blocked" if item.get("type") == "blocked" else "bounce"
    if kind == "dropped":
        reason = item.get("reason")
        return reason if isinstance(reason, str) and reason in DROP_REASONS else "other"
    return None
