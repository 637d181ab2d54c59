"""The SendGrid email connector: v3 mail send in batches, ASM group provisioning, global unsubscribes.

A thin client of SendGrid's v3 API (messaging.md §1-2). One mail send carries up to 1000
personalizations, one per message: the body, subject and text travel as that personalization's
`substitutions` into a shared template (`%telecrm_html%`, ...), and our message id travels in its
`custom_args`, which come back on every Event Webhook event (§3.2). `asm` and `categories` are
message-level in SendGrid, so a batch is split into one request per (category, unsubscribe
group); an address may appear only once per request, so repeats go into later requests; a message
whose substitutions would pass 10,000 bytes goes alone, with its content inline.

Errors map to connectors.base: 401/403 AuthFailed, 429 RateLimited (until X-RateLimit-Reset),
5xx / timeouts / cut connections TransientFailure, 413 splits the batch in halves, a 400 naming
`personalizations.N` rejects message N and resends the rest once. A whole-call failure after
some requests of the batch were accepted does not raise (that would resend accepted mail): the
messages not yet sent come back as "retry". A cut connection may hide an accepted send; SendGrid
has no idempotency key, so a resend can duplicate it. No address, subject or body ever reaches an
exception or a result detail: only HTTP statuses and SendGrid's field names.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from telecrm.connectors.base import (
    AuthFailed,
    ConfigurationError,
    ConnectorError,
    RateLimited,
    TransientFailure,
)
from telecrm.connectors.messaging_base import EmailMessage, SendResult, SendStats

SENDGRID_API_BASE = "https://api.sendgrid.com"  # messaging.md §1.1
SENDGRID_BATCH_MAX = 1000  # personalizations (and recipients) per mail send (messaging.md §1.2)
SUBSTITUTIONS_MAX_BYTES = 10_000  # per personalization (messaging.md §1.2)
ASM_GROUP_NAME_MAX = 30  # SuppressionGroupRequestBaseProps.name maxLength (tsg_suppressions_v3)
MAIL_SEND_PATH = "/v3/mail/send"
SUBJECT_TAG, TEXT_TAG, HTML_TAG = "%telecrm_subject%", "%telecrm_text%", "%telecrm_html%"
MESSAGE_ID_ARG = "telecrm_message_id"  # custom arg read back by messaging/sendgrid_webhook.py
_PERSONALIZATION_FIELD = re.compile(r"personalizations\.(\d+)(?:\.|$)")
_SAFE_FIELD = re.compile(r"[A-Za-z0-9_.\-]{1,100}")

__all__ = ["SENDGRID_BATCH_MAX", "SendGridConfig", "SendGridConnector", "plan_requests"]


class SendGridConfig(BaseModel):
    """One SendGrid account and the sender telecrm mails from."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = SENDGRID_API_BASE
    api_key: SecretStr
    from_email: str
    from_name: str | None = None
    unsubscribe_groups: dict[str, int] = {}  # purpose (e.g. "appointments") -> asm group id
    timeout_seconds: float = 30.0


def _substitutions(m: EmailMessage) -> dict[str, str]:
    return {SUBJECT_TAG: m.subject, TEXT_TAG: m.text, HTML_TAG: m.html}


def _needs_inline(m: EmailMessage) -> bool:
    """Would this message's substitutions pass SendGrid's 10,000 bytes? (JSON size: an upper bound.)"""
    if m.template_id:
        return False  # a hosted template carries the content; no substitutions
    size = len(json.dumps(_substitutions(m), ensure_ascii=False).encode())
    return size > SUBSTITUTIONS_MAX_BYTES


def plan_requests(
    messages: Sequence[EmailMessage], batch_max: int = SENDGRID_BATCH_MAX
) -> list[list[EmailMessage]]:
    """Split a batch into mail-send requests: one per (category, unsubscribe group), an address at
    most once per request, at most `batch_max` messages each, an oversized message alone. Messages
    of a hosted dynamic template go together (template_id is per request)."""
    groups: dict[tuple[str, int | None, str | None], list[EmailMessage]] = {}
    for m in messages:
        groups.setdefault((m.category, m.unsubscribe_group, m.template_id), []).append(m)
    planned: list[list[EmailMessage]] = []
    for group in groups.values():
        rounds: list[tuple[set[str], list[EmailMessage]]] = []
        for m in group:
            if _needs_inline(m):
                planned.append([m])
                continue
            address = m.to_email.lower()
            for seen, members in rounds:
                if address not in seen and len(members) < batch_max:
                    seen.add(address)
                    members.append(m)
                    break
            else:
                rounds.append(({address}, [m]))
        planned.extend(members for _, members in rounds)
    return planned


class SendGridConnector:
    """One SendGrid account through an injected httpx.Client (EmailProvider)."""

    name = "sendgrid"
    batch_max = SENDGRID_BATCH_MAX

    def __init__(
        self,
        config: SendGridConfig,
        client: httpx.Client | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats = SendStats()
        self._client = client or httpx.Client(timeout=config.timeout_seconds)
        self._now = now
        self._base = config.base_url.rstrip("/")

    def close(self) -> None:
        self._client.close()

    # -- mail send ------------------------------------------------------------------------------
    def send_emails(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """One result per message. More than `batch_max` messages simply take more requests."""
        results: list[SendResult] = []
        planned = plan_requests(messages, self.batch_max)
        for i, request in enumerate(planned):
            try:
                results += self._send_request(request, retries_left=1)
            except ConnectorError as exc:
                if not any(r.outcome == "sent" for r in results):
                    raise
                detail = f"not sent: {exc.code}"
                results += [
                    SendResult(m.message_id, "retry", code=exc.code, detail=detail)
                    for later in planned[i:]
                    for m in later
                ]
                break
        return results

    def _send_request(self, messages: list[EmailMessage], *, retries_left: int) -> list[SendResult]:
        response = self._call("POST", MAIL_SEND_PATH, self._mail_body(messages))
        if response.status_code == 202:
            provider_id = response.headers.get("X-Message-Id")
            return [SendResult(m.message_id, "sent", provider_id=provider_id) for m in messages]
        if response.status_code == 413:
            if len(messages) == 1:
                return [SendResult(messages[0].message_id, "rejected", code="413", detail="content too large")]  # fmt: skip
            self.stats.retried += 1
            half = len(messages) // 2
            first = self._send_request(messages[:half], retries_left=retries_left)
            return first + self._send_request(messages[half:], retries_left=retries_left)
        if response.status_code != 400:
            self._raise_for(response)
        tied: dict[int, str] = {}
        untied: list[str] = []
        for field in _error_fields(response):
            match = _PERSONALIZATION_FIELD.match(field)
            if match and int(match.group(1)) < len(messages):
                tied.setdefault(int(match.group(1)), field)
            else:
                untied.append(field)
        if untied or not tied:
            detail = ",".join(sorted(set(untied))) or "invalid request"
            return [
                SendResult(m.message_id, "rejected", code="400", detail=detail) for m in messages
            ]
        results = [
            SendResult(messages[i].message_id, "rejected", code="400", detail=field)
            for i, field in sorted(tied.items())
        ]
        rest = [m for i, m in enumerate(messages) if i not in tied]
        if rest and retries_left > 0:
            self.stats.retried += 1
            return results + self._send_request(rest, retries_left=retries_left - 1)
        detail = "not retried: another message of the request was rejected"
        return results + [
            SendResult(m.message_id, "retry", code="400", detail=detail) for m in rest
        ]

    def _mail_body(self, messages: list[EmailMessage]) -> dict[str, Any]:
        first = messages[0]
        sender: dict[str, str] = {"email": self.config.from_email}
        if self.config.from_name:
            sender["name"] = self.config.from_name
        body: dict[str, Any] = {"personalizations": [], "from": sender}
        inline = len(messages) == 1 and _needs_inline(first)
        for m in messages:
            to: dict[str, str] = {"email": m.to_email}
            if m.to_name:
                to["name"] = m.to_name
            p: dict[str, Any] = {"to": [to]}
            if first.template_id:
                p["dynamic_template_data"] = dict(m.dynamic_data or {})
            else:
                p["subject"] = m.subject
            if not inline and not first.template_id:
                p["substitutions"] = _substitutions(m)
            p["custom_args"] = {MESSAGE_ID_ARG: m.message_id}
            body["personalizations"].append(p)
        if first.template_id:
            body["template_id"] = first.template_id
        elif inline:
            body["subject"] = first.subject or SUBJECT_TAG
            parts = [("text/plain", first.text), ("text/html", first.html)]
            body["content"] = [{"type": t, "value": v} for t, v in parts if v] or [
                {"type": "text/plain", "value": " "}
            ]
        else:
            body["subject"] = SUBJECT_TAG
            body["content"] = [
                {"type": "text/plain", "value": TEXT_TAG},
                {"type": "text/html", "value": HTML_TAG},
            ]
        if first.category:
            body["categories"] = [first.category]
        if first.unsubscribe_group is not None:
            body["asm"] = {"group_id": first.unsubscribe_group}
        return body

    # -- unsubscribe groups and global unsubscribes ---------------------------------------------
    def ensure_unsubscribe_groups(self, names: Iterable[str]) -> dict[str, int]:
        """The ASM group id for each name, creating the missing groups (GET, then POST)."""
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            if not name or len(name) > ASM_GROUP_NAME_MAX:
                raise ConfigurationError("asm_group_name", "group names need 1 to 30 characters")
        listed = self._call("GET", "/v3/asm/groups")
        self._raise_unless(listed, 200)
        existing = {str(g.get("name")): int(g["id"]) for g in _json(listed) or [] if "id" in g}
        out: dict[str, int] = {}
        for name in wanted:
            if name not in existing:
                body = {"name": name, "description": f"telecrm: {name}", "is_default": False}
                created = self._call("POST", "/v3/asm/groups", body)
                self._raise_unless(created, 201)
                existing[name] = int(_json(created)["id"])
            out[name] = existing[name]
        return out

    def add_global_unsubscribe(self, email: str) -> None:
        body = {"recipient_emails": [email]}
        self._raise_unless(self._call("POST", "/v3/asm/suppressions/global", body), 201)

    def is_globally_unsubscribed(self, email: str) -> bool:
        response = self._call("GET", f"/v3/asm/suppressions/global/{quote(email, safe='@')}")
        if response.status_code == 404:
            return False
        self._raise_unless(response, 200)
        found = _json(response)
        return isinstance(found, dict) and bool(found.get("recipient_email"))

    # -- the wire -------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}
        self.stats.calls += 1
        try:
            return self._client.request(method, self._base + path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise TransientFailure("timeout", f"SendGrid {method} timed out") from None
        except httpx.TransportError:
            raise TransientFailure(
                "connection_failed", f"SendGrid {method} got no answer"
            ) from None

    def _raise_unless(self, response: httpx.Response, status: int) -> None:
        if response.status_code != status:
            self._raise_for(response)

    def _raise_for(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise AuthFailed("unauthorized" if status == 401 else "forbidden", status=status)
        if status == 429:
            self.stats.rate_limited += 1
            reset = response.headers.get("X-RateLimit-Reset", "")
            wait = max(0.0, int(reset) - self._now()) if reset.isdigit() else 1.0
            raise RateLimited("rate_limited", "too many requests", status=429, retry_after=wait)
        if status >= 500:
            raise TransientFailure(f"http_{status}", "SendGrid server error", status=status)
        fields = ",".join(_error_fields(response)) or "no field"
        raise ConfigurationError(f"http_{status}", f"fields: {fields}", status=status)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_fields(response: httpx.Response) -> list[str]:
    """The field names of a SendGrid error body (never its messages); "body" for a null field."""
    body = _json(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    fields: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        field = error.get("field") if isinstance(error, dict) else None
        if isinstance(field, str) and _SAFE_FIELD.fullmatch(field) and field != "null":
            fields.append(field)
        else:
            fields.append("body")
    return fields
