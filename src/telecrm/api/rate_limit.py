"""Per-client request budgets for the HTTP API: token buckets per (class, identity), as ASGI middleware.

Three classes, each with its own buckets, so one never spends another's budget:

- `intake`: the signed webhooks (`/v1/events`, `/v1/messages`, `/webhooks/...`), keyed by client
  address. The secret that verified a request is known only after its body (up to 5 MB) is read
  and HMAC'd, the very work a limit is meant to spare, so it is not used as the identity;
- `api`: everything else (the read/admin API, JWKS, docs, unknown paths), keyed by the
  authenticated client (`request.state.principal.client_id`) when known, else by client address.
  Authentication runs in the routes, after this middleware, so a bearer token's first request
  counts against its address and, once the route has accepted the token, its later requests
  against its client (`KnownTokens`). A principal set by a middleware outside this one is used
  at once;
- `token`: `POST /oauth/token`, keyed by client address, with a small budget against secret guessing.

`/healthz` and `/metrics` are never limited: a refused probe would take a healthy process out.
Buckets live in this process's memory: with `serve --workers N` each process has its own.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telecrm.api.problems import problem_response
from telecrm.domain.clock import Clock, SystemClock

if TYPE_CHECKING:
    from fastapi import FastAPI
    from prometheus_client import Counter

    from telecrm.bootstrap import Runtime
    from telecrm.settings import Settings

LimitClass = Literal["intake", "api", "token"]
INTAKE_PATHS = frozenset({"/v1/events", "/v1/messages"})
INTAKE_PREFIX = "/webhooks/"
TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})
IPV6_PREFIX = 64  # one subscriber's allocation (RFC 6177): rotating inside it earns no new bucket


@dataclass(frozen=True, slots=True)
class Limit:
    """`rate` requests per second on average, up to `burst` back to back."""

    rate: float
    burst: int

    @property
    def window_seconds(self) -> int:
        """How long an empty bucket takes to fill: the policy's window, in whole seconds."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # requests that may follow at once
    reset_seconds: int  # until the bucket is full again (refused: until the next request may pass)


class TokenBuckets:
    """One class's buckets as a generic cell rate algorithm: per identity, the theoretical arrival
    time (TAT) of its next request. Thread-safe; time is read from `clock` (monotonic seconds).

    A bucket whose TAT has passed is full, the same as no bucket, so idle identities are dropped
    without changing any answer; `max_identities` caps the table, least recently seen first."""

    def __init__(
        self, limit: Limit, clock: Callable[[], float], *, max_identities: int = 50_000
    ) -> None:
        if limit.rate <= 0 or limit.burst < 1:
            raise ValueError("a bucket needs a rate above 0 and a burst of at least 1")
        if max_identities < 1:
            raise ValueError("max_identities must be at least 1")
        self.limit = limit
        self._clock = clock
        self._interval = 1.0 / limit.rate
        self._tolerance = limit.burst * self._interval
        # Sums of `interval` drift by a few ulps; without slack the last of a burst could be refused.
        self._slack = self._interval * 1e-6
        self._max = max_identities
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tat)

    def take(self, identity: str) -> Decision:
        now = self._clock()
        with self._lock:
            tat = self._tat.get(identity)
            if tat is None:
                self._forget_idle(now)
                tat = now
            else:
                self._tat.move_to_end(identity)  # busy ones stay; rotation evicts idle ones
                tat = max(tat, now)
            next_tat = tat + self._interval
            allowed_from = next_tat - self._tolerance
            if allowed_from > now + self._slack:  # refusals spend nothing
                wait = max(1, math.ceil(allowed_from - now))
                return Decision(False, 0, wait)
            self._remember(identity, next_tat)
        remaining = int((self._tolerance - (next_tat - now)) / self._interval + 1e-6)
        return Decision(True, max(0, remaining), math.ceil(next_tat - now - self._slack))

    def _remember(self, identity: str, tat: float) -> None:
        self._tat[identity] = tat
        while len(self._tat) > self._max:
            self._tat.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        # Least recently seen first; stops at the first bucket still filling (amortised O(1)).
        while self._tat:
            oldest, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[oldest]


def limit_class_of(path: str) -> LimitClass | None:
    if path in INTAKE_PATHS or path.startswith(INTAKE_PREFIX):
        return "intake"
    if path == TOKEN_PATH:
        return "token"
    if path in UNLIMITED_PATHS:
        return None
    return "api"


@functools.lru_cache(maxsize=4096)
def _ipv6_identity(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))


def identity_of(limit_class: LimitClass, scope: Scope) -> str:
    """Who a request's budget belongs to: `client:<id>` for an authenticated API client, else
    `addr:<address>` (IPv6 by /64). Never logged, never in a response: an address identifies."""
    if limit_class == "api":
        principal = scope.get("state", {}).get("principal")
        client_id = getattr(principal, "client_id", None)
        if client_id:
            return f"client:{client_id}"
    client = scope.get("client")
    host = client[0] if client else "unknown"
    return "addr:" + (_ipv6_identity(host) if ":" in host else host)


class KnownTokens:
    """Bearer tokens the app has already authenticated, by SHA-256, with their client id: a
    token's later requests draw on its client's `api` budget wherever they come from.

    Learnt from `scope["state"]["principal"]` once the route's own authentication set it, so the
    limiter verifies nothing itself and a forged token never gets in; a token the app stops
    accepting (expired, revoked) is forgotten on its next refusal, and any after `ttl_seconds` unused."""

    def __init__(
        self, clock: Callable[[], float], *, ttl_seconds: float = 300.0, max_tokens: int = 10_000
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_tokens
        self._clients: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def client_of(self, digest: bytes) -> str | None:
        with self._lock:
            known = self._clients.get(digest)
            if known is None:
                return None
            if known[1] <= self._clock():
                del self._clients[digest]
                return None
            return known[0]

    def settle(self, digest: bytes, scope: Scope) -> None:
        """After the app answered: remember the token's client, or forget a token it refused."""
        client_id = getattr(scope.get("state", {}).get("principal"), "client_id", None)
        with self._lock:
            if not client_id:
                self._clients.pop(digest, None)
                return
            self._clients[digest] = (str(client_id), self._clock() + self._ttl)
            self._clients.move_to_end(digest)
            while len(self._clients) > self._max:
                self._clients.popitem(last=False)


def bearer_digest(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            if value[:7].lower() == b"bearer " and len(value) > 7:
                return hashlib.sha256(value[7:].strip()).digest()
            return None
    return None


def limits_from(settings: Settings) -> dict[LimitClass, Limit]:
    """The enabled classes (rate 0 turns a class off)."""
    configured: dict[LimitClass, Limit] = {
        "intake": Limit(settings.rate_limit_intake_rate, settings.rate_limit_intake_burst),
        "api": Limit(settings.rate_limit_api_rate, settings.rate_limit_api_burst),
        "token": Limit(settings.rate_limit_token_rate, settings.rate_limit_token_burst),
    }
    return {name: limit for name, limit in configured.items() if limit.rate > 0}


class ForwardSeconds:
    """Seconds from an injected clock that never run backwards: a test may set its clock back,
    and a bucket that saw time reverse would refuse until the clock caught up."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last: float | None = None
        self._elapsed = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        reading = self._clock.now().timestamp()
        with self._lock:
            if self._last is not None and reading > self._last:
                self._elapsed += reading - self._last
            self._last = reading
            return self._elapsed


def monotonic_seconds(clock: Clock) -> Callable[[], float]:
    """`time.monotonic` in production; the injected clock, moving forward only, in tests."""
    if isinstance(clock, SystemClock):
        return time.monotonic
    return ForwardSeconds(clock)


# Header syntax from draft-ietf-httpapi-ratelimit-headers-11 (May 2026), §3 and §4: Structured
# Field lists `"name";q=<quota>;w=<window s>` and `"name";r=<available>;t=<effective window s>`.
# A token bucket is advertised as q = its burst over w = the time an empty bucket takes to fill.
def _policy_header(name: str, limit: Limit) -> bytes:
    window = limit.window_seconds
    quota = max(limit.burst, round(limit.rate * window))
    return f'"{name}";q={quota};w={window}'.encode()


def _service_limit_header(name: str, decision: Decision) -> bytes:
    return f'"{name}";r={decision.remaining};t={decision.reset_seconds}'.encode()


class RateLimitMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): one bucket lookup per request, headers added on the way
    out, and a 429 problem+json with `Retry-After` before the app sees an over-budget request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[LimitClass, Limit],
        clock: Callable[[], float],
        refused: Counter | None = None,
        max_identities: int = 50_000,
    ) -> None:
        self.app = app
        self.buckets = {
            name: TokenBuckets(limit, clock, max_identities=max_identities)
            for name, limit in limits.items()
        }
        self._policies = {name: _policy_header(name, limit) for name, limit in limits.items()}
        self._refused = refused
        self.tokens = KnownTokens(clock, max_tokens=max_identities)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_class = limit_class_of(scope["path"])
        buckets = self.buckets.get(limit_class) if limit_class else None
        if limit_class is None or buckets is None:
            await self.app(scope, receive, send)
            return
        identity = identity_of(limit_class, scope)
        token = bearer_digest(scope) if limit_class == "api" else None
        if token is not None and identity.startswith("addr:"):
            client_id = self.tokens.client_of(token)
            if client_id is not None:
                identity = f"client:{client_id}"
        decision = buckets.take(identity)
        headers = [
            (b"ratelimit-policy", self._policies[limit_class]),
            (b"ratelimit", _service_limit_header(limit_class, decision)),
        ]
        if not decision.allowed:
            if self._refused is not None:
                self._refused.labels(limit_class).inc()
            await self._refuse(limit_class, buckets.limit, decision, headers)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
                if token is not None:
                    self.tokens.settle(token, scope)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _refuse(
        limit_class: LimitClass,
        limit: Limit,
        decision: Decision,
        headers: list[tuple[bytes, bytes]],
    ) -> Response:
        # No `instance`: a path may carry an identifier, and the detail names the class only.
        policies_violated: dict[str, Any] = {"violated-policies": [limit_class]}  # draft §5.1
        response = problem_response(
            429,
            "rate_limited",
            "Too many requests",
            f"over the {limit_class} rate limit ({limit.rate:g} requests per second, bursts of "
            f"{limit.burst}); retry after {decision.reset_seconds} s",
            **policies_violated,
        )
        response.raw_headers.extend([(b"retry-after", str(decision.reset_seconds).encode())])
        response.raw_headers.extend(headers)
        return response


def install_rate_limits(app: FastAPI, runtime: Runtime) -> None:
    """Wire the limits from settings; a class at rate 0 is left unlimited."""
    settings = runtime.settings
    app.add_middleware(
        RateLimitMiddleware,
        limits=limits_from(settings),
        clock=monotonic_seconds(runtime.clock),
        refused=runtime.metrics.rate_limited,
        max_identities=settings.rate_limit_max_identities,
    )
