"""Twilio's webhooks, trusted and read: X-Twilio-Signature, status callbacks, inbound SMS, keywords.

Signatures follow research messaging.md §6.1/§6.3 (the official `RequestValidator`): HMAC-SHA1
keyed by the auth token over the full URL plus every POST parameter name+value in sorted order,
base64; the URL is tried with and without its default port, and every token of a rotation
window (§6.4) is accepted. Parsers return `provider_events` types and raise only
`WebhookRejected`, whose detail names fields, never their values. Keyword sets are Twilio's
default single-word handling (§7.1); `looks_like_revocation` widens them for the FCC's
"any reasonable means" rule (§7.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from telecrm.messaging.provider_events import (
    DeliveryReport,
    InboundSms,
    ReportKind,
    WebhookRejected,
)

Keyword = Literal["stop", "start", "help"]
Params = Mapping[str, str | Sequence[str]]  # repeated form keys come as lists

# Twilio's default keyword handling (messaging.md §7.1): single word, case-insensitive.
STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# MessageStatus values a status callback may carry that we report (§4.3 ∩ ReportKind);
# receiving/received are inbound, scheduled never gets a callback.
_REPORTED: tuple[ReportKind, ...] = (
    "accepted", "queued", "sending", "sent", "failed", "delivered", "undelivered", "canceled",
    "read",
)  # fmt: skip
STATUS_KINDS: dict[str, ReportKind] = {s: s for s in _REPORTED}
OPT_OUT_TYPES = frozenset({"STOP", "START", "HELP"})  # Advanced Opt-Out's OptOutType (§4.5)

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")  # api.v2010.account.message.sid
SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
CHANNEL_PREFIX = re.compile(r"^[a-z]+:")  # "whatsapp:+1555..." (§4.1 To)
ERROR_CODE = re.compile(r"^[0-9]{1,6}$")


# -- signatures -------------------------------------------------------------------------------
def twilio_signature(auth_token: str, url: str, params: Params) -> str:
    """X-Twilio-Signature for a form POST to `url` (§6.1): what Twilio (or our sandbox) sends."""
    payload = url
    for name in sorted(set(params)):
        value = params[name]
        values = [value] if isinstance(value, str) else value
        for item in sorted(set(values)):
            payload += name + item
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode().strip()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and without its port or with the scheme's default port (§6.3)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if port is not None:
        other = urlunsplit(parts._replace(netloc=userinfo + at + hostport.rsplit(":", 1)[0]))
    else:
        default = 443 if parts.scheme == "https" else 80
        other = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))
    return [url] if other == url else [url, other]


def verify_twilio_signature(
    auth_tokens: Sequence[str], url: str, params: Params, signature: str | None
) -> None:
    """Return if `signature` is Twilio's for this request under any token; else WebhookRejected.

    `url` must be the public URL Twilio called (scheme, host, path and query), not the one a
    proxy forwarded to (§6.4).
    """
    if not signature:
        raise WebhookRejected("missing_signature", "the X-Twilio-Signature header is missing")
    if not auth_tokens:
        raise WebhookRejected("signature_mismatch", "no Twilio auth token is configured")
    given = signature.encode()
    matched = False
    for token in auth_tokens:
        for candidate in _url_variants(url):
            expected = twilio_signature(token, candidate, params).encode()
            # no early exit: the time taken does not tell which token or URL form matched
            matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise WebhookRejected(
            "signature_mismatch", "X-Twilio-Signature does not match the URL and parameters"
        )


# -- payloads ---------------------------------------------------------------------------------
def _field(params: Params, name: str, *, required: bool = True) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        items = list(value) if isinstance(value, list | tuple) else []
        if len(items) != 1 or not isinstance(items[0], str):
            raise WebhookRejected("malformed_body", f"{name} is repeated or not text")
        value = items[0]
    if value is None:
        if required:
            raise WebhookRejected("malformed_body", f"{name} is missing")
        return None
    return value


def _message_sid(params: Params) -> str:
    sid = _field(params, "MessageSid")
    if sid is None or not MESSAGE_SID.fullmatch(sid):
        raise WebhookRejected("malformed_body", "MessageSid is not a Twilio message SID")
    return sid


def _is_address(value: str) -> bool:
    return bool(E164.fullmatch(CHANNEL_PREFIX.sub("", value, count=1)))


def parse_twilio_status(params: Params, now: datetime) -> DeliveryReport:
    """A status callback (§4.4) as a DeliveryReport; `now` is when we received it."""
    sid = _message_sid(params)
    status = _field(params, "MessageStatus", required=False)
    if status is None:
        status = _field(params, "SmsStatus")  # legacy duplicate (§4.4)
    kind = STATUS_KINDS.get(status or "")
    if kind is None:
        raise WebhookRejected("malformed_body", "MessageStatus is not a known outbound status")
    to = _field(params, "To", required=False)
    if to is not None and not _is_address(to):
        raise WebhookRejected("malformed_body", "To is not an E.164 number")
    code = _field(params, "ErrorCode", required=False) or None
    if code is not None and not ERROR_CODE.fullmatch(code):
        raise WebhookRejected("malformed_body", "ErrorCode is not numeric")
    return DeliveryReport(
        provider="twilio",
        receipt_id=f"{sid}:{status}",
        kind=kind,
        at=now,
        provider_id=sid,
        address=to,
        code=code,
        reason=kind if kind in ("failed", "undelivered") else None,
    )


def parse_twilio_inbound(params: Params, now: datetime) -> InboundSms:
    """An inbound SMS webhook (§4.5) as InboundSms; the body is kept for keyword handling only."""
    sid = _message_sid(params)
    from_phone = _field(params, "From")
    if from_phone is None or not E164.fullmatch(from_phone):
        raise WebhookRejected("malformed_body", "From is not an E.164 number")
    to_phone = _field(params, "To")
    if not to_phone or len(to_phone) > 64:
        raise WebhookRejected("malformed_body", "To is missing or too long")
    body = _field(params, "Body")
    service = _field(params, "MessagingServiceSid", required=False) or None
    if service is not None and not SERVICE_SID.fullmatch(service):
        raise WebhookRejected("malformed_body", "MessagingServiceSid is not a service SID")
    opt_out = _field(params, "OptOutType", required=False)
    return InboundSms(
        receipt_id=sid,
        from_phone=from_phone,
        to_phone=to_phone,
        body=body or "",
        at=now,
        messaging_service_sid=service,
        opt_out_type=opt_out if opt_out in OPT_OUT_TYPES else None,
    )


# -- keywords ---------------------------------------------------------------------------------
def classify_keyword(body: str) -> Keyword | None:
    """Twilio's default keyword handling (§7.1): the whole trimmed message is one keyword.

    ASCII only: `str.upper()` would turn a long s (U+017F) + "top" into "STOP", which Twilio does not match.
    """
    word = body.strip()
    if not word.isascii():
        return None
    word = word.upper()
    if word in STOP_KEYWORDS:
        return "stop"
    if word in START_KEYWORDS:
        return "start"
    if word in HELP_KEYWORDS:
        return "help"
    return None


# Whole-message revocations once politeness words are dropped (§7.2: "stop", "quit", "end",
# "revoke", "opt out", "cancel", "unsubscribe" are per se revocation; Spanish equivalents).
_WHOLE_MESSAGE = frozenset(
    {
        "stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "revoke",
        "optout", "opt out", "no more", "remove me", "para", "alto", "basta", "cancelar",
        "baja", "detener", "no mas",
    }
)  # fmt: skip
_FILLER = frozenset(
    {"please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ok", "okay", "por",
     "favor", "ya", "gracias", "it"}
)  # fmt: skip
# Phrases that revoke wherever they appear in free text.
_PHRASES = (
    "stop texting", "stop sending", "stop messaging", "stop contacting", "stop calling",
    "unsubscribe", "opt out", "optout", "opt me out", "remove me", "take me off",
    "no more texts", "no more text", "no more messages", "no more sms",
    "dont text", "do not text", "dont message", "do not message", "do not contact",
    "dont contact", "quit texting", "leave me alone", "revoke", "stop all",
    "dejen de", "deja de", "no me manden", "no me envien", "no me escriban",
    "darme de baja", "dar de baja", "no mas mensajes", "no quiero mensajes",
)  # fmt: skip
_FIRST_WORDS = frozenset({"stop", "stopall", "unsubscribe", "revoke", "optout"})


def _normalise(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.casefold())
    ascii_only = "".join(c for c in folded if not unicodedata.combining(c))
    ascii_only = ascii_only.replace("'", "").replace("\u2019", "")
    return re.findall(r"[a-z0-9]+", ascii_only)


def looks_like_revocation(body: str) -> bool:
    """Whether free text reads as a consent revocation (FCC 24-24, §7.2), beyond Twilio's words.

    A candidate for opt-out or human review: "please stop texting me", "opt out", "no more
    texts", "para", "alto", "cancelar". Words that also occur in ordinary replies ("cancel my
    appointment", "para el lunes") count only when they are the whole message.
    """
    words = _normalise(body)
    if not words:
        return False
    core = " ".join(w for w in words if w not in _FILLER)
    if core in _WHOLE_MESSAGE:
        return True
    text = f" {' '.join(words)} "
    if any(f" {phrase} " in text for phrase in _PHRASES):
        return True
    return words[0] in _FIRST_WORDS
