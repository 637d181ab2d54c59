"""The SendGrid sandbox's Event Webhook: simulated events, their signature and their delivery.

`EventFactory` turns each accepted recipient into a realistic, seeded sequence of events with
the common and per-type fields of messaging.md §3.2 (custom args flattened as top-level keys,
`category` a string for one and an array for several). `WebhookSigner` signs exactly the bytes
it sends the way SendGrid does (§3.1): ECDSA P-256 / SHA-256 over `timestamp + body`, DER,
base64. `serialise_events` writes the body with `\\r\\n` between events and at the end (§3.1
pitfalls), so a receiver that re-serialises JSON instead of verifying the raw bytes fails.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field

from telecrm.sandbox.sendgrid_mail import first_link
from telecrm.sandbox.sendgrid_store import StoredMessage

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"  # SDK EventWebhookHeader (§3.1)
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"  # SDK EventWebhookHeader (§3.1)
EVENT_BATCH_MAX = 1000  # events per POST: ours; SendGrid's own batching is unconfirmed (§3.2)
SENDER_IP = "149.72.154.232"  # a SendGrid sending IP, for delivered/deferred `ip`
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
MACHINE_AGENT = "Mozilla/5.0"  # Apple Mail Privacy Protection fetches the pixel with a bare agent
ENGAGEMENT_KINDS = (
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
)

Deliver = Callable[[str, dict[str, str], bytes], int]


class EventRates(BaseModel):
    """How often each outcome happens, per recipient (defaults: messaging.md §3.2 brief)."""

    model_config = ConfigDict(extra="forbid")

    bounce: float = Field(0.03, ge=0, le=1)  # half of these are `blocked` (type "blocked")
    deferred: float = Field(0.05, ge=0, le=1)  # a deferral before the delivery
    open: float = Field(0.35, ge=0, le=1)  # of delivered
    machine_open: float = Field(0.3, ge=0, le=1)  # of opens: sg_machine_open true
    click: float = Field(0.08, ge=0, le=1)  # of opens
    spamreport: float = Field(0.001, ge=0, le=1)  # of delivered
    unsubscribe: float = Field(0.003, ge=0, le=1)  # of delivered; group_unsubscribe with asm


def default_deliver(url: str, headers: dict[str, str], body: bytes) -> int:
    """POST one batch with httpx; a network failure counts as status 0 (try again later)."""
    try:
        return httpx.post(url, content=body, headers=headers, timeout=10.0).status_code
    except httpx.HTTPError:
        return 0


def serialise_events(events: list[dict[str, Any]]) -> bytes:
    """The webhook body as SendGrid writes it: a JSON array, CRLF between events and at the end."""
    parts = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events]
    return ("[" + ",\r\n".join(parts) + "]\r\n").encode()


class WebhookSigner:
    """The account's Event Webhook key pair (generated, or loaded from a PEM private key)."""

    def __init__(self, private_key_pem: str | None = None) -> None:
        if private_key_pem:
            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("the webhook signing key must be an EC P-256 private key")
            self._key = key
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode()  # no PEM armour, as SendGrid gives it

    def sign(self, timestamp: str, body: bytes) -> str:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def headers(self, timestamp: str, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: self.sign(timestamp, body),
            TIMESTAMP_HEADER: timestamp,
        }


class EventFactory:
    """Seeded, realistic events for stored messages."""

    def __init__(self, rates: EventRates, rng: random.Random) -> None:
        self.rates = rates
        self.rng = rng

    def _event_id(self) -> str:
        raw = self.rng.getrandbits(192).to_bytes(24, "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def event(self, msg: StoredMessage, kind: str, at: int, **extra: Any) -> dict[str, Any]:
        """One event with the fields every event has (§3.2), custom args flattened in."""
        out: dict[str, Any] = dict(msg.custom_args)
        out.update(email=msg.email, timestamp=at, event=kind, sg_event_id=self._event_id())
        out["sg_message_id"] = msg.sg_message_id
        out["smtp-id"] = msg.smtp_id
        if len(msg.categories) == 1:
            out["category"] = msg.categories[0]
        elif msg.categories:
            out["category"] = list(msg.categories)
        if msg.asm_group_id is not None:
            out["asm_group_id"] = msg.asm_group_id
        out.update(extra)
        return out

    def lifecycle(self, msg: StoredMessage, now: float) -> list[dict[str, Any]]:
        """processed, then dropped / bounce / (deferred) delivered, then maybe engagement."""
        r, t = self.rates, max(int(now), msg.send_at or 0)
        events = [self.event(msg, "processed", t)]
        if msg.dropped_reason is not None:
            return [
                *events,
                self.event(msg, "dropped", t, reason=msg.dropped_reason, status="5.0.0"),
            ]
        roll = self.rng.random()
        if roll < r.bounce:
            blocked = roll < r.bounce / 2
            return [*events, self.bounce(msg, t + 1, blocked=blocked)]
        if self.rng.random() < r.deferred:
            t += 1
            events.append(
                self.event(msg, "deferred", t, response="421 4.7.0 Try again later", attempt="1", ip=SENDER_IP)
            )  # fmt: skip
        t += 1
        events.append(self.event(msg, "delivered", t, response="250 OK", ip=SENDER_IP, tls=1))
        if self.rng.random() < r.open:
            t += 5
            events.append(
                self.engagement(msg, "open", t, machine=self.rng.random() < r.machine_open)
            )
            if self.rng.random() < r.click:
                t += 3
                events.append(self.engagement(msg, "click", t))
        if self.rng.random() < r.spamreport:
            t += 10
            events.append(self.engagement(msg, "spamreport", t))
        if self.rng.random() < r.unsubscribe:
            t += 10
            kind = "group_unsubscribe" if msg.asm_group_id is not None else "unsubscribe"
            events.append(self.engagement(msg, kind, t))
        return events

    def bounce(self, msg: StoredMessage, at: int, *, blocked: bool) -> dict[str, Any]:
        if blocked:
            return self.event(
                msg, "bounce", at, type="blocked", status="5.7.1", bounce_classification="Reputation",
                reason="550 5.7.1 Message rejected due to local policy",
            )  # fmt: skip
        return self.event(
            msg, "bounce", at, type="bounce", status="5.1.1", bounce_classification="Invalid Address",
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
        )  # fmt: skip

    def engagement(
        self, msg: StoredMessage, kind: str, at: int, *, machine: bool = False
    ) -> dict[str, Any]:
        """An open, click, spam report or (group) unsubscribe by the recipient."""
        ip = f"203.0.113.{self.rng.randrange(1, 255)}"  # TEST-NET-3: never a real person's address
        if kind == "open":
            agent = MACHINE_AGENT if machine else USER_AGENT
            return self.event(msg, kind, at, useragent=agent, ip=ip, sg_machine_open=machine)
        if kind == "click":
            url = first_link(msg.html) or "https://example.com/"
            return self.event(
                msg, kind, at, url=url, url_offset={"index": 0, "type": "html"}, useragent=USER_AGENT, ip=ip
            )  # fmt: skip
        if kind in ("group_unsubscribe", "group_resubscribe"):
            return self.event(
                msg, kind, at, useragent=USER_AGENT, ip=ip, url="https://sendgrid.sandbox/preferences"
            )  # fmt: skip
        return self.event(msg, kind, at)
