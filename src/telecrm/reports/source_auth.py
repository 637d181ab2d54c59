"""What a piece of auth code is, judged from its name and text: JWT, API key, session, basic ...

Shared by the Python and the JavaScript readers; the kinds are those of `reports.endpoints`
plus `session`, `signature` (a webhook receiver that verifies its sender) and `custom` (code
named like auth whose mechanism is not recognised).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import WEBHOOK_WORDS, Parameter
from telecrm.reports.source_tree import Route

AUTH_NAME = re.compile(
    r"auth|login|logged_?in|current_?user|token|jwt|api_?key|permission|session|guard|"
    r"protect|require_?user|require_?role|signed_?in",
    re.I,
)
_TEXT_RULES = (
    (
        "jwt_bearer",
        re.compile(
            r"jwt\.(?:decode|verify)|jsonwebtoken|passport-jwt|expressjwt|express-jwt|"
            r"jwt_required|JwtStrategy|AuthGuard\(\s*['\"]jwt|authenticate\(\s*['\"]jwt|"
            r"\bjose\b|JwtAuthGuard|JWTAuthentication|verify_jwt",
            re.I,
        ),
    ),
    ("api_key", re.compile(r"api[-_]?key|HeaderAPIKey|ApiKeyGuard", re.I)),
    (
        "session",
        re.compile(
            r"isAuthenticated\(|req\.session|request\.session|ensureLoggedIn|ensureAuthenticated|"
            r"login_required|LoginRequired|authenticate\(\s*['\"](?:local|session)|"
            r"AuthGuard\(\s*['\"]local|SessionAuthentication|is_authenticated",
            re.I,
        ),
    ),
    ("basic", re.compile(r"basic", re.I)),
    ("bearer", re.compile(r"bearer|TokenAuthentication|HTTPTokenAuth", re.I)),
)
SIGNATURE_CHECK = re.compile(
    r"construct_?event|validate_?request|verify_?signature|verify_?webhook|compare_digest|"
    r"timing_?safe_?equal|verify_?hmac|is_?valid_?signature|check_?signature|"
    r"webhooks?\.verify|Webhook\([^)]*\)\.verify|validate_?signature",
    re.I,
)


def auth_kind_from_text(text: str) -> str | None:
    """The auth mechanism a piece of code uses, by what it calls; None if none is recognised."""
    for kind, pattern in _TEXT_RULES:
        if pattern.search(text):
            return kind
    return None


def auth_kind(name: str, text: str = "") -> str | None:
    """Kind of a middleware / dependency / decorator named `name` whose source is `text`."""
    kind = auth_kind_from_text(text) if text else None
    if kind is None:
        kind = auth_kind_from_text(name)
    if kind is None and AUTH_NAME.search(name):
        return "custom"
    return kind


def verifies_signature(text: str) -> bool:
    return bool(SIGNATURE_CHECK.search(text))


@dataclass(frozen=True, slots=True)
class RouteAuth:
    """How one route is guarded, as every framework reader reports it."""

    kinds: tuple[str, ...]  # sorted; ("none",) when nothing guards it
    evidence: str  # where the first guard was found, else the route itself
    webhook_reason: str | None  # "path" or "handler" when it looks like a webhook receiver
    signature_verified: bool | None  # receivers only: does the handler verify its sender?


def route_auth(
    auth: Sequence[tuple[str, str]], where: str, path: str, handler: str, handler_text: str
) -> RouteAuth:
    """`auth` is (kind, evidence) per guard found; a receiver that checks a signature counts
    `signature` among its kinds."""
    reason = (
        "path"
        if WEBHOOK_WORDS.search(path)
        else "handler"
        if WEBHOOK_WORDS.search(handler)
        else None
    )
    kinds = {k for k, _ in auth}
    signed: bool | None = None
    if reason:
        signed = "signature" in kinds or verifies_signature(handler_text)
        if signed:
            kinds.add("signature")
    return RouteAuth(
        tuple(sorted(kinds)) or ("none",), auth[0][1] if auth else where, reason, signed
    )


def guarded_route(
    *,
    method: str,
    path: str,
    where: str,
    framework: str,
    handler: str,
    handler_text: str,
    auth: Sequence[tuple[str, str]],
    parameters: list[Parameter],
    fields: list[SchemaField],
) -> Route:
    """A route as every framework reader reports it, its guards read by `route_auth`."""
    guarded = route_auth(auth, where, path, handler, handler_text)
    return Route(
        method=method,
        path=path,
        evidence=where,
        framework=framework,
        handler=handler,
        auth=guarded.kinds,
        auth_evidence=guarded.evidence,
        parameters=parameters,
        fields=fields,
        webhook_reason=guarded.webhook_reason,
        signature_verified=guarded.signature_verified,
    )
