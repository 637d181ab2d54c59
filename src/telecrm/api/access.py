"""The read API's resource server: bearer tokens in, a Principal (or a logged, audited refusal) out.

`AccessControl.require(permission)` is the FastAPI dependency every `/v1/` read route declares.
It validates `Authorization: Bearer <JWT>` (telecrm's own tokens or the configured external
issuer's, `security/tokens.py`), puts the caller on `request.state.principal` (`client_id`,
`role`: what rate limiting keys on), and checks the role's permission. `patient_access(...)`
adds what a patient read needs: the role's field set, the reason (`X-Telecrm-Reason`) and the
break-glass switch (`X-Telecrm-Break-Glass: <reason>`).

Refusals: 401 problem+json with `WWW-Authenticate: Bearer ... error="invalid_token"` (RFC 6750
§3) for a missing or bad token, 403 with `error="insufficient_scope"` for a role that may not.
Each is counted, logged (`access.denied`: status, reason code, route, client id; never a token)
and written to the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2
from sqlalchemy import Connection
from starlette.responses import Response

from telecrm.api.problems import Problem, problem_response
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import to_micros
from telecrm.domain.events import ID_PATTERN
from telecrm.domain.fields import FIELDS
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.jwks import JwksCache, JwksFetcher, JwksUnavailable, http_fetcher
from telecrm.security.roles import (
    Permission,
    Role,
    may,
    may_break_glass,
    sees_identifying_values,
    visible_fields,
)
from telecrm.security.signing_keys import SigningKeys
from telecrm.security.tokens import (
    ExternalIssuer,
    Principal,
    RoleMissing,
    TokenRejected,
    TokenService,
)

log = structlog.get_logger("telecrm.access")

REASON_HEADER = "X-Telecrm-Reason"
BREAK_GLASS_HEADER = "X-Telecrm-Break-Glass"
# The audit log's purpose column is 64 characters; printable ASCII keeps header decoding exact.
REASON_SHAPE = re.compile(r"^[\x20-\x7e]{3,64}$")
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)
_PATIENT_ID = re.compile(ID_PATTERN)
REALM = 'Bearer realm="telecrm"'

oauth2_scheme = OAuth2(
    flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl="/oauth/token")),
    scheme_name="telecrm_oauth",
    description="OAuth 2.0 client credentials: POST /oauth/token, then "
    "`Authorization: Bearer <access_token>` (docs/api.md)",
    auto_error=False,
)

_DOING = {
    Permission.PATIENT_READ: "read patient profiles",
    Permission.PATIENT_SEARCH: "search patients by email or phone",
    Permission.DISCLOSURES_READ: "read the accounting of disclosures",
    Permission.EXPORT: "export patient data",
    Permission.AUDIT_READ: "read the audit log",
    Permission.SEGMENTS_READ: "read segments",
    Permission.FUNNELS_READ: "read funnels",
    Permission.JOURNEYS_READ: "read journeys",
    Permission.SYNC_READ: "read sync status and dead letters",
    Permission.CLIENTS_READ: "read API clients",
}


class BearerProblem(Problem):
    """A 401/403 that also tells the client how to authenticate (RFC 6750 §3)."""

    def __init__(self, status: int, code: str, title: str, detail: str, challenge: str) -> None:
        super().__init__(status, code, title, detail)
        self.challenge = challenge


def install_access_handlers(app: FastAPI) -> None:
    @app.exception_handler(BearerProblem)
    async def _bearer(request: Request, exc: BearerProblem) -> Response:
        response = problem_response(
            exc.status, exc.code, exc.title, exc.detail, instance=request.url.path
        )
        response.headers["WWW-Authenticate"] = exc.challenge
        return response


def _challenge(error: str, description: str) -> str:
    return f'{REALM}, error="{error}", error_description="{description}"'


@dataclass(frozen=True, slots=True)
class PatientAccess:
    """What one patient read may show and why: the audit entry is made from it."""

    principal: Principal
    fields: frozenset[str]
    purpose: str
    break_glass: bool

    @property
    def sees_identifying_values(self) -> bool:
        return any(FIELDS[name].encrypted for name in self.fields)


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or request.url.path)[:100]


def _patient_in_path(request: Request) -> str | None:
    value = request.path_params.get("patient_id")
    return value if isinstance(value, str) and _PATIENT_ID.fullmatch(value) else None


def build_token_service(runtime: Runtime, *, jwks_fetch: JwksFetcher | None = None) -> TokenService:
    """telecrm's issuer (at TELECRM_PUBLIC_URL) and, when configured, the external one."""
    settings = runtime.settings
    external = None
    if settings.oauth_issuer and settings.oauth_audience and settings.oauth_jwks_url:
        cache = JwksCache(settings.oauth_jwks_url, jwks_fetch or http_fetcher(), runtime.clock)
        external = ExternalIssuer(
            settings.oauth_issuer, settings.oauth_audience, settings.oauth_role_claim, cache
        )
    return TokenService(
        runtime.engine,
        SigningKeys(runtime.engine, runtime.cipher, runtime.clock),
        runtime.clock,
        issuer=settings.public_url.rstrip("/"),
        ttl_seconds=settings.oauth_token_ttl_seconds,
        external=external,
    )


class AccessControl:
    def __init__(self, runtime: Runtime, tokens: TokenService) -> None:
        self._runtime = runtime
        self.tokens = tokens

    # -- refusals -------------------------------------------------------------------------------
    def deny(
        self, request: Request, status: int, reason: str, principal: Principal | None = None
    ) -> None:
        """Counts, logs and audits one refusal (the caller raises the response)."""
        route = _route_of(request)
        patient_id = _patient_in_path(request)
        self._runtime.metrics.access_denied.labels(str(status), reason).inc()
        log.warning(
            "access.denied",
            status=status,
            reason=reason,
            method=request.method,
            route=route,
            client_id=principal.client_id if principal else None,
            role=principal.role.value if principal else None,
        )
        entry = AuditEntry(
            actor=principal.actor[:128] if principal else "anonymous",
            action="deny",
            record_type="patient" if patient_id else "endpoint",
            record_ids=[patient_id] if patient_id else [route],
            fields=[],
            purpose=f"{status} {reason}: {request.method} {route}"[:64],
            outcome="denied",
        )
        with self._runtime.engine.begin() as conn:
            append_audit(conn, [entry], at_us=to_micros(self._runtime.clock.now()))

    def _unauthorized(
        self, request: Request, reason: str, detail: str, error: bool
    ) -> BearerProblem:
        self.deny(request, 401, reason)
        challenge = _challenge("invalid_token", detail) if error else REALM
        return BearerProblem(401, reason, "Unauthorized", detail, challenge)

    def forbidden(
        self, request: Request, principal: Principal, reason: str, detail: str
    ) -> BearerProblem:
        self.deny(request, 403, reason, principal)
        return BearerProblem(
            403, reason, "Forbidden", detail, _challenge("insufficient_scope", detail)
        )

    # -- authentication -------------------------------------------------------------------------
    def authenticate(self, request: Request, authorization: str | None) -> Principal:
        if not authorization:
            raise self._unauthorized(
                request, "missing_token", "send Authorization: Bearer <access token>", error=False
            )
        match = _BEARER.fullmatch(authorization)
        if match is None:
            raise self._unauthorized(
                request, "malformed", "the Authorization header is not Bearer <token>", error=True
            )
        try:
            principal = self.tokens.verify(match.group(1))
        except TokenRejected as exc:
            raise self._unauthorized(request, exc.reason, exc.description, error=True) from None
        except JwksUnavailable as exc:
            log.error("access.issuer_unavailable", problem=str(exc))
            raise Problem(
                503,
                "issuer_unavailable",
                "Token issuer unavailable",
                "the external issuer's keys cannot be fetched now; retry in a minute",
            ) from None
        except RoleMissing:
            # Signed and valid, but names no role: nobody to grant anything to.
            self.deny(request, 403, "no_role")
            detail = "the token names no telecrm role"
            raise BearerProblem(
                403, "no_role", "Forbidden", detail, _challenge("insufficient_scope", detail)
            ) from None
        request.state.principal = principal
        return principal

    def require(self, permission: Permission) -> Callable[..., Principal]:
        """A dependency: the authenticated caller, whose role has ``permission``."""

        def dependency(
            request: Request, authorization: str | None = Depends(oauth2_scheme)
        ) -> Principal:
            principal = self.authenticate(request, authorization)
            if not may(principal.role, permission):
                raise self.forbidden(
                    request,
                    principal,
                    "forbidden",
                    f"the {principal.role.value} role may not {_DOING[permission]}",
                )
            return principal

        return dependency

    def patient_access(self, permission: Permission) -> Callable[..., PatientAccess]:
        """A dependency for patient reads: the role's fields, the reason, break-glass."""

        def dependency(
            request: Request, principal: Principal = Depends(self.require(permission))
        ) -> PatientAccess:
            role = principal.role
            glass = request.headers.get(BREAK_GLASS_HEADER)
            if glass is not None:
                if not may_break_glass(role):
                    raise self.forbidden(
                        request,
                        principal,
                        "break_glass_not_allowed",
                        f"the {role.value} role has no break-glass access",
                    )
                return PatientAccess(
                    principal,
                    visible_fields(role, break_glass=True),
                    _checked_reason(glass, BREAK_GLASS_HEADER),
                    break_glass=True,
                )
            given = request.headers.get(REASON_HEADER)
            reason = _checked_reason(given, REASON_HEADER) if given is not None else None
            if reason is None and _needs_reason(role, permission):
                raise Problem(
                    422,
                    "reason_required",
                    "Reason required",
                    f"a {role.value} reading patient data must say why: send {REASON_HEADER}: "
                    "<3 to 64 characters> (it goes to the audit log; put no patient data in it)",
                )
            return PatientAccess(
                principal, visible_fields(role), reason or f"{role.value} view", break_glass=False
            )

        return dependency

    # -- the audit entry of a read --------------------------------------------------------------
    def record_read(
        self,
        conn: Connection,
        access: PatientAccess,
        *,
        record_type: str,
        record_ids: Sequence[str],
        fields: Sequence[str],
        outcome: str = "ok",
    ) -> None:
        """Audits one read in the caller's transaction; a break-glass read also raises the alert."""
        principal = access.principal
        entry = AuditEntry(
            actor=principal.actor[:128],
            action="break_glass" if access.break_glass else "read",
            record_type=record_type,
            record_ids=list(record_ids),
            fields=list(fields),
            purpose=access.purpose,
            outcome=outcome,
        )
        append_audit(conn, [entry], at_us=to_micros(self._runtime.clock.now()))
        if access.break_glass:
            self._runtime.metrics.break_glass.labels(principal.role.value).inc()
            # An alert for whoever watches the logs: who, which patients. Not the reason (it is
            # free text and in the audit log already).
            log.warning(
                "access.break_glass",
                client_id=principal.client_id,
                role=principal.role.value,
                record_type=record_type,
                record_ids=list(record_ids)[:20],
                outcome=outcome,
            )


def _needs_reason(role: Role, permission: Permission) -> bool:
    return sees_identifying_values(role) or permission is Permission.PATIENT_SEARCH


def _checked_reason(value: str, header: str) -> str:
    reason = value.strip()
    if not REASON_SHAPE.fullmatch(reason):
        raise Problem(
            422,
            "invalid_reason",
            "Invalid reason",
            f"{header} must be 3 to 64 printable ASCII characters",
        )
    return reason
