"""A SendGrid v3 stand-in: mail send, ASM groups and suppressions, limits, faults, Event Webhook.

`create_sendgrid_sandbox()` gives an ASGI app (wrapped in FaultInjector) plus its account, fault
plan and counters. Mail send validates like SendGrid (sendgrid_mail.py, messaging.md §1), stores
each recipient's rendered message, and queues signed Event Webhook events (sendgrid_events.py,
§3) until `flush_events()` posts them through the injected `deliver` callable. Suppressed
recipients are accepted (202) and then dropped (§2.3). Time is injected (`now`, `sleep`).
Rate limit: a fixed one-second window of `requests_per_second` API calls (SendGrid publishes no
numbers, §1.4; mail send is excluded from the 600/min v2 limit, so the default is generous).
Everything under `/_sandbox` is ours, not SendGrid's.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from telecrm.sandbox import sendgrid_mail as mail
from telecrm.sandbox import sendgrid_suppressions as suppressions_api
from telecrm.sandbox.faults import (
    ADMIN_PREFIX,
    FaultInjector,
    FaultPlan,
    inject_latency,
    make_response,
    respond,
    serve_app,
    set_faults,
)
from telecrm.sandbox.sendgrid_events import (
    ENGAGEMENT_KINDS,
    EVENT_BATCH_MAX,
    Deliver,
    EventFactory,
    EventRates,
    WebhookSigner,
    default_deliver,
    serialise_events,
)
from telecrm.sandbox.sendgrid_store import Account, StoredMessage, errors_body

REQUESTS_PER_SECOND = 600  # ours: SendGrid publishes no per-endpoint numbers (messaging.md §1.4)
MAX_BODY_BYTES = 30 * 1024 * 1024  # 30 MB total message size, commonly cited (§1.3, UNCONFIRMED)
MESSAGE_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

Sleep = Callable[[float], Awaitable[None] | None]


class SendGridSandboxConfig(BaseModel):
    """Who may call the sandbox account, its limits, seeded lists and its Event Webhook."""

    model_config = ConfigDict(extra="forbid")

    api_keys: set[str] = Field(default_factory=lambda: {"SG.sandbox-key"})
    requests_per_second: int = Field(REQUESTS_PER_SECOND, ge=1)
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1)
    asm_groups: dict[int, str] = Field(default_factory=dict)  # pre-seeded id -> name
    global_unsubscribes: set[str] = Field(default_factory=set)
    bounces: set[str] = Field(default_factory=set)
    spam_reports: set[str] = Field(default_factory=set)
    invalid_emails: set[str] = Field(default_factory=set)
    webhook_url: str | None = None
    webhook_id: str = "sandbox-event-webhook"
    webhook_private_key_pem: str | None = None  # default: a fresh P-256 key pair per sandbox
    event_batch_max: int = Field(EVENT_BATCH_MAX, ge=1)
    event_rates: EventRates = Field(default_factory=EventRates)
    seed: int = 0


@dataclass(slots=True)
class SendGridSandboxStats:
    """What the sandbox answered and what its Event Webhook posted."""

    requests: dict[str, int] = field(default_factory=dict)  # by "METHOD path"
    accepted_requests: int = 0  # mail sends answered 202
    accepted_messages: int = 0  # recipients of those sends
    bad_requests: int = 0
    unauthorized: int = 0
    rate_limited: int = 0  # 429s (window and storms)
    errors_sent: int = 0  # injected 5xx
    dropped: int = 0  # connections cut after applying the request
    dropped_recipients: int = 0  # suppressed recipients that got a `dropped` event
    events_sent: int = 0
    webhook_posts: int = 0
    webhook_failures: int = 0  # non-2xx answers (or no answer) from the webhook URL
    webhook_retries: int = 0  # batches posted again after a failure

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


_errors = errors_body

_GROUP = r"/v3/asm/groups/(?P<group>\d+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (verb, re.compile(pattern), name)
    for verb, pattern, name in [
        ("POST", r"/v3/mail/send", "mail_send"),
        ("POST", r"/v3/asm/groups", "create_group"),
        ("GET", r"/v3/asm/groups", "list_groups"),
        ("GET", _GROUP, "get_group"),
        ("POST", _GROUP + r"/suppressions", "add_group_suppressions"),
        ("GET", _GROUP + r"/suppressions", "list_group_suppressions"),
        ("DELETE", _GROUP + r"/suppressions/(?P<email>[^/]+)", "delete_group_suppression"),
        ("POST", r"/v3/asm/suppressions/global", "add_global"),
        ("GET", r"/v3/asm/suppressions/global/(?P<email>[^/]+)", "get_global"),
        ("DELETE", r"/v3/asm/suppressions/global/(?P<email>[^/]+)", "delete_global"),
        (
            "GET",
            r"/v3/suppression/(?P<list>bounces|spam_reports|unsubscribes|invalid_emails)",
            "list",
        ),
        ("GET", r"/v3/user/webhooks/event/settings/signed/(?P<id>[^/]+)", "signed_key"),
    ]
]


class SendGridSandbox:
    """One sandbox SendGrid account. `app` is what uvicorn or `sandbox_client` serves."""

    def __init__(
        self,
        config: SendGridSandboxConfig,
        *,
        now: Callable[[], float],
        sleep: Sleep,
        deliver: Deliver = default_deliver,
    ) -> None:
        self.config = config
        self.now = now
        self._sleep = sleep
        self.deliver = deliver
        self.faults = FaultPlan()
        self.app = FaultInjector(self._asgi)
        self.signer = WebhookSigner(config.webhook_private_key_pem)
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Empty the account (back to the configured seeds), the events and the counters."""
        with self._lock:
            c = self.config
            self.account = Account()
            at = int(self.now())
            for group_id, name in c.asm_groups.items():
                self.account.seed_group(group_id, name)
            for email in c.global_unsubscribes:
                self.account.unsubscribe_globally(email, at)
            for email in c.bounces:
                self.account.add_bounce(email, at, "550 5.1.1 mailbox unavailable", "5.1.1")
            for email in c.spam_reports:
                self.account.add_spam_report(email, at, "203.0.113.1")
            for email in c.invalid_emails:
                self.account.add_invalid(email, at)
            self.stats = SendGridSandboxStats()
            self.webhook_url = c.webhook_url
            self.pending_events: list[dict[str, Any]] = []
            self._retrying = False
            self._window = (-1, 0)  # (second, requests in it)
            self._random = random.Random(c.seed)
            self.events = EventFactory(c.event_rates, random.Random(c.seed + 1))

    # -- conveniences for tests -------------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.as_json() for m in self.account.messages]

    @property
    def public_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo, no PEM armour (what SendGrid's API returns)."""
        return self.signer.public_key_b64

    def add_template(self, template_id: str, subject: str, html: str, text: str) -> None:
        """Register a dynamic template (d-...) whose Handlebars the sandbox fills per recipient."""
        with self._lock:
            self.account.templates[template_id] = {"subject": subject, "html": html, "text": text}

    def engage(self, email: str, kind: str, sg_message_id: str | None = None) -> dict[str, Any]:
        """Queue a recipient's open, click, spam report or (group) unsubscribe by hand."""
        if kind not in ENGAGEMENT_KINDS:
            raise ValueError(f"unknown engagement event {kind!r}")
        with self._lock:
            message = self.account.latest_message(email, sg_message_id)
            if message is None:
                raise LookupError("no message to that recipient")
            if kind.startswith("group_") and message.asm_group_id is None:
                raise ValueError("the message has no unsubscribe group")
            event = self.events.engagement(message, kind, int(self.now()))
            self.account.apply_event(event)
            self.pending_events.append(event)
            return event

    def flush_events(self) -> int:
        """Post pending events to the webhook URL in signed batches; how many were accepted.

        A non-2xx answer keeps the batch for the next flush (counted in webhook_failures, and in
        webhook_retries when it is posted again), as SendGrid retries failed posts (§3.2).
        """
        sent = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    url, batch = (
                        self.webhook_url,
                        self.pending_events[: self.config.event_batch_max],
                    )
                    if url is None or not batch:
                        return sent
                    if self._retrying:
                        self.stats.webhook_retries += 1
                    body = serialise_events(batch)
                    headers = self.signer.headers(str(int(self.now())), body)
                status = self.deliver(url, headers, body)
                with self._lock:
                    self.stats.webhook_posts += 1
                    if not 200 <= status < 300:
                        self.stats.webhook_failures += 1
                        self._retrying = True
                        return sent
                    del self.pending_events[: len(batch)]
                    self._retrying = False
                    self.stats.events_sent += len(batch)
                    sent += len(batch)

    # -- ASGI -------------------------------------------------------------------------------------
    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        path, method = request.url.path, request.method
        with self._lock:
            label = f"{method} {path}"
            self.stats.requests[label] = self.stats.requests.get(label, 0) + 1
        drop = False
        if path == f"{ADMIN_PREFIX}/events/flush" and method == "POST":
            sent = await anyio.to_thread.run_sync(self.flush_events)
            reply = Reply(200, {"sent": sent, "pending": len(self.pending_events)})
        elif path.startswith(ADMIN_PREFIX):
            reply = self._admin(method, path, raw)
        else:
            await inject_latency(self.faults, self._sleep)
            reply, drop = self._api(request, raw)
        response = make_response(reply.status, reply.body, reply.headers)
        if drop:
            with self._lock:
                self.stats.dropped += 1
        await respond(scope, receive, send, response, drop=drop)

    def _api(self, request: Request, raw: bytes) -> tuple[Reply, bool]:
        with self._lock:
            now = self.now()
            admitted, limit_headers = self._admit(now)
            header = request.headers.get("authorization", "")
            key = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if key not in self.config.api_keys:
                self.stats.unauthorized += 1
                return Reply(401, _errors("authorization required"), limit_headers), False
            fault = self.faults.draw()
            if fault == "storm" or not admitted:
                self.stats.rate_limited += 1
                return Reply(
                    429,
                    {"errors": [{"field": None, "message": "too many requests"}]},
                    limit_headers,
                ), False
            if fault == "error":
                self.stats.errors_sent += 1
                status = self._random.choice((500, 503))
                message = "internal server error" if status == 500 else "service unavailable"
                return Reply(status, _errors(message), limit_headers), False
            if len(raw) > self.config.max_body_bytes:
                return Reply(413, _errors("content too large"), limit_headers), False
            reply = self._dispatch(request, raw, now)
            reply.headers.update(limit_headers)
            return reply, fault == "drop"

    def _admit(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one call in the current one-second window: admitted?, and the limit headers."""
        second, used = self._window
        if int(now) != second:
            second, used = int(now), 0
        limit = self.config.requests_per_second
        admitted = used < limit
        self._window = (second, used + 1 if admitted else used)
        return admitted, {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - self._window[1]),
            "X-RateLimit-Reset": str(second + 1),
        }

    def _dispatch(self, request: Request, raw: bytes, now: float) -> Reply:
        method, path = request.method, request.url.path
        allowed = False
        for verb, pattern, route in ROUTES:
            match = pattern.fullmatch(path)
            if match and verb == method:
                name = route
                break
            allowed = allowed or match is not None
        else:
            return (
                Reply(405, _errors("method not allowed"))
                if allowed
                else Reply(404, _errors("not found"))
            )
        body: Any = None
        if method == "POST":
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                self.stats.bad_requests += 1
                return Reply(400, _errors("Bad Request", help=None))
        params = match.groupdict()
        if "group" in params and int(params["group"]) not in self.account.groups:
            return Reply(404, _errors("not found"))
        query = dict(request.query_params)
        if name in suppressions_api.HANDLERS:
            status, out = suppressions_api.HANDLERS[name](self.account, params, body, query, now)
            return Reply(status, out)
        handler: Callable[..., Reply] = getattr(self, f"_h_{name}")
        return handler(params, body, query, now)

    # -- handlers (under the lock) ----------------------------------------------------------------
    def _h_mail_send(self, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Reply:
        problems = mail.mail_send_problems(
            body, now=now, group_exists=self.account.groups.__contains__
        )
        if not problems and isinstance(body, dict):
            problems = mail.dynamic_problems(body, self.account.templates.__contains__)
        if problems:
            self.stats.bad_requests += 1
            errors = [{"message": m, "field": f, "help": None} for f, m in problems]
            return Reply(400, {"errors": errors})
        x_message_id = "".join(self._random.choice(MESSAGE_ID_ALPHABET) for _ in range(22))
        stored = self.account.accept(body, x_message_id, now)
        self.stats.accepted_requests += 1
        self.stats.accepted_messages += len(stored)
        for message in stored:
            self._queue_lifecycle(message, now)
        return Reply(202, None, {"X-Message-Id": x_message_id})

    def _queue_lifecycle(self, message: StoredMessage, now: float) -> None:
        if message.dropped_reason is not None:
            self.stats.dropped_recipients += 1
        for event in self.events.lifecycle(message, now):
            self.account.apply_event(event)
            self.pending_events.append(event)

    def _h_signed_key(self, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Reply:
        if p["id"] != self.config.webhook_id:
            return Reply(404, {"errors": [{"message": "not found"}]})
        return Reply(200, {"id": self.config.webhook_id, "public_key": self.public_key})

    # -- /_sandbox admin ----------------------------------------------------------------------------
    def _admin(self, method: str, path: str, raw: bytes) -> Reply:
        rest = path[len(ADMIN_PREFIX) :]
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return Reply(400, {"detail": "invalid JSON"})
        if method == "GET" and rest == "/messages":
            return Reply(200, {"results": self.messages})
        if method == "GET" and rest == "/events":
            with self._lock:
                return Reply(200, {"results": list(self.pending_events)})
        if method == "GET" and rest == "/public_key":
            return Reply(200, {"id": self.config.webhook_id, "public_key": self.public_key})
        if method == "GET" and rest == "/stats":
            with self._lock:
                return Reply(200, self.stats.as_json())
        if method == "POST" and rest == "/webhook":
            url = body.get("url") if isinstance(body, dict) else None
            if url is not None and not isinstance(url, str):
                return Reply(422, {"detail": "url must be a string or null"})
            with self._lock:
                self.webhook_url = url
            return Reply(200, {"url": url})
        if method == "POST" and rest == "/events/engage":
            if not isinstance(body, dict) or not isinstance(body.get("email"), str):
                return Reply(422, {"detail": "email and event are required"})
            try:
                event = self.engage(
                    body["email"], str(body.get("event")), body.get("sg_message_id")
                )
            except LookupError:
                return Reply(404, {"detail": "no message to that recipient"})
            except ValueError as exc:
                return Reply(422, {"detail": str(exc)})
            return Reply(200, {"event": event})
        if method == "POST" and rest == "/templates":
            # A dynamic template, as a designer would make one in SendGrid's editor.
            try:
                spec = json.loads(raw or b"{}")
                template_id = str(spec["id"])
            except (ValueError, KeyError, TypeError):
                return Reply(422, {"detail": "expected {id, subject, html, text}"})
            if not re.fullmatch(r"d-[0-9a-f]{32}", template_id):
                return Reply(422, {"detail": "a dynamic template id is d- and 32 hex digits"})
            self.add_template(
                template_id, spec.get("subject", ""), spec.get("html", ""), spec.get("text", "")
            )
            return Reply(201, {"id": template_id})
        if method == "POST" and rest == "/faults":
            return Reply(*set_faults(self.faults, raw))
        if method == "POST" and rest == "/reset":
            self.reset()
            return Reply(200, {"reset": True})
        return Reply(404, {"detail": "unknown admin path"})


def create_sendgrid_sandbox(
    config: SendGridSandboxConfig | None = None,
    *,
    now: Callable[[], float] = time.time,
    sleep: Sleep = asyncio.sleep,
    deliver: Deliver = default_deliver,
) -> SendGridSandbox:
    """A fresh sandbox account: `.app` to serve; `.messages`, `.faults`, `.stats` to inspect."""
    return SendGridSandbox(config or SendGridSandboxConfig(), now=now, sleep=sleep, deliver=deliver)


def serve_sendgrid_sandbox(
    host: str, port: int, config: SendGridSandboxConfig | None = None
) -> None:
    """Run the sandbox under uvicorn until interrupted (for `telecrm sandbox sendgrid`)."""
    serve_app(create_sendgrid_sandbox(config).app, host, port)
