"""What the messaging dispatcher asks of an email or SMS provider, and what it gets back.

A messaging connector is a thin client of one provider's HTTP API (SendGrid v3 mail send, Twilio
Messages). It knows the provider's paths, bodies, limits, auth and error shapes; it knows nothing
about consent, quiet hours or templates: the dispatcher hands it messages that are already
rendered and allowed. Whole-call failures are the exceptions of `connectors.base`
(TransientFailure, RateLimited, AuthFailed, ConfigurationError); per-message refusals are
outcomes. Neither ever carries a message body, an address or any other value: only the provider's
error codes, HTTP statuses and field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SendOutcome = Literal["sent", "rejected", "opted_out", "retry"]
"""sent: the provider accepted the message (202 / 201); rejected: permanent refusal for this
message's data (bad number, body too long...); opted_out: the recipient has opted out at the
provider (Twilio 21610): consent must be updated; retry: a per-message transient refusal."""


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One rendered email. `message_id` is ours: it travels in custom_args and comes back on
    every event of the Event Webhook."""

    message_id: str
    to_email: str
    to_name: str | None
    subject: str
    html: str
    text: str
    category: str  # our template name, e.g. "order_confirmation" (never PHI)
    unsubscribe_group: int | None = None  # SendGrid asm.group_id for this purpose
    # A SendGrid-hosted dynamic template (d-...) renders the email instead of subject/html/text,
    # from `dynamic_data`: exactly the variables our own template uses, so the PHI lint holds.
    template_id: str | None = None
    dynamic_data: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One rendered SMS to an E.164 number."""

    message_id: str
    to_phone: str
    body: str


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    outcome: SendOutcome
    provider_id: str | None = None  # SendGrid X-Message-Id (shared by a batch), Twilio SM... sid
    code: str | None = None  # the provider's error code, e.g. "21610" or "400"
    detail: str | None = None  # PHI-free: codes and field names only


@dataclass(slots=True)
class SendStats:
    calls: int = 0
    rate_limited: int = 0
    retried: int = 0


class EmailProvider(Protocol):
    name: str
    batch_max: int  # messages per API call (SendGrid: 1000 personalizations)
    stats: SendStats

    def send_emails(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Send one batch (<= batch_max); one result per message, in any order."""
        ...


class SmsProvider(Protocol):
    name: str
    batch_max: int  # Twilio: 1 (the Messages API creates one message per call)
    stats: SendStats

    def send_sms(self, messages: Sequence[SmsMessage]) -> list[SendResult]: ...


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """Where a provider is and how telecrm authenticates to it (from settings)."""

    base_url: str
    credentials: dict[str, str] = field(default_factory=dict)
