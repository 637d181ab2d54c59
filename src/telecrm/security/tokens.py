"""Access tokens: telecrm issues short-lived ES256 JWTs, and verifies its own and an external issuer's.

Verification trusts nothing in a token before its signature is checked, except to choose which
key set to check it against: the header's ``alg`` must be RS256 or ES256 and match the key it
names (``kid``), and the unverified ``iss`` picks telecrm's own keys or the configured external
issuer's JWKS. Times (``exp``, ``nbf``, ``iat``) are checked on the injected clock with a small
leeway. Every refusal carries a reason code from a closed list (logs and metrics use the code;
no part of a token is ever logged).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import Engine

from telecrm.domain.clock import Clock
from telecrm.security.clients import ApiClient, get_client
from telecrm.security.errors import SecurityError
from telecrm.security.jwks import ALLOWED_ALGORITHMS, JwksCache, VerificationKey
from telecrm.security.roles import Role
from telecrm.security.signing_keys import ALGORITHM, SigningKeys
from telecrm.store.engine import read_only

OWN_ROLE_CLAIM = "telecrm_role"
LEEWAY_SECONDS = 30  # clock skew tolerated between issuer and telecrm
MAX_TOKEN_CHARS = 8192
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*$")
_CLIENT_ID_SHAPE = re.compile(r"^[\x21-\x7e]{1,100}$")  # printable ASCII: safe in the audit log

REASONS = (
    "malformed",
    "disallowed_algorithm",
    "unknown_issuer",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "unknown_client",
    "client_disabled",
)


class TokenRejected(SecurityError):
    """A bearer token that does not prove who is calling (HTTP 401, RFC 6750 invalid_token)."""

    def __init__(self, reason: str, description: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.description = description
        super().__init__(f"{reason}: {description}")


class RoleMissing(SecurityError):
    """A valid token that names no telecrm role (HTTP 403, RFC 6750 insufficient_scope)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: what `request.state.principal` holds (rate limiting keys on client_id)."""

    client_id: str
    role: Role
    issuer: str
    external: bool

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return ("oauth:" if self.external else "client:") + self.client_id


@dataclass(frozen=True, slots=True)
class ExternalIssuer:
    issuer: str
    audience: str
    role_claim: str
    keys: JwksCache


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    role: Role


def _timestamp(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("malformed", f"the {name} claim is not a number")
    return float(value)


def _role_from(value: Any) -> Role:
    candidates = value if isinstance(value, list) else [value]
    known = {r.value for r in Role}
    roles = {Role(v) for v in candidates if isinstance(v, str) and v in known}
    if len(roles) != 1:
        raise RoleMissing("the token names no telecrm role, or more than one")
    return roles.pop()


class TokenService:
    """Issues telecrm's access tokens and verifies bearer tokens (own or external)."""

    def __init__(
        self,
        engine: Engine,
        keys: SigningKeys,
        clock: Clock,
        *,
        issuer: str,
        ttl_seconds: int,
        external: ExternalIssuer | None = None,
    ) -> None:
        self._engine = engine
        self.keys = keys
        self._clock = clock
        self.issuer = issuer
        self.audience = f"{issuer}/v1"
        self.ttl_seconds = ttl_seconds
        self.external = external

    # -- issuing --------------------------------------------------------------------------------
    def issue(self, client: ApiClient) -> IssuedToken:
        key = self.keys.signing_key()
        now = int(self._clock.now().timestamp())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client.client_id,
            "client_id": client.client_id,
            OWN_ROLE_CLAIM: client.role.value,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(
            claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"}
        )
        return IssuedToken(token, self.ttl_seconds, client.role)

    # -- verifying ------------------------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS or not _TOKEN_SHAPE.fullmatch(token):
            raise TokenRejected("malformed", "the bearer token is not a compact JWT")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed", "the bearer token is not a readable JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenRejected("disallowed_algorithm", "only RS256 and ES256 tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("unknown_key", "the token names no key id (kid)")
        issuer = unverified.get("iss")
        external = self.external
        if issuer == self.issuer:
            key, audience = self.keys.key(kid), self.audience
        elif external is not None and issuer == external.issuer:
            key, audience = external.keys.key(kid), external.audience
        else:
            raise TokenRejected("unknown_issuer", "the token's issuer is not one telecrm trusts")
        if key is None:
            raise TokenRejected("unknown_key", "the issuer publishes no key with the token's kid")
        claims = self._checked_claims(token, key, algorithm, issuer, audience)
        if issuer == self.issuer:
            return self._own_principal(claims)
        assert external is not None
        return self._external_principal(claims, external)

    def _checked_claims(
        self, token: str, key: VerificationKey, algorithm: str, issuer: str, audience: str
    ) -> dict[str, Any]:
        if key.algorithm != algorithm:
            raise TokenRejected("disallowed_algorithm", "the token's alg does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=issuer,
                options={
                    "verify_exp": False,  # checked below on the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud", "sub"],
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong_audience", "the token is not meant for telecrm") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong_issuer", "the token's issuer does not match") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad_signature", "the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("missing_claim", f"the token has no {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("disallowed_algorithm", "the token's alg is not allowed") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed", "the token's claims cannot be read") from None
        now = self._clock.now().timestamp()
        expires = _timestamp(claims, "exp")
        assert expires is not None  # required above
        if now > expires + LEEWAY_SECONDS:
            raise TokenRejected("expired", "the token has expired; ask for a new one")
        not_before = _timestamp(claims, "nbf")
        if not_before is not None and now + LEEWAY_SECONDS < not_before:
            raise TokenRejected("not_yet_valid", "the token is not valid yet (nbf)")
        issued = _timestamp(claims, "iat")
        if issued is not None and issued > now + LEEWAY_SECONDS:
            raise TokenRejected("issued_in_future", "the token was issued in the future (iat)")
        return claims

    def _own_principal(self, claims: dict[str, Any]) -> Principal:
        client_id = claims.get("sub")
        with read_only(self._engine).connect() as conn:  # no SQLite write lock for a lookup
            client = get_client(conn, client_id) if isinstance(client_id, str) else None
        if client is None:
            raise TokenRejected("unknown_client", "the token's client does not exist")
        if client.disabled:
            raise TokenRejected("client_disabled", "the token's client is disabled")
        # The role is the client's as stored now, not as the token says.
        return Principal(client.client_id, client.role, self.issuer, external=False)

    def _external_principal(self, claims: dict[str, Any], issuer: ExternalIssuer) -> Principal:
        client_id = next(
            (
                claims[name]
                for name in ("client_id", "azp", "sub")
                if isinstance(claims.get(name), str)
            ),
            None,
        )
        if client_id is None or not _CLIENT_ID_SHAPE.fullmatch(client_id):
            raise TokenRejected("missing_claim", "the token names no usable client (client_id)")
        role = _role_from(claims.get(issuer.role_claim))
        return Principal(client_id, role, issuer.issuer, external=True)
