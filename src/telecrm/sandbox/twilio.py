"""A Twilio Programmable Messaging stand-in: Messages API, status callbacks, inbound SMS, STOP.

`TwilioSandbox` is an ASGI app (wrapped in FaultInjector) with its in-memory account, fault plan
and counters. It speaks the Messages API of research messaging.md §4 (paths, form parameters,
the Message resource, statuses), refuses like §5 (legacy error body, 20003/21211/21602/21610/
21617/20429), signs every webhook like §6.1, and handles keywords like §7.1. Messages move on
when `flush_callbacks()` runs: each reaches a seeded fate and earns its status callbacks, and
simulated recipients may answer. Time is injected (`now`, `sleep`); webhooks go through an
injected `deliver`. Everything under `/_sandbox` is ours, not Twilio's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from telecrm.messaging.segments import count_segments
from telecrm.messaging.twilio_webhook import classify_keyword, twilio_signature
from telecrm.sandbox import twilio_store as ts
from telecrm.sandbox.faults import (
    ADMIN_PREFIX,
    FaultInjector,
    FaultPlan,
    inject_latency,
    respond,
    serve_app,
    set_faults,
)
from telecrm.sandbox.twilio_store import StoredMessage, TwilioSandboxConfig, TwilioSandboxStats

Sleep = Callable[[float], Awaitable[None] | None]
Deliver = Callable[[str, dict[str, str], bytes], int]
"""POST `body` to `url` with `headers`; the HTTP status (an exception counts as a failure)."""

_ACCOUNT = r"/2010-04-01/Accounts/(?P<account>[^/]+)"
MESSAGES = re.compile(_ACCOUNT + r"/Messages\.json")
MESSAGE = re.compile(_ACCOUNT + r"/Messages/(?P<sid>[^/]+)\.json")


def post_form(url: str, headers: dict[str, str], body: bytes) -> int:
    """The default `deliver`: a real HTTP POST."""
    return httpx.post(url, headers=headers, content=body, timeout=10.0).status_code


class TwilioSandbox:
    """One sandbox Twilio account with one Messaging Service. `app` is what uvicorn serves."""

    def __init__(
        self,
        config: TwilioSandboxConfig | None = None,
        *,
        now: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        deliver: Deliver = post_form,
    ) -> None:
        self.config = config or TwilioSandboxConfig()
        self.now = now
        self._sleep = sleep
        self._deliver = deliver
        self.faults = FaultPlan()
        self.app = FaultInjector(self._asgi)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Empty the account, the outbox, the rate window and the counters."""
        with self._lock:
            self.account = ts.Account(self.config)
            self.stats = TwilioSandboxStats()
            self._hits: deque[float] = deque()

    # -- conveniences for tests -----------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [ts.message_json(m) for m in self.account.messages.values()]

    @property
    def auto_replies(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.account.auto_replies)

    @property
    def pending_callbacks(self) -> int:
        with self._lock:
            return len(self.account.outbox)

    def is_opted_out(self, phone: str) -> bool:
        with self._lock:
            return self.account.is_opted_out(phone)

    def _at(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    # -- inbound SMS ------------------------------------------------------------------------------
    def inbound(self, from_phone: str, body: str, to: str | None = None) -> dict[str, Any]:
        """A handset texts the service: keywords first (§7.1), then the inbound webhook."""
        sid, keyword, pending = self._receive(from_phone, body, to)
        status = self._send_webhooks([pending])[0] if pending else None
        return {"sid": sid, "keyword": keyword, "webhook_status": status}

    def _receive(
        self, from_phone: str, body: str, to: str | None
    ) -> tuple[str, str | None, ts.Pending | None]:
        """Record an inbound SMS and its keyword effect; the webhook to send, if one is set."""
        with self._lock:
            acct = self.account
            to = to or self.config.sender_pool[0]
            if not ts.valid_phone(from_phone):
                raise ValueError("from must be an E.164 phone number")
            if to not in self.config.sender_pool:
                raise ValueError("to must be one of the service's numbers")
            keyword = classify_keyword(body)
            key = (self.config.messaging_service_sid, from_phone)
            if keyword == "stop" and key not in acct.opted_out:
                acct.opted_out.add(key)
                self.stats.opt_outs += 1
            elif keyword == "start" and key in acct.opted_out:
                acct.opted_out.discard(key)
                self.stats.opt_ins += 1
            if keyword is not None:
                reply = {"to": from_phone, "from": to, "keyword": keyword}
                acct.auto_replies.append(reply | {"body": ts.AUTO_REPLIES[keyword]})
            at = self._at()
            sid = acct.new_sid()
            acct.messages[sid] = StoredMessage(
                sid=sid, account_sid=self.config.account_sid, to=to, from_=from_phone, body=body,
                service_sid=self.config.messaging_service_sid, status="received",
                direction="inbound", created=at, updated=at, sent=at,
                num_segments=str(count_segments(body).segments),
            )  # fmt: skip
            if not acct.inbound_url:
                return sid, keyword, None
            params = acct.inbound_params(sid, from_phone, to, body, keyword)
            return sid, keyword, ts.Pending("inbound", acct.inbound_url, params, str(uuid.uuid4()))

    # -- webhooks ---------------------------------------------------------------------------------
    def flush_callbacks(self) -> dict[str, int]:
        """Move accepted messages to their fate, then deliver every pending webhook once.

        Webhooks answered with a non-2xx (or not at all) stay pending for the next flush.
        """
        with self._lock:
            acct = self.account
            at = self._at()
            replies: list[tuple[str, str, str]] = []
            for sid in acct.in_flight:
                message = acct.messages[sid]
                forms = acct.advance(message, at)
                if message.status_callback:
                    acct.outbox += [
                        ts.Pending("status", message.status_callback, form, str(uuid.uuid4()))
                        for form in forms
                    ]
                if message.status == "delivered" and message.from_:
                    answer = self._simulated_answer(message)
                    if answer is not None:
                        replies.append((message.to, answer, message.from_))
            acct.in_flight.clear()
            for from_phone, body, to in replies:
                _, _, pending = self._receive(from_phone, body, to)
                if pending is not None:
                    acct.outbox.append(pending)
            batch, acct.outbox = acct.outbox, []
            if self.config.callback_order == "shuffled":
                acct.rng.shuffle(batch)
        statuses = self._send_webhooks(batch, requeue=False)
        failed = [p for p, status in zip(batch, statuses, strict=True) if not 200 <= status < 300]
        with self._lock:
            self.account.outbox = failed + self.account.outbox
            return {
                "sent": len(batch) - len(failed),
                "failed": len(failed),
                "pending": len(self.account.outbox),
            }

    def _simulated_answer(self, message: StoredMessage) -> str | None:
        rng = self.account.rng
        if rng.random() < self.config.stop_rate:
            return "STOP"
        survey = "0-10" in message.body or "0 to 10" in message.body
        if survey and rng.random() < self.config.reply_rate:
            return str(rng.randint(0, 10))
        return None

    def _send_webhooks(self, batch: list[ts.Pending], *, requeue: bool = True) -> list[int]:
        """Sign and POST each webhook outside the lock; the HTTP status of each (0 = no answer)."""
        statuses = []
        for pending in batch:
            signature = twilio_signature(self.config.auth_token, pending.url, pending.params)
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": pending.idempotency_token,
                "User-Agent": "TwilioProxy/1.1",
            }
            try:
                status = self._deliver(pending.url, headers, urlencode(pending.params).encode())
            except Exception:  # a refused or dropped connection is a failed attempt
                status = 0
            ok = 200 <= status < 300
            with self._lock:
                pending.attempts += 1
                inbound = pending.kind == "inbound"
                if inbound:
                    self.stats.inbound_sent += ok
                    self.stats.inbound_failures += not ok
                else:
                    self.stats.callbacks_sent += ok
                    self.stats.callback_failures += not ok
                if requeue and not ok:
                    self.account.outbox.append(pending)
            statuses.append(status)
        return statuses

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
        drop = False
        if path.startswith(ADMIN_PREFIX):
            self._count(f"{method} {path}")
            status, body = await run_in_threadpool(self._admin, method, path, raw)
            headers: dict[str, str] = {}
        else:
            await inject_latency(self.faults, self._sleep)
            status, body, headers, drop = self._api(request, raw)
        headers["Twilio-Request-Id"] = "RQ" + uuid.uuid4().hex
        response = JSONResponse(body, status_code=status, headers=headers)
        if drop:
            with self._lock:
                self.stats.dropped += 1
        await respond(scope, receive, send, response, drop=drop)

    def _count(self, label: str) -> None:
        with self._lock:
            self.stats.requests[label] = self.stats.requests.get(label, 0) + 1

    def _api(self, request: Request, raw: bytes) -> tuple[int, Any, dict[str, str], bool]:
        path, method = request.url.path, request.method
        many, one = MESSAGES.fullmatch(path), MESSAGE.fullmatch(path)
        template = "/Messages.json" if many else "/Messages/{Sid}.json" if one else path
        self._count(
            f"{method} /2010-04-01/Accounts/{{AccountSid}}{template}"
            if many or one
            else f"{method} {path}"
        )
        with self._lock:
            if not self._authenticated(request.headers.get("authorization", "")):
                self.stats.unauthorized += 1
                return (
                    *ts.error_body(20003),
                    {"WWW-Authenticate": 'Basic realm="Twilio API"'},
                    False,
                )
            match = many or one
            if match is None or match["account"] != self.config.account_sid:
                return (*ts.error_body(20404), {}, False)
            fault = self.faults.draw()
            if fault == "storm" or not self._admit():
                self.stats.rate_limited += 1
                return (*ts.error_body(20429), {"Retry-After": "1"}, False)
            if fault == "error":
                self.stats.errors_sent += 1
                return (*ts.error_body(20500), {}, False)
            if many and method == "POST":
                decoded = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
                form = {name: values[0] for name, values in decoded.items()}
                status, body = ts.create_message(self.account, form, self._at())
                if status == 201:
                    self.stats.created += 1
                else:
                    self.stats.rejected += 1
            elif many and method == "GET":
                status, body = ts.list_page(self.account, request.query_params)
            elif one and method == "GET":
                found = self.account.messages.get(one["sid"])
                status, body = (200, ts.message_json(found)) if found else ts.error_body(20404)
            else:
                status, body = ts.error_body(20004)
            return status, body, {}, fault == "drop"

    def _authenticated(self, header: str) -> bool:
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        tokens = {self.config.auth_token, self.config.secondary_auth_token} - {None}
        return user == self.config.account_sid and password in tokens

    def _admit(self) -> bool:
        now = self.now()
        while self._hits and self._hits[0] <= now - self.config.window_seconds:
            self._hits.popleft()
        if len(self._hits) >= self.config.requests_per_second:
            return False
        self._hits.append(now)
        return True

    # -- /_sandbox admin --------------------------------------------------------------------------
    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        rest = path[len(ADMIN_PREFIX) :]
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            return 422, {"detail": "body must be JSON"}
        if method == "GET" and rest == "/messages":
            with self._lock:
                return 200, {
                    "messages": self.messages, "auto_replies": self.auto_replies,
                    "opted_out": sorted(phone for _, phone in self.account.opted_out),
                    "pending_callbacks": len(self.account.outbox),
                }  # fmt: skip
        if method == "GET" and rest == "/stats":
            with self._lock:
                return 200, self.stats.as_json()
        if method == "GET" and rest == "/faults":
            return 200, self.faults.faults.model_dump()
        if method == "POST" and rest == "/faults":
            return set_faults(self.faults, raw)
        if method == "POST" and rest == "/reset":
            self.reset()
            return 200, {"reset": True}
        if method == "POST" and rest == "/webhook":
            with self._lock:
                if "status_url" in payload:
                    self.account.status_url = payload["status_url"]
                if "inbound_url" in payload:
                    self.account.inbound_url = payload["inbound_url"]
                return 200, {
                    "status_url": self.account.status_url,
                    "inbound_url": self.account.inbound_url,
                }
        if method == "POST" and rest == "/inbound":
            if not isinstance(payload.get("from"), str) or not isinstance(payload.get("body"), str):
                return 422, {"detail": "from and body are required strings"}
            try:
                return 200, self.inbound(payload["from"], payload["body"], payload.get("to"))
            except ValueError as exc:
                return 422, {"detail": str(exc)}
        if method == "POST" and rest == "/callbacks/flush":
            return 200, self.flush_callbacks()
        return 404, {"detail": "unknown admin path"}


def serve_twilio_sandbox(host: str, port: int, config: TwilioSandboxConfig | None = None) -> None:
    """Run the sandbox under uvicorn until interrupted (for `telecrm sandbox twilio`)."""
    serve_app(TwilioSandbox(config).app, host, port)
