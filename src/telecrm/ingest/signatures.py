"""Standard Webhooks signatures (standardwebhooks.com): verify what platforms send, sign what we send.

signed content = "{webhook-id}.{webhook-timestamp}.{body}"; signature = base64(HMAC-SHA256(key,
signed content)); header `webhook-signature` holds space-separated "v1,<base64>" entries. Every
configured secret is tried, so a platform can rotate its secret without a gap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300  # the spec's recommended 5-minute window
MAX_WEBHOOK_ID_LENGTH = 256


class SignatureError(ValueError):
    """The request is not provably from the platform. `reason` is a stable code for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class InvalidSecret(ValueError):
    """A configured secret that is not `whsec_` + base64."""


def decode_secret(secret: str) -> bytes:
    raw = secret.strip()
    if raw.startswith(SECRET_PREFIX):
        raw = raw[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(
            "a webhook secret is not valid base64 after its whsec_ prefix "
            "(generate one with `telecrm secrets webhook`)"
        ) from None
    if len(key) < 16:
        raise InvalidSecret("a webhook secret is shorter than 16 bytes")
    return key


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = b"%s.%s.%s" % (msg_id.encode(), timestamp.encode(), body)
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for a message (for senders and tests)."""
    sig = _signature(decode_secret(secret), msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(sig).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


@dataclass(frozen=True, slots=True)
class Verifier:
    keys: tuple[bytes, ...]
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS

    @classmethod
    def from_secrets(
        cls, secrets: Sequence[str], tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
    ) -> Verifier:
        return cls(tuple(decode_secret(s) for s in secrets), tolerance_seconds)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> str:
        """Returns the webhook-id of a genuine, fresh message; raises SignatureError otherwise."""
        if not self.keys:
            raise SignatureError(
                "no_secret_configured",
                "this server has no webhook secret: set TELECRM_WEBHOOK_SECRETS",
            )
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        header = headers.get("webhook-signature")
        missing = [
            name
            for name, value in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", header),
            )
            if not value
        ]
        if missing:
            raise SignatureError("missing_headers", f"missing header(s): {', '.join(missing)}")
        assert msg_id is not None and timestamp is not None and header is not None
        if len(msg_id) > MAX_WEBHOOK_ID_LENGTH:
            raise SignatureError("bad_webhook_id", "webhook-id is longer than 256 characters")
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureError(
                "bad_timestamp", "webhook-timestamp must be integer seconds since the epoch"
            )
        skew = now.timestamp() - int(timestamp)
        if skew > self.tolerance_seconds:
            raise SignatureError(
                "stale_timestamp",
                f"webhook-timestamp is {int(skew)} s old; the limit is {self.tolerance_seconds} s",
            )
        if skew < -self.tolerance_seconds:
            raise SignatureError(
                "future_timestamp",
                f"webhook-timestamp is {int(-skew)} s in the future; "
                f"the limit is {self.tolerance_seconds} s",
            )
        offered = []
        for entry in header.split():
            version, _, value = entry.partition(",")
            if version != "v1" or not value:
                continue
            try:
                offered.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
        if not offered:
            raise SignatureError("bad_signature", "webhook-signature has no v1 signature")
        for key in self.keys:
            expected = _signature(key, msg_id, timestamp, body)
            for candidate in offered:
                if hmac.compare_digest(expected, candidate):
                    return msg_id
        raise SignatureError("bad_signature", "no signature matches any configured secret")


def generate_secret() -> str:
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
