"""The SendGrid sandbox's account: unsubscribe groups, suppression lists and accepted messages.

Shapes follow the official suppressions spec (specs/sendgrid/tsg_suppressions_v3.json,
messaging.md §2). Addresses are keyed case-insensitively, as SendGrid matches them. A message is
stored once per recipient, rendered with that personalization's substitutions (messaging.md §1.2),
together with why it was dropped when the recipient is on a suppression list (§2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telecrm.sandbox.sendgrid_mail import RECIPIENT_KINDS, render, render_dynamic

GROUP_NAME_MAX = 30  # SuppressionGroupRequestBaseProps.name maxLength (tsg_suppressions_v3.json)
DROP_UNSUBSCRIBED = "Unsubscribed Address"  # dropped reasons (messaging.md §2.3, §3.2)
DROP_BOUNCED = "Bounced Address"
DROP_SPAM = "Spam Reporting Address"
DROP_INVALID = "Invalid"


def errors_body(message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """SendGrid's error body (ErrorResponse in the specs): one error, a message and a field."""
    return {"errors": [{"message": message, "field": field, **extra}]}


@dataclass(slots=True)
class StoredMessage:
    """One recipient of one accepted mail send, as it would reach the inbox."""

    x_message_id: str
    sg_message_id: str
    smtp_id: str
    email: str
    name: str | None
    kind: str  # "to", "cc" or "bcc"
    subject: str
    html: str
    text: str
    custom_args: dict[str, str]
    categories: list[str]
    asm_group_id: int | None
    send_at: int | None
    accepted_at: float
    dropped_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "x_message_id": self.x_message_id, "sg_message_id": self.sg_message_id,
            "smtp_id": self.smtp_id, "email": self.email, "name": self.name, "kind": self.kind,
            "subject": self.subject, "html": self.html, "text": self.text,
            "custom_args": dict(self.custom_args), "categories": list(self.categories),
            "asm_group_id": self.asm_group_id, "send_at": self.send_at,
            "accepted_at": self.accepted_at, "dropped_reason": self.dropped_reason,
        }  # fmt: skip


@dataclass(slots=True)
class Account:
    """Everything one sandbox SendGrid account holds."""

    groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    group_suppressions: dict[int, dict[str, int]] = field(default_factory=dict)  # email -> created
    global_unsubscribes: dict[str, dict[str, Any]] = field(default_factory=dict)
    bounces: dict[str, dict[str, Any]] = field(default_factory=dict)
    spam_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid_emails: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[StoredMessage] = field(default_factory=list)
    next_group_id: int = 1
    # Dynamic templates by id: {"subject", "html", "text"} Handlebars sources.
    templates: dict[str, dict[str, str]] = field(default_factory=dict)

    # -- unsubscribe groups -----------------------------------------------------------------------
    def create_group(self, name: str, description: str, is_default: bool = False) -> dict[str, Any]:
        group_id = self.next_group_id
        self.next_group_id += 1
        if is_default:
            for group in self.groups.values():
                group["is_default"] = False
        self.groups[group_id] = {
            "id": group_id, "name": name, "description": description, "is_default": is_default,
        }  # fmt: skip
        self.group_suppressions[group_id] = {}
        return dict(self.groups[group_id])

    def seed_group(self, group_id: int, name: str) -> None:
        self.groups[group_id] = {
            "id": group_id,
            "name": name,
            "description": name,
            "is_default": False,
        }
        self.group_suppressions.setdefault(group_id, {})
        self.next_group_id = max(self.next_group_id, group_id + 1)

    def group_json(self, group_id: int) -> dict[str, Any]:
        return {**self.groups[group_id], "unsubscribes": len(self.group_suppressions[group_id])}

    def suppress_in_group(self, group_id: int, email: str, at: int) -> None:
        self.group_suppressions[group_id].setdefault(email.lower(), at)

    def unsuppress_in_group(self, group_id: int, email: str) -> bool:
        return self.group_suppressions[group_id].pop(email.lower(), None) is not None

    # -- suppression lists --------------------------------------------------------------------------
    def unsubscribe_globally(self, email: str, at: int) -> None:
        self.global_unsubscribes.setdefault(email.lower(), {"created": at, "email": email})

    def add_bounce(self, email: str, at: int, reason: str, status: str) -> None:
        self.bounces[email.lower()] = {
            "created": at,
            "email": email,
            "reason": reason,
            "status": status,
        }

    def add_spam_report(self, email: str, at: int, ip: str) -> None:
        self.spam_reports.setdefault(email.lower(), {"created": at, "email": email, "ip": ip})

    def add_invalid(self, email: str, at: int) -> None:
        self.invalid_emails.setdefault(
            email.lower(), {"created": at, "email": email, "reason": "Mail domain mentioned in email address is unknown"}
        )  # fmt: skip

    def drop_reason(self, email: str, group_id: int | None) -> str | None:
        """Why SendGrid would drop mail to this address instead of delivering it (§2.3)."""
        key = email.lower()
        if key in self.global_unsubscribes:
            return DROP_UNSUBSCRIBED
        if group_id is not None and key in self.group_suppressions.get(group_id, {}):
            return DROP_UNSUBSCRIBED
        if key in self.bounces:
            return DROP_BOUNCED
        if key in self.spam_reports:
            return DROP_SPAM
        if key in self.invalid_emails:
            return DROP_INVALID
        return None

    # -- mail send ------------------------------------------------------------------------------------
    def accept(self, body: dict[str, Any], x_message_id: str, now: float) -> list[StoredMessage]:
        """Store a validated mail-send body once per recipient; the stored messages, in order."""
        content = {c["type"]: c["value"] for c in body.get("content") or []}
        categories = list(body.get("categories") or [])
        asm = body.get("asm")
        group_id = asm["group_id"] if isinstance(asm, dict) else None
        message_args = dict(body.get("custom_args") or {})
        stored: list[StoredMessage] = []
        n = 0
        template = self.templates.get(str(body.get("template_id")))
        for p in body["personalizations"]:
            subs = p.get("substitutions") or {}
            if template is not None:
                data = p.get("dynamic_template_data") or {}
                subject = render_dynamic(template.get("subject", ""), data, html=False)
                html = render_dynamic(template.get("html", ""), data, html=True)
                text = render_dynamic(template.get("text", ""), data, html=False)
            else:
                subject = render(p.get("subject") or body.get("subject") or "", subs)
                html = render(content.get("text/html", ""), subs)
                text = render(content.get("text/plain", ""), subs)
            args = {**message_args, **(p.get("custom_args") or {})}
            send_at = p.get("send_at", body.get("send_at"))
            for kind in RECIPIENT_KINDS:
                for person in p.get(kind) or []:
                    message = StoredMessage(
                        x_message_id=x_message_id,
                        sg_message_id=f"{x_message_id}.filter0001.{n}.0",
                        smtp_id=f"<{x_message_id}@ismtpd0001p1las1.sendgrid.net>",
                        email=person["email"], name=person.get("name"), kind=kind,
                        subject=subject, html=html, text=text, custom_args=args,
                        categories=categories, asm_group_id=group_id, send_at=send_at,
                        accepted_at=now, dropped_reason=self.drop_reason(person["email"], group_id),
                    )  # fmt: skip
                    n += 1
                    stored.append(message)
        self.messages.extend(stored)
        return stored

    def latest_message(self, email: str, sg_message_id: str | None = None) -> StoredMessage | None:
        for message in reversed(self.messages):
            if sg_message_id is not None:
                if message.sg_message_id == sg_message_id:
                    return message
            elif message.email.lower() == email.lower():
                return message
        return None

    def apply_event(self, event: dict[str, Any]) -> None:
        """What an event changes in the account: bounces, spam reports and unsubscribes stick."""
        email, at, kind = event["email"], int(event["timestamp"]), event["event"]
        if kind == "bounce" and event.get("type") == "bounce":
            self.add_bounce(email, at, event.get("reason", ""), event.get("status", ""))
        elif kind == "spamreport":
            self.add_spam_report(email, at, event.get("ip", "127.0.0.1"))
        elif kind == "unsubscribe":
            self.unsubscribe_globally(email, at)
        elif kind == "group_unsubscribe" and event.get("asm_group_id") in self.groups:
            self.suppress_in_group(int(event["asm_group_id"]), email, at)
        elif kind == "group_resubscribe" and event.get("asm_group_id") in self.groups:
            self.unsuppress_in_group(int(event["asm_group_id"]), email)
