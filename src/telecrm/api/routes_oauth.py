"""The authorization server: `POST /oauth/token` (client credentials), the JWKS and its metadata.

RFC 6749 §4.4: a form-encoded body with `grant_type=client_credentials`; the client authenticates
with HTTP Basic (`client_secret_basic`) or `client_id` + `client_secret` in the body
(`client_secret_post`), never both. Errors are RFC 6749 §5.2 JSON, not problem+json, because
every OAuth client library parses that shape. Token responses are never cached (§5.1).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import structlog
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from telecrm.api.problems import Problem
from telecrm.api.routes_events import read_limited
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import to_micros
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.clients import CLIENT_ID_PATTERN, ApiClient, authenticate_client
from telecrm.security.roles import Role
from telecrm.security.tokens import IssuedToken, TokenService
from telecrm.store.engine import read_only

log = structlog.get_logger("telecrm.oauth")

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
JWKS_PATH = "/.well-known/jwks.json"
MAX_FORM_BYTES = 4096
MAX_FORM_FIELDS = 16
FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BASIC_CHALLENGE = 'Basic realm="telecrm", charset="UTF-8"'


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def response(self) -> Response:
        headers = dict(NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = BASIC_CHALLENGE
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers=headers,
        )


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """The token request's parameters; each may appear once (RFC 6749 §3.2)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise OAuthError("invalid_request", f"the body must be {FORM}")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a well-formed form") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthError("invalid_request", f"parameter {name[:40]!r} is repeated")
        params[name] = value
    return params


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "use HTTP Basic client authentication", status=401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise OAuthError(
            "invalid_client", "the Basic credentials are malformed", status=401
        ) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "the Basic credentials are malformed", status=401)
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def client_credentials(authorization: str | None, params: dict[str, str]) -> tuple[str, str]:
    in_body = "client_id" in params or "client_secret" in params
    if authorization and in_body:
        raise OAuthError("invalid_request", "authenticate one way only: Basic or the body")
    if authorization:
        return _basic_credentials(authorization)
    client_id, secret = params.get("client_id"), params.get("client_secret")
    if not client_id or not secret:
        raise OAuthError(
            "invalid_client",
            "client authentication is missing: HTTP Basic, or client_id and client_secret",
            status=401,
        )
    return client_id, secret


def build_oauth_router(runtime: Runtime, tokens: TokenService) -> APIRouter:
    router = APIRouter(tags=["oauth"])

    def audit_token(client_id: str | None, outcome: str, purpose: str) -> None:
        actor = f"client:{client_id}" if client_id else "anonymous"
        entry = AuditEntry(
            actor=actor,
            action="token",
            record_type="api_client",
            record_ids=[client_id] if client_id else [],
            fields=[],
            purpose=purpose,
            outcome=outcome,
        )
        with runtime.engine.begin() as conn:
            append_audit(conn, [entry], at_us=to_micros(runtime.clock.now()))

    def authenticate_and_issue(client_id: str, secret: str, scope: str | None) -> IssuedToken:
        # Read-only: on SQLite a plain connection takes the write lock, and the scrypt check
        # (some 30 ms) would hold it, stalling every audit write behind it (bench/api_reads.py).
        with read_only(runtime.engine).connect() as conn:
            client: ApiClient | None = authenticate_client(conn, client_id, secret)
        known_id = client_id if CLIENT_ID_PATTERN.fullmatch(client_id) else None
        if client is None:
            audit_token(known_id, "denied", "client authentication failed")
            raise OAuthError(
                "invalid_client", "unknown client, wrong secret, or disabled client", status=401
            )
        if scope and scope != client.role.value:
            audit_token(client.client_id, "denied", "invalid scope")
            raise OAuthError(
                "invalid_scope", f"this client may ask only for scope {client.role.value}"
            )
        issued = tokens.issue(client)
        audit_token(client.client_id, "ok", f"access token for role {client.role.value}")
        return issued

    @router.post(
        TOKEN_PATH,
        summary="Get an access token (OAuth 2.0 client credentials, RFC 6749 §4.4)",
        description="Form body `grant_type=client_credentials`; client authentication by HTTP "
        "Basic or `client_id` + `client_secret` in the body. Errors are RFC 6749 §5.2 JSON.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    FORM: {
                        "schema": {
                            "type": "object",
                            "required": ["grant_type"],
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                                "scope": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
        responses={
            400: {"description": "invalid_request, unsupported_grant_type, invalid_scope"},
            401: {"description": "invalid_client"},
        },
    )
    async def token(request: Request) -> Response:
        try:
            try:
                body = await read_limited(request, MAX_FORM_BYTES)
            except Problem as exc:
                raise OAuthError("invalid_request", exc.detail, status=exc.status) from None
            params = parse_form(request.headers.get("content-type"), body)
            grant = params.get("grant_type")
            if not grant:
                raise OAuthError("invalid_request", "grant_type is missing")
            if grant != "client_credentials":
                raise OAuthError(
                    "unsupported_grant_type", "only grant_type=client_credentials is supported"
                )
            client_id, secret = client_credentials(request.headers.get("authorization"), params)
            issued = await run_in_threadpool(
                authenticate_and_issue, client_id, secret, params.get("scope")
            )
        except OAuthError as exc:
            log.info("oauth.token_refused", error=exc.error, status=exc.status)
            return exc.response()
        runtime.metrics.tokens_issued.labels(issued.role.value).inc()
        log.info("oauth.token_issued", role=issued.role.value, expires_in=issued.expires_in)
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.role.value,
            },
            headers=NO_STORE,
        )

    @router.get(JWKS_PATH, summary="The public keys telecrm's access tokens are signed with")
    def jwks() -> Response:
        return JSONResponse(
            {"keys": tokens.keys.public_jwks()},
            headers={"Cache-Control": "public, max-age=300"},
        )

    @router.get(
        "/.well-known/oauth-authorization-server",
        summary="Authorization server metadata (RFC 8414)",
    )
    def metadata() -> dict[str, Any]:
        base = tokens.issuer
        return {
            "issuer": base,
            "token_endpoint": base + TOKEN_PATH,
            "jwks_uri": base + JWKS_PATH,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": [role.value for role in Role],
        }

    return router
