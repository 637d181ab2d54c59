"""The SendGrid sandbox's mail-send rules: body validation and per-recipient rendering.

`mail_send_problems` checks a `POST /v3/mail/send` body the way SendGrid's 400s do (messaging.md
§1.2 limits, the mail-send errors page) and returns every problem as (field, message). Messages
never echo an address or a value, only field paths such as `personalizations.3.to.0.email`.
`render` applies one personalization's substitutions to the subject and the content;
`render_dynamic` fills a dynamic template (`d-...`) from `dynamic_template_data`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

PERSONALIZATIONS_MAX = 1000  # personalizations per request (messaging.md §1.2)
RECIPIENTS_MAX = 1000  # to + cc + bcc per request (messaging.md §1.2, errors page)
CATEGORIES_MAX = 10  # categories per message (messaging.md §1.2)
CATEGORY_MAX_CHARS = 255  # each category (messaging.md §1.2)
CUSTOM_ARGS_MAX_BYTES = 10_000  # total custom_args (messaging.md §1.2)
SUBSTITUTIONS_MAX_BYTES = 10_000  # per personalization (messaging.md §1.2)
GROUPS_TO_DISPLAY_MAX = 25  # asm.groups_to_display (messaging.md §1.2)
SEND_AT_MAX_AHEAD_S = 72 * 3600  # send_at no more than 72 hours ahead (messaging.md §1.2)
RECIPIENT_KINDS = ("to", "cc", "bcc")

_EMAIL = re.compile(r"^[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+$")

Problem = tuple[str | None, str]


def is_valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value) is not None


def substitutions_size(subs: Mapping[str, Any]) -> int:
    """Bytes counted against the 10,000-byte substitutions limit: every key and value, UTF-8."""
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in subs.items())


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def mail_send_problems(
    body: Any, *, now: float, group_exists: Callable[[int], bool]
) -> list[Problem]:
    """Every reason SendGrid would answer 400 to this body; empty when it would accept it."""
    if not isinstance(body, dict):
        return [(None, "Bad Request")]
    problems: list[Problem] = []
    problems += _personalization_problems(body.get("personalizations"), body, now)
    problems += _sender_problems(body)
    problems += _content_problems(body)
    problems += _category_problems(body.get("categories"))
    problems += _asm_problems(body.get("asm"), group_exists)
    args = body.get("custom_args", {})
    if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
        problems.append(("custom_args", "custom_args must be an object of string values."))
    elif json_size(args) > CUSTOM_ARGS_MAX_BYTES:
        problems.append(("custom_args", "The custom_args exceed the 10,000 byte limit."))
    problems += _send_at_problem("send_at", body.get("send_at"), now)
    return problems


def _personalization_problems(items: Any, body: dict[str, Any], now: float) -> list[Problem]:
    if not isinstance(items, list) or not items:
        return [
            (
                "personalizations",
                "The personalizations field is required and must have at least one personalization.",
            )
        ]
    if len(items) > PERSONALIZATIONS_MAX:
        return [
            ("personalizations", "You may not have more than 1000 personalizations per request.")
        ]
    problems: list[Problem] = []
    seen: set[str] = set()
    total = 0
    message_args = body.get("custom_args") if isinstance(body.get("custom_args"), dict) else {}
    for i, p in enumerate(items):
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            problems.append((where, "Each personalization must be an object."))
            continue
        found = _recipient_problems(p, where, seen)
        total += sum(len(p[k]) for k in RECIPIENT_KINDS if isinstance(p.get(k), list))
        needs_subject = "subject" not in body and "template_id" not in body
        if not found and needs_subject and not isinstance(p.get("subject"), str):
            found.append(
                (
                    "subject",
                    "The subject is required. You can get around this requirement if every "
                    "personalization has a subject defined.",
                )
            )
        if not found and "subject" in p and (not isinstance(p["subject"], str) or not p["subject"]):
            found.append((f"{where}.subject", "The subject must be at least one character."))
        subs = p.get("substitutions", {})
        if not found and (
            not isinstance(subs, dict) or not all(isinstance(v, str) for v in subs.values())
        ):
            found.append((f"{where}.substitutions", "substitutions must be an object of strings."))
        elif not found and substitutions_size(subs) > SUBSTITUTIONS_MAX_BYTES:
            found.append(
                (
                    f"{where}.substitutions",
                    "The substitutions of a personalization exceed the 10,000 byte limit.",
                )
            )
        args = p.get("custom_args", {})
        if not found and (
            not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values())
        ):
            found.append(
                (f"{where}.custom_args", "custom_args must be an object of string values.")
            )
        elif not found and json_size({**(message_args or {}), **args}) > CUSTOM_ARGS_MAX_BYTES:
            found.append((f"{where}.custom_args", "The custom_args exceed the 10,000 byte limit."))
        if not found:
            found = _send_at_problem(f"{where}.send_at", p.get("send_at"), now)
        problems += found[:1]
    if total > RECIPIENTS_MAX:
        problems.append(
            ("personalizations", "The total number of recipients must be no more than 1000.")
        )
    return problems


def _recipient_problems(p: dict[str, Any], where: str, seen: set[str]) -> list[Problem]:
    to = p.get("to")
    if not isinstance(to, list) or not to:
        return [
            (
                f"{where}.to",
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
            )
        ]
    for kind in RECIPIENT_KINDS:
        people = p.get(kind, [])
        if not isinstance(people, list):
            return [(f"{where}.{kind}", f"The {kind} field must be an array.")]
        for j, person in enumerate(people):
            field = f"{where}.{kind}.{j}"
            email = person.get("email") if isinstance(person, dict) else None
            if not is_valid_email(email):
                return [(f"{field}.email", "Does not contain a valid address.")]
            assert isinstance(person, dict) and isinstance(email, str)
            if "name" in person and not isinstance(person["name"], str):
                return [(f"{field}.name", "The name must be a string.")]
            if email.lower() in seen:
                return [
                    (
                        f"{field}.email",
                        "Each email address in the personalizations array should be unique; "
                        "this field repeats one.",
                    )
                ]
            seen.add(email.lower())
    return []


def _sender_problems(body: dict[str, Any]) -> list[Problem]:
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        return [
            (
                "from.email",
                "The from object must be provided for every email send. It is an object that "
                "requires an email parameter, but may also contain a name parameter.",
            )
        ]
    if not is_valid_email(sender["email"]):
        return [("from.email", "The from email does not contain a valid address.")]
    if "reply_to" in body and "reply_to_list" in body:
        return [("reply_to_list", "You may use either reply_to or reply_to_list, not both.")]
    return []


def _content_problems(body: dict[str, Any]) -> list[Problem]:
    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        return [("subject", "The subject must be at least one character.")]
    content = body.get("content")
    if content is None:
        if "template_id" in body:
            return []
        return [
            ("content", "Unless a valid template_id is provided, the content array is required.")
        ]
    if not isinstance(content, list) or not content:
        return [("content", "The content array must have at least one content object.")]
    types: list[str] = []
    for i, item in enumerate(content):
        for key in ("type", "value"):
            value = item.get(key) if isinstance(item, dict) else None
            if not isinstance(value, str) or not value:
                return [
                    (f"content.{i}.{key}", f"The content {key} must be at least one character.")
                ]
        types.append(item["type"])
    if "text/plain" in types and types.index("text/plain") != 0:
        return [
            (
                "content",
                "If present, text/plain content must be first, followed by text/html, followed by "
                "any other content.",
            )
        ]
    return []


def _category_problems(categories: Any) -> list[Problem]:
    if categories is None:
        return []
    if not isinstance(categories, list):
        return [("categories", "The categories must be an array of strings.")]
    if len(categories) > CATEGORIES_MAX:
        return [("categories", "You may not have more than 10 categories per request.")]
    if len(set(map(str, categories))) != len(categories):
        return [("categories", "The categories must be unique.")]
    for i, category in enumerate(categories):
        if not isinstance(category, str) or len(category) > CATEGORY_MAX_CHARS:
            return [(f"categories.{i}", "A category must be a string of at most 255 characters.")]
    return []


def _asm_problems(asm: Any, group_exists: Callable[[int], bool]) -> list[Problem]:
    if asm is None:
        return []
    group_id = asm.get("group_id") if isinstance(asm, dict) else None
    if not isinstance(group_id, int) or isinstance(group_id, bool):
        return [("asm.group_id", "The asm group_id is required and must be an integer.")]
    if not group_exists(group_id):
        return [("asm.group_id", "The asm group_id must be an existing unsubscribe group.")]
    display = asm.get("groups_to_display", [])
    assert isinstance(asm, dict)
    if not isinstance(display, list) or not all(
        isinstance(g, int) and group_exists(g) for g in display
    ):
        return [("asm.groups_to_display", "groups_to_display must list existing group ids.")]
    if len(display) > GROUPS_TO_DISPLAY_MAX:
        return [("asm.groups_to_display", "groups_to_display may not have more than 25 groups.")]
    return []


def _send_at_problem(field: str, send_at: Any, now: float) -> list[Problem]:
    if send_at is None:
        return []
    if not isinstance(send_at, int) or isinstance(send_at, bool):
        return [(field, "send_at must be a unix timestamp integer.")]
    if send_at > now + SEND_AT_MAX_AHEAD_S:
        return [(field, "send_at may not be more than 72 hours in the future.")]
    return []


def render(text: str, subs: Mapping[str, str]) -> str:
    """Each substitution key replaced literally, in one pass (values are never re-substituted)."""
    keys = sorted((k for k in subs if k), key=len, reverse=True)
    if not keys or not text:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return pattern.sub(lambda m: subs[m.group(0)], text)


_HANDLEBARS = re.compile(r"\{\{(\{?)\s*([A-Za-z_][\w.]*)\s*\}?\}\}")


def render_dynamic(source: str, data: Mapping[str, Any], *, html: bool) -> str:
    """The subset of Handlebars a dynamic template needs here: `{{a.b}}` (HTML-escaped in the
    HTML part) and `{{{a.b}}}` (raw). A missing value renders empty, as Handlebars does."""
    import html as html_lib

    def value(match: re.Match[str]) -> str:
        current: Any = data
        for part in match.group(2).split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        text = "" if current is None else str(current)
        return html_lib.escape(text) if html and not match.group(1) else text

    return _HANDLEBARS.sub(value, source)


def dynamic_problems(body: dict[str, Any], template_exists: Callable[[str], bool]) -> list[Problem]:
    """A template_id must name a dynamic template of the account; its data must be objects."""
    template_id = body.get("template_id")
    if template_id is None:
        return []
    if not isinstance(template_id, str) or not template_exists(template_id):
        return [("template_id", "The template_id must be a valid template of this account.")]
    for i, p in enumerate(body.get("personalizations") or []):
        data = p.get("dynamic_template_data") if isinstance(p, dict) else None
        if data is not None and not isinstance(data, dict):
            return [(f"personalizations.{i}.dynamic_template_data", "must be an object")]
    return []


def first_link(html: str) -> str | None:
    """The first href in the html part: what a simulated click follows."""
    match = re.search(r"""href\s*=\s*["']([^"']+)["']""", html, re.IGNORECASE)
    return match.group(1) if match else None
