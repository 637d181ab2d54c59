"""Keyset pagination for the read API: page sizes with a cap, and opaque cursors.

A cursor is the sort key of the last item of a page (integers only), base64url-encoded: the next
page starts strictly after it, so rows written between two requests never shift a page and
nothing is skipped or repeated. Clients pass `next_cursor` back as it is.
"""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import Query

from telecrm.api.problems import Problem

DEFAULT_PAGE = 50
MAX_PAGE = 200  # one page stays a small response and a short transaction
CURSOR_PATTERN = r"^[A-Za-z0-9_\-]{1,120}$"
_PARTS = re.compile(r"^-?\d{1,19}(\.-?\d{1,19}){0,3}$")

PageSize = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"Items per page (≤ {MAX_PAGE})")
Cursor = Query(
    None,
    pattern=CURSOR_PATTERN,
    description="`next_cursor` of the previous page; omit for the first page",
)


def encode_cursor(*parts: int) -> str:
    text = ".".join(str(int(p)) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> tuple[int, ...] | None:
    """The integers a cursor carries, or a 422 naming the parameter when it is not ours."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    if not _PARTS.fullmatch(text) or text.count(".") != arity - 1:
        raise invalid_cursor()
    return tuple(int(p) for p in text.split("."))


def invalid_cursor() -> Problem:
    return Problem(
        422,
        "invalid_cursor",
        "Invalid cursor",
        "cursor is not a next_cursor this endpoint returned; omit it for the first page",
    )
