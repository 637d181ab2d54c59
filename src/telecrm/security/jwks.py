"""JSON Web Key Sets: which keys may verify access tokens, and a cache of an issuer's set.

Only two algorithms are ever accepted, RS256 and ES256, each pinned to its key type (an RSA key
of at least 2,048 bits, an EC key on P-256), so a token cannot pick its own algorithm: not
``none``, not HS256 with a public key as the HMAC secret (a symmetric ``oct`` key is never
loaded). An external issuer's set is fetched over HTTPS, kept for an hour, and fetched again
when a token names a key id it does not hold, at most once a minute, so a stream of tokens with
made-up key ids cannot make telecrm hammer the issuer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from telecrm.domain.clock import Clock
from telecrm.security.errors import SecurityError

ALLOWED_ALGORITHMS = ("RS256", "ES256")
MIN_RSA_BITS = 2048  # NIST SP 800-131A: RSA below 2,048 bits is disallowed for signatures
MAX_JWKS_BYTES = 256 * 1024
JWKS_MAX_AGE = timedelta(hours=1)
JWKS_REFETCH_INTERVAL = timedelta(minutes=1)
JWKS_TIMEOUT_SECONDS = 5.0


class JwksUnavailable(SecurityError):
    """The issuer's key set cannot be fetched or read: no token of that issuer can be checked."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str  # RS256 | ES256
    key: Any  # an RSA or EC public key object


def _algorithm_of(jwk: Mapping[str, Any]) -> str | None:
    kty, declared = jwk.get("kty"), jwk.get("alg")
    if kty == "RSA":
        implied = "RS256"
    elif kty == "EC" and jwk.get("crv") == "P-256":
        implied = "ES256"
    else:
        return None  # oct (HMAC) keys, other curves, OKP: never used to verify
    if declared is not None and declared != implied:
        return None
    if jwk.get("use") not in (None, "sig"):
        return None
    return implied


def verification_key(jwk: Mapping[str, Any]) -> VerificationKey | None:
    """The key a JWK describes, if it is one telecrm accepts for signatures; None otherwise."""
    kid = jwk.get("kid")
    algorithm = _algorithm_of(jwk)
    if not isinstance(kid, str) or not kid or len(kid) > 200 or algorithm is None:
        return None
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=algorithm).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    if algorithm == "RS256" and not (
        isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    ):
        return None
    if algorithm == "ES256" and not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    return VerificationKey(kid, algorithm, key)


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document by key id; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable('the key set is not a JSON object with a "keys" array')
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if isinstance(jwk, dict):
            found = verification_key(jwk)
            if found is not None:
                keys[found.kid] = found
    return keys


JwksFetcher = Callable[[str], Any]


def http_fetcher(client: httpx.Client | None = None) -> JwksFetcher:
    """Fetches a JWKS document with httpx (a given client, e.g. in-process in tests)."""
    http = client or httpx.Client(timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False)

    def fetch(url: str) -> Any:
        try:
            response = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JwksUnavailable(
                f"the key set at {url} cannot be fetched ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise JwksUnavailable(f"the key set at {url} answered HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksUnavailable(f"the key set at {url} is over {MAX_JWKS_BYTES} bytes")
        try:
            return response.json()
        except ValueError:
            raise JwksUnavailable(f"the key set at {url} is not JSON") from None

    return fetch


class JwksCache:
    """An issuer's keys, fetched on first use, after an hour, or for an unknown key id (≤ 1/min)."""

    def __init__(self, url: str, fetch: JwksFetcher, clock: Clock) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None
        self._failing = False
        self._lock = threading.Lock()
        self.fetches = 0  # how many times the set was fetched (tests and metrics)

    def _refresh(self, now: datetime) -> None:
        self._attempted_at = now
        self.fetches += 1
        self._keys = parse_jwks(self._fetch(self.url))
        self._fetched_at = now

    def key(self, kid: str) -> VerificationKey | None:
        """The key with this id, or None when the issuer does not publish it."""
        with self._lock:
            now = self._clock.now()
            stale = self._fetched_at is None or now - self._fetched_at >= JWKS_MAX_AGE
            may_refetch = (
                self._attempted_at is None or now - self._attempted_at >= JWKS_REFETCH_INTERVAL
            )
            if (stale or kid not in self._keys) and may_refetch:
                try:
                    self._refresh(now)
                    self._failing = False
                except JwksUnavailable:
                    self._failing = True
                    if kid not in self._keys:
                        raise
                    # A stale set still verifies the keys it holds while the issuer is down.
            elif self._failing and kid not in self._keys:
                # The kid may be new: say the issuer cannot be reached, not that the key is bad.
                raise JwksUnavailable(
                    f"the key set at {self.url} could not be fetched a moment ago; "
                    "retrying at most once a minute"
                )
            return self._keys.get(kid)
