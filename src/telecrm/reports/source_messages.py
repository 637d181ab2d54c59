"""Message templates and event triggers found in a source tree, by channel.

Email: SendGrid dynamic template ids (`templateId: 'd-…'`, `template_id = "d-…"`), inline
SendGrid sends with their own subject / content, and template files under an email folder.
SMS / WhatsApp: Twilio `messages.create(...)` with a `body` or a Content API `contentSid`.
Triggers: `emitter.emit('order.paid')`, `bus.publish("order.paid")`, `analytics.track(...)`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from telecrm.reports.source_tree import SourceFile, evidence

SENDGRID_TEMPLATE_ID = re.compile(
    r"""template_?id['"]?\s*[:=]\s*['"](d-[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})['"]""", re.I
)
INLINE_EMAIL_CALL = re.compile(r"\bsgMail\.send(?:Multiple)?\(|\bMail\(")
INLINE_EMAIL_CONTENT = re.compile(r"\b(?:subject|html|html_content|plain_text_content|text)\s*[:=]")
SUBJECT = re.compile(r"""\bsubject\s*[:=]\s*['"]([^'"\n]{1,80})['"]""")
TWILIO_CALL = re.compile(r"\bmessages\.create\(")
TWILIO_CONTENT_SID = re.compile(r"""content_?sid['"]?\s*[:=]\s*['"](HX[0-9a-fA-F]{8,})['"]""", re.I)
TWILIO_BODY = re.compile(r"""\bbody\s*[:=]\s*(?:['"`]([^'"`\n]{0,60}))?""")
TRIGGER_PATTERNS = (
    re.compile(r"""\.(?:emit|publish)\(\s*['"]([\w.:/\- ]{1,80})['"]"""),
    re.compile(r"""\.track\(\s*\{[^}]{0,400}?\bevent\s*:\s*['"]([^'"\n]{1,80})['"]""", re.S),
    re.compile(
        r"""\.track\(\s*(?:(?:[\w.\[\]]+|'[^'\n]*'|"[^"\n]*")\s*,\s*)?(?:event\s*=\s*)?['"]([^'"\n]{1,80})['"]"""
    ),
)
# Node's own stream / socket events are plumbing, not business triggers.
PLUMBING_EVENTS = frozenset(
    {"error", "close", "end", "data", "connection", "connect", "disconnect", "message",
     "finish", "drain", "open", "ready", "listening", "exit", "uncaughtException"}
)  # fmt: skip
TEMPLATE_CHANNELS = (("sms", re.compile(r"(?:^|/)(?:sms|texts?)(?:/|$)", re.I)),
                     ("push", re.compile(r"(?:^|/)push(?:/|$)", re.I)),
                     ("email", re.compile(r"e?mails?", re.I)))  # fmt: skip
MAX_CALL_CHARS = 2000  # a send call's argument list is read at most this far


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _call_text(text: str, start: int) -> str:
    """The argument list of the call whose `(` ends at `start`, by counting parentheses."""
    depth, end = 1, start
    limit = min(len(text), start + MAX_CALL_CHARS)
    while end < limit and depth:
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    return text[start:end]


def _templates_in(f: SourceFile) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    text = f.text
    for m in SENDGRID_TEMPLATE_ID.finditer(text):
        found.append(
            {
                "channel": "email",
                "name": m.group(1),
                "evidence": evidence(f.rel, _line(text, m.start())),
            }
        )
    for m in INLINE_EMAIL_CALL.finditer(text):
        call = _call_text(text, m.end())
        if INLINE_EMAIL_CONTENT.search(call) and not SENDGRID_TEMPLATE_ID.search(call):
            subject = SUBJECT.search(call)
            name = f"inline: {subject.group(1)}" if subject else "inline email"
            found.append(
                {
                    "channel": "email",
                    "name": name,
                    "evidence": evidence(f.rel, _line(text, m.start())),
                }
            )
    for m in TWILIO_CALL.finditer(text):
        call = _call_text(text, m.end())
        channel = "whatsapp" if "whatsapp:" in call else "sms"
        sid = TWILIO_CONTENT_SID.search(call)
        body = TWILIO_BODY.search(call)
        if sid:
            name = sid.group(1)
        elif body:
            name = f"inline: {body.group(1)}" if body.group(1) else "inline sms"
        else:
            continue
        found.append(
            {"channel": channel, "name": name, "evidence": evidence(f.rel, _line(text, m.start()))}
        )
    return found


def _template_file(f: SourceFile) -> dict[str, Any] | None:
    folder = f.rel.rsplit("/", 1)[0] if "/" in f.rel else ""
    for channel, pattern in TEMPLATE_CHANNELS:
        if pattern.search(folder):
            return {
                "channel": channel,
                "name": f.rel.rsplit("/", 1)[-1],
                "evidence": evidence(f.rel, 1),
            }
    return None


def _triggers_in(f: SourceFile) -> list[dict[str, Any]]:
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for pattern in TRIGGER_PATTERNS:
        for m in pattern.finditer(f.text):
            name = m.group(1).strip()
            at = _line(f.text, m.start())
            if name and name not in PLUMBING_EVENTS:
                found.setdefault((name, at), {"name": name, "evidence": evidence(f.rel, at)})
    return list(found.values())


def messages_in(files: list[SourceFile]) -> dict[str, Any]:
    """The report's `messages` section: templates, triggers, and template counts by channel."""
    templates: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    for f in files:
        if f.language == "template":
            entry = _template_file(f)
            if entry:
                templates.append(entry)
        else:
            templates += _templates_in(f)
            triggers += _triggers_in(f)
    return {
        "templates": templates,
        "triggers": triggers,
        "by_channel": dict(sorted(Counter(t["channel"] for t in templates).items())),
    }
