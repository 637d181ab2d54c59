"""What comes back from the messaging providers, normalised: delivery reports and inbound SMS.

The webhook parsers (`sendgrid_webhook.py`, `twilio_webhook.py`) turn the providers' payloads
into these; `tracking.py` applies them to messages, consent and profiles. Addresses and bodies
are here because consent and suppression need them; nothing here is ever logged or stored in
clear (addresses become blind indexes, bodies are read for a keyword or a score and dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ReportKind = Literal[
    # SendGrid Event Webhook (event names normalised: bounce -> bounced, open -> opened, ...)
    "processed",
    "deferred",
    "delivered",
    "dropped",
    "bounced",
    "opened",
    "clicked",
    "spam_report",
    "unsubscribed",
    "group_unsubscribed",
    "group_resubscribed",
    # Twilio status callbacks (MessageStatus)
    "accepted",
    "queued",
    "sending",
    "sent",
    "failed",
    "undelivered",
    "canceled",
    "read",
]


class WebhookRejected(ValueError):
    """A provider callback we refuse: bad or missing signature, stale timestamp, malformed body.

    `reason` is a short code (e.g. "signature_mismatch", "stale_timestamp", "malformed_body");
    `detail` explains it for the operator. Neither ever holds a value from the payload.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    provider: Literal["sendgrid", "twilio"]
    receipt_id: (
        str  # unique per report: SendGrid sg_event_id; Twilio f"{MessageSid}:{MessageStatus}"
    )
    kind: ReportKind
    at: datetime  # aware, UTC
    message_id: str | None = None  # ours, from custom_args (SendGrid); None for Twilio
    provider_id: str | None = (
        None  # SendGrid sg_message_id prefix (before the first "."); Twilio MessageSid
    )
    address: str | None = None  # the recipient (email, or E.164 phone): for suppression only
    code: str | None = None  # SMTP status / Twilio ErrorCode
    reason: str | None = None  # a category, never free text with values: "bounce", "blocked",
    # "Bounced Address", "Unsubscribed Address", ...
    asm_group_id: int | None = None
    machine_open: bool = False  # Apple Mail Privacy Protection opened it, not a person
    url: str | None = None  # clicked link (ours: a platform link, no PHI)


@dataclass(frozen=True, slots=True)
class InboundSms:
    receipt_id: str  # MessageSid of the inbound message
    from_phone: str  # E.164
    to_phone: str
    body: str
    at: datetime
    messaging_service_sid: str | None = None
    opt_out_type: str | None = None  # Twilio's OptOutType when Advanced Opt-Out is on
