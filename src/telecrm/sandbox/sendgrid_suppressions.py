"""The SendGrid sandbox's ASM and suppressions API: unsubscribe groups, global unsubscribes, lists.

A subset of specs/sendgrid/tsg_suppressions_v3.json (messaging.md §2): each handler takes the
account, the path parameters, the JSON body and the query, and returns (status, body). Group ids
in the path are checked by the caller (404 for an unknown group).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telecrm.sandbox.sendgrid_mail import is_valid_email
from telecrm.sandbox.sendgrid_store import GROUP_NAME_MAX, Account, errors_body

LIST_LIMIT_MAX = 500  # suppression list page size (messaging.md §2)

Answer = tuple[int, Any]
Handler = Callable[[Account, dict[str, str], Any, dict[str, str], float], Answer]


def create_group(a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Answer:
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name or len(name) > GROUP_NAME_MAX:
        return 400, errors_body("name is required and may have at most 30 characters", "name")
    if any(g["name"] == name for g in a.groups.values()):
        return 400, errors_body("Another group with this name already exists.", "name")
    assert isinstance(body, dict)
    description = str(body.get("description") or "")
    return 201, a.create_group(name, description, bool(body.get("is_default")))


def list_groups(a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Answer:
    ids = [int(q["id"])] if q.get("id", "").isdigit() else list(a.groups)
    return 200, [a.group_json(i) for i in ids if i in a.groups]


def get_group(a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Answer:
    return 200, a.group_json(int(p["group"]))


def _recipient_emails(body: Any) -> list[str] | None:
    emails = body.get("recipient_emails") if isinstance(body, dict) else None
    if not isinstance(emails, list) or not all(is_valid_email(e) for e in emails):
        return None
    return emails


def _bad_emails() -> Answer:
    message = "recipient_emails must be a list of valid addresses"
    return 400, errors_body(message, "recipient_emails")


def add_group_suppressions(
    a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float
) -> Answer:
    emails = _recipient_emails(body)
    if emails is None:
        return _bad_emails()
    for email in emails:
        a.suppress_in_group(int(p["group"]), email, int(now))
    return 201, {"recipient_emails": emails}


def list_group_suppressions(
    a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float
) -> Answer:
    return 200, list(a.group_suppressions[int(p["group"])])


def delete_group_suppression(
    a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float
) -> Answer:
    a.unsuppress_in_group(int(p["group"]), p["email"])
    return 204, None


def add_global(a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Answer:
    emails = _recipient_emails(body)
    if emails is None:
        return _bad_emails()
    for email in emails:
        a.unsubscribe_globally(email, int(now))
    return 201, {"recipient_emails": emails}


def get_global(a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float) -> Answer:
    """`{"recipient_email": ...}` when suppressed, `{}` when not (messaging.md §2.2)."""
    entry = a.global_unsubscribes.get(p["email"].lower())
    return 200, ({"recipient_email": entry["email"]} if entry else {})


def delete_global(
    a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float
) -> Answer:
    a.global_unsubscribes.pop(p["email"].lower(), None)
    return 204, None


def list_suppressions(
    a: Account, p: dict[str, str], body: Any, q: dict[str, str], now: float
) -> Answer:
    """GET /v3/suppression/{bounces,spam_reports,unsubscribes,invalid_emails} with its filters."""
    source = {
        "bounces": a.bounces, "spam_reports": a.spam_reports,
        "unsubscribes": a.global_unsubscribes, "invalid_emails": a.invalid_emails,
    }[p["list"]]  # fmt: skip
    rows = [dict(r) for r in source.values()]
    if q.get("email"):
        rows = [r for r in rows if q["email"].lower() in r["email"].lower()]
    if q.get("start_time", "").isdigit():
        rows = [r for r in rows if r["created"] >= int(q["start_time"])]
    if q.get("end_time", "").isdigit():
        rows = [r for r in rows if r["created"] <= int(q["end_time"])]
    offset = int(q["offset"]) if q.get("offset", "").isdigit() else 0
    limit = LIST_LIMIT_MAX
    if q.get("limit", "").isdigit():
        limit = min(int(q["limit"]), LIST_LIMIT_MAX)
    return 200, rows[offset : offset + limit]


HANDLERS: dict[str, Handler] = {
    "create_group": create_group,
    "list_groups": list_groups,
    "get_group": get_group,
    "add_group_suppressions": add_group_suppressions,
    "list_group_suppressions": list_group_suppressions,
    "delete_group_suppression": delete_group_suppression,
    "add_global": add_global,
    "get_global": get_global,
    "delete_global": delete_global,
    "list": list_suppressions,
}
