"""The Twilio sandbox's account: config, messages, opt-outs, errors and the webhook outbox.

Plain Python, no HTTP: `twilio.py` turns requests into calls here. Values follow research
messaging.md §4 (Message resource, statuses), §5 (error codes and the legacy error body), §7.1
(keyword handling and opt-out scope) and §8 (segments, via `messaging.segments`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field

from telecrm.messaging.segments import count_segments

API_VERSION = "2010-04-01"  # the Messages API's version path (§4.1)
MAX_BODY_CHARS = 1600  # Body limit; longer is error 21617 (§4.1, §5.2)
ERRORS_DOCS = "https://www.twilio.com/docs/errors/"  # more_info prefix (§5.1)

# code -> (HTTP status, message). Messages never hold a submitted value (§5.1 shows Twilio
# echoing the number; we do not, so nothing sensitive reaches a client log).
ERRORS: dict[int, tuple[int, str]] = {
    20001: (400, "Invalid paging parameter"),
    20003: (401, "Authenticate"),
    20004: (405, "Method not allowed"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number or a 'MessagingServiceSid' is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (400, "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account."),
    21609: (400, "Invalid StatusCallback url."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21701: (400, "The Messaging Service Sid is invalid."),
}  # fmt: skip

# Asynchronous outcomes (§5.2): undelivered and failed draw their ErrorCode from these.
UNDELIVERED_CODES = (30003, 30005, 30006, 30007)
FAILED_CODES = (30001, 30002, 30008)
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})

# Default auto-replies on a long code: exact Twilio texts UNCONFIRMED (§7.1, §9).
AUTO_REPLIES = {
    "stop": "You have successfully been unsubscribed. You will not receive any more messages "
    "from this number. Reply START to resubscribe.",
    "start": "You have successfully been re-subscribed to messages from this number. Reply HELP "
    "for help. Reply STOP to unsubscribe. Msg&Data Rates May Apply.",
    "help": "Reply STOP to unsubscribe. Msg&Data Rates May Apply.",
}


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


class TwilioSandboxConfig(BaseModel):
    """The sandbox account, its one Messaging Service, its limits and its simulated recipients."""

    model_config = ConfigDict(extra="forbid")

    account_sid: str = Field("AC" + "5a4d" * 8, pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # noqa: S105 - sandbox only
    secondary_auth_token: str | None = None  # also accepted for Basic auth (rotation, §6.4)
    messaging_service_sid: str = Field("MG" + "6d67" * 8, pattern=r"^MG[0-9a-fA-F]{32}$")
    sender_pool: list[str] = Field(
        default_factory=lambda: ["+12025550101", "+12025550102", "+12025550103"], min_length=1
    )
    status_callback_url: str | None = None  # the service's default StatusCallback
    inbound_url: str | None = None  # the service's inbound webhook
    requests_per_second: int = Field(100, ge=1)  # REST concurrency stand-in (§5.3, UNCONFIRMED)
    window_seconds: float = Field(1.0, gt=0)
    undelivered_rate: float = Field(0.02, ge=0, le=1)  # delivered is what is left (~97 %)
    failed_rate: float = Field(0.01, ge=0, le=1)
    reply_rate: float = Field(0.0, ge=0, le=1)  # survey answers to "0-10" questions
    stop_rate: float = Field(0.0, ge=0, le=1)  # recipients who answer STOP
    callback_order: Literal["in_order", "shuffled"] = "in_order"
    advanced_opt_out: bool = False  # adds OptOutType to inbound webhooks (§4.5)
    seed: int = 0


@dataclass(slots=True)
class StoredMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    service_sid: str | None
    status: str
    direction: str
    created: datetime
    updated: datetime
    sent: datetime | None = None
    num_segments: str = "0"
    error_code: int | None = None
    status_callback: str | None = None
    fate: str = "delivered"  # the final status this message will reach


def rfc2822(at: datetime | None) -> str | None:
    return None if at is None else format_datetime(at.astimezone(UTC))


def message_json(m: StoredMessage) -> dict[str, Any]:
    """The `api.v2010.account.message` resource (§4.2)."""
    base = f"/{API_VERSION}/Accounts/{m.account_sid}/Messages/{m.sid}"
    return {
        "account_sid": m.account_sid, "api_version": API_VERSION, "body": m.body,
        "date_created": rfc2822(m.created), "date_sent": rfc2822(m.sent),
        "date_updated": rfc2822(m.updated), "direction": m.direction,
        "error_code": m.error_code, "error_message": None if m.error_code is None else "Message failed",
        "from": m.from_, "messaging_service_sid": m.service_sid, "num_media": "0",
        "num_segments": m.num_segments, "price": None, "price_unit": "USD", "sid": m.sid,
        "status": m.status, "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
        "to": m.to, "uri": f"{base}.json",
    }  # fmt: skip


def error_body(code: int) -> tuple[int, dict[str, Any]]:
    """Twilio's legacy error shape with its HTTP status (§5.1)."""
    status, message = ERRORS[code]
    return status, {
        "code": code,
        "message": message,
        "more_info": f"{ERRORS_DOCS}{code}",
        "status": status,
    }


@dataclass(slots=True)
class Pending:
    """One webhook still to deliver: a status callback or an inbound SMS."""

    kind: Literal["status", "inbound"]
    url: str
    params: dict[str, str]
    idempotency_token: str
    attempts: int = 0


@dataclass(slots=True)
class TwilioSandboxStats:
    requests: dict[str, int] = field(default_factory=dict)
    created: int = 0
    rate_limited: int = 0
    errors_sent: int = 0  # injected 5xx
    rejected: int = 0  # 4xx for the request's data
    unauthorized: int = 0
    dropped: int = 0
    callbacks_sent: int = 0
    callback_failures: int = 0
    inbound_sent: int = 0
    inbound_failures: int = 0
    opt_outs: int = 0
    opt_ins: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Account:
    """Messages, opt-outs and the webhook outbox of one sandbox account (callers hold the lock)."""

    def __init__(self, config: TwilioSandboxConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.messages: dict[str, StoredMessage] = {}
        self.opted_out: set[tuple[str, str]] = set()  # (service sid, phone) (§7.1 scope)
        self.auto_replies: list[dict[str, str]] = []
        self.outbox: list[Pending] = []
        self.in_flight: list[str] = []  # sids not yet at their final status
        self.inbound_url = config.inbound_url
        self.status_url = config.status_callback_url

    def new_sid(self, prefix: str = "SM") -> str:
        return prefix + _hex32(self.rng)

    def draw_fate(self) -> tuple[str, int | None]:
        roll = self.rng.random()
        if roll < self.config.failed_rate:
            return "failed", self.rng.choice(FAILED_CODES)
        if roll < self.config.failed_rate + self.config.undelivered_rate:
            return "undelivered", self.rng.choice(UNDELIVERED_CODES)
        return "delivered", None

    def is_opted_out(self, phone: str) -> bool:
        return (self.config.messaging_service_sid, phone) in self.opted_out

    def status_params(self, m: StoredMessage, status: str, at: datetime) -> dict[str, str]:
        """A status callback's form (§4.4): ErrorCode only on failures, RawDlrDoneDate on finals."""
        params = {
            "AccountSid": m.account_sid, "From": m.from_ or "", "To": m.to, "MessageSid": m.sid,
            "SmsSid": m.sid, "SmsStatus": status, "MessageStatus": status, "ApiVersion": API_VERSION,
        }  # fmt: skip
        if m.service_sid:
            params["MessagingServiceSid"] = m.service_sid
        if status in ("failed", "undelivered") and m.error_code is not None:
            params["ErrorCode"] = str(m.error_code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = at.strftime("%y%m%d%H%M")
        return params

    def advance(self, m: StoredMessage, at: datetime) -> list[dict[str, str]]:
        """Take an accepted message to its fate; the status callbacks it earns, in order."""
        if m.from_ is None:
            m.from_ = self.rng.choice(self.config.sender_pool)
        m.num_segments = str(count_segments(m.body).segments)
        steps = ["queued"] if m.status == "accepted" else []
        steps += ["failed"] if m.fate == "failed" else ["sent", m.fate]
        forms = []
        for status in steps:
            m.status, m.updated = status, at
            if status == "sent":
                m.sent = at
            forms.append(self.status_params(m, status, at))
        return forms

    def inbound_params(
        self, sid: str, from_phone: str, to: str, body: str, keyword: str | None
    ) -> dict[str, str]:
        """The inbound webhook's form (§4.5)."""
        params = {
            "ToCountry": _country(to), "FromCountry": _country(from_phone),
            "SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid, "SmsStatus": "received",
            "Body": body, "To": to, "NumSegments": str(count_segments(body).segments),
            "MessageSid": sid, "AccountSid": self.config.account_sid, "From": from_phone,
            "ApiVersion": API_VERSION, "MessagingServiceSid": self.config.messaging_service_sid,
        }  # fmt: skip
        if keyword is not None and self.config.advanced_opt_out:
            params["OptOutType"] = keyword.upper()
        return params


def _country(phone: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone)) or ""
    except phonenumbers.NumberParseException:
        return ""


E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
DEFAULT_PAGE_SIZE = 50  # Twilio list default (twilio-python's page_size default)
MAX_PAGE_SIZE = 1000  # PageSize maximum on v2010 list resources


def valid_phone(value: str) -> bool:
    """E.164 and a possible number for its country (§4.1 To); else error 21211."""
    if not E164.fullmatch(value):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(value))
    except phonenumbers.NumberParseException:
        return False


def valid_callback(url: str) -> bool:
    """A StatusCallback Twilio takes: http(s), a hostname, no underscores (§4.1)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(host) and "_" not in host


def create_message(acct: Account, form: dict[str, str], at: datetime) -> tuple[int, dict[str, Any]]:
    """POST Messages.json, checked in Twilio's order: 201 and the Message resource, or an error."""
    cfg = acct.config
    to, body = form.get("To", ""), form.get("Body", "")
    from_, service = form.get("From") or None, form.get("MessagingServiceSid") or None
    callback = form.get("StatusCallback") or None
    code = (
        21604 if not to
        else 21211 if not valid_phone(to)
        else 21603 if from_ is None and service is None
        else 21701 if service is not None and service != cfg.messaging_service_sid
        else 21606 if from_ is not None and from_ not in cfg.sender_pool
        else 21602 if not body
        else 21617 if len(body) > MAX_BODY_CHARS
        else 21609 if callback is not None and not valid_callback(callback)
        else 21610 if acct.is_opted_out(to)
        else None
    )  # fmt: skip
    if code is not None:
        return error_body(code)
    fate, error_code = acct.draw_fate()
    # Without a service the sender is fixed now; a pool number still belongs to the service,
    # so the service's opt-outs apply to it (§7.1).
    message = StoredMessage(
        sid=acct.new_sid(), account_sid=cfg.account_sid, to=to, from_=from_, body=body,
        service_sid=service or cfg.messaging_service_sid,
        status="accepted" if service else "queued", direction="outbound-api",
        created=at, updated=at, fate=fate,
        status_callback=callback or (acct.status_url if service else None),
        num_segments="0" if from_ is None else str(count_segments(body).segments),
    )  # fmt: skip
    response = message_json(message)
    message.error_code = error_code  # known to Twilio only once the carrier answers
    acct.messages[message.sid] = message
    acct.in_flight.append(message.sid)
    return 201, response


def list_page(acct: Account, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """GET Messages.json: newest first, filtered by To/From, paged by PageSize/Page."""
    try:
        size = min(max(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        page = max(int(query.get("Page", 0)), 0)
    except ValueError:
        return error_body(20001)
    wanted = [
        m for m in reversed(acct.messages.values())
        if query.get("To") in (None, m.to) and query.get("From") in (None, m.from_)
    ]  # fmt: skip
    chunk = wanted[page * size : (page + 1) * size]
    base = f"/{API_VERSION}/Accounts/{acct.config.account_sid}/Messages.json"

    def uri(n: int) -> str:
        return f"{base}?PageSize={size}&Page={n}"

    more = (page + 1) * size < len(wanted)
    return 200, {
        "messages": [message_json(m) for m in chunk], "page": page, "page_size": size,
        "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
        "uri": uri(page), "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1) if more else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
    }  # fmt: skip
