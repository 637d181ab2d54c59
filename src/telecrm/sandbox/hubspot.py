"""A HubSpot stand-in speaking HubSpot's CRM v3/v4 contract: auth, limits, batches, faults.

`create_hubspot_sandbox()` gives an ASGI app (wrapped in FaultInjector) plus its in-memory
account, fault plan and counters, so tests compare the CRM's final state with telecrm's. Time is
injected (`now`, `sleep`) so tests move a clock instead of sleeping. Paths, bodies and limits
follow docs/research crm-apis.md §1; everything under `/_sandbox` is ours, not HubSpot's.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from telecrm.sandbox import hubspot_batches as hb
from telecrm.sandbox import hubspot_store as hs
from telecrm.sandbox.faults import (
    ADMIN_PREFIX,
    FaultInjector,
    FaultPlan,
    inject_latency,
    make_response,
    respond,
    serve_app,
    set_faults,
)

TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a path, not a secret; OAuth v1 token endpoint (crm-apis.md §1.1)
ACCESS_TOKEN_TTL_S = 1800  # expires_in in HubSpot's token examples (crm-apis.md §1.1)
BURST_LIMIT = 100  # private app, Free/Starter: 100 per 10 s (crm-apis.md §1.3, UNCONFIRMED)
BURST_WINDOW_S = 10.0  # TEN_SECONDLY_ROLLING (crm-apis.md §1.3)
DAILY_LIMIT = 250_000  # private app, Free/Starter (crm-apis.md §1.3, UNCONFIRMED)
SECONDS_PER_DAY = 86_400  # the sandbox account's time zone is UTC: the day resets at 00:00 UTC

Sleep = Callable[[float], Awaitable[None] | None]


class HubSpotSandboxConfig(BaseModel):
    """Who may call the sandbox account and how much."""

    model_config = ConfigDict(extra="forbid")

    private_app_tokens: set[str] = Field(default_factory=lambda: {"pat-na1-sandbox"})
    oauth_client_id: str = "sandbox-client-id"
    oauth_client_secret: str = "sandbox-client-secret"  # noqa: S105 - sandbox only
    refresh_tokens: set[str] = Field(default_factory=lambda: {"sandbox-refresh-token"})
    access_token_ttl_seconds: float = Field(ACCESS_TOKEN_TTL_S, gt=0)
    burst_limit: int = Field(BURST_LIMIT, ge=1)
    window_seconds: float = Field(BURST_WINDOW_S, gt=0)
    daily_limit: int = Field(DAILY_LIMIT, ge=1)
    multi_status: bool = False  # batch/create: 207 per input (True) or 400 for the batch
    shuffle_results: bool = True
    seed: int = 0


@dataclass(slots=True)
class HubSpotSandboxStats:
    """What the sandbox answered: requests by "METHOD path", limit refusals, errors."""

    requests: dict[str, int] = field(default_factory=dict)
    api_requests: int = 0  # counted against the limits (not admin, not token calls)
    token_requests: int = 0
    rate_limited: int = 0  # 429s sent (limits and storms)
    errors_sent: int = 0  # injected 5xx
    dropped: int = 0
    unauthorized: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "api_requests": self.api_requests,
            "token_requests": self.token_requests, "rate_limited": self.rate_limited,
            "errors_sent": self.errors_sent, "dropped": self.dropped, "unauthorized": self.unauthorized,
        }  # fmt: skip


class AccountLimits:
    """The rolling burst window and the daily counter every token of the account shares."""

    def __init__(self, config: HubSpotSandboxConfig) -> None:
        self.config = config
        self.hits: deque[float] = deque()
        self.day = -1
        self.day_count = 0

    def admit(self, now: float) -> str | None:
        """Count one request; the refusing policy's name when it is over a limit."""
        day = int(now // SECONDS_PER_DAY)
        if day != self.day:
            self.day, self.day_count = day, 0
        while self.hits and self.hits[0] <= now - self.config.window_seconds:
            self.hits.popleft()
        if self.day_count >= self.config.daily_limit:
            return "DAILY"
        if len(self.hits) >= self.config.burst_limit:
            return "TEN_SECONDLY_ROLLING"
        self.hits.append(now)
        self.day_count += 1
        return None

    def headers(self, *, daily: bool) -> dict[str, str]:
        c = self.config
        out = {
            "X-HubSpot-RateLimit-Max": str(c.burst_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, c.burst_limit - len(self.hits))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(c.window_seconds * 1000)),
        }
        if daily:  # OAuth calls omit the Daily headers (crm-apis.md §1.3)
            out["X-HubSpot-RateLimit-Daily"] = str(c.daily_limit)
            out["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, c.daily_limit - self.day_count))
        return out


@dataclass(slots=True)
class Reply:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


Route = tuple[str, re.Pattern[str], str]
_OBJ = r"(?P<obj>[\w-]+)"
ROUTES: list[Route] = [
    (
        "POST",
        re.compile(rf"/crm/v3/objects/{_OBJ}/batch/(?P<op>upsert|update|create|read|archive)"),
        "batch",
    ),
    ("GET", re.compile(rf"/crm/v3/objects/{_OBJ}/(?P<id>[^/]+)"), "get_record"),
    (
        "POST",
        re.compile(r"/crm/v4/associations/(?P<a>[\w-]+)/(?P<b>[\w-]+)/batch/associate/default"),
        "associate",
    ),
    ("GET", re.compile(r"/crm/v4/associations/(?P<a>[\w-]+)/(?P<b>[\w-]+)/labels"), "labels"),
    (
        "GET",
        re.compile(r"/crm/v4/objects/(?P<a>[\w-]+)/(?P<id>[^/]+)/associations/(?P<b>[\w-]+)"),
        "associations",
    ),
    ("GET", re.compile(rf"/crm/v3/properties/{_OBJ}/groups/(?P<name>[^/]+)"), "get_group"),
    ("POST", re.compile(rf"/crm/v3/properties/{_OBJ}/groups"), "create_group"),
    ("GET", re.compile(rf"/crm/v3/properties/{_OBJ}/(?P<name>[^/]+)"), "get_property"),
    ("GET", re.compile(rf"/crm/v3/properties/{_OBJ}"), "list_properties"),
    ("POST", re.compile(rf"/crm/v3/properties/{_OBJ}"), "create_property"),
]


class HubSpotSandbox:
    """One sandbox HubSpot account. `app` is what uvicorn or `sandbox_client` serves."""

    def __init__(
        self, config: HubSpotSandboxConfig, *, now: Callable[[], float], sleep: Sleep
    ) -> None:
        self.config = config
        self.now = now
        self._sleep = sleep
        self.faults = FaultPlan()
        self.app = FaultInjector(self._asgi)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Empty the account, the limits, the issued tokens and the counters."""
        with self._lock:
            self.store = hs.Account(self.now())
            self.limits = AccountLimits(self.config)
            self.stats = HubSpotSandboxStats()
            self.access_tokens: dict[str, float] = {}
            self._random = random.Random(self.config.seed)

    # -- conveniences for tests -----------------------------------------------------------------
    def records(self, obj: str) -> list[dict[str, Any]]:
        with self._lock:
            return [hb.record_json(r) for r in self.store.records[obj].values()]

    def associations(self, from_obj: str, from_id: str, to_obj: str) -> list[str]:
        with self._lock:
            return self.store.associated(from_obj, from_id, to_obj)

    # -- ASGI -----------------------------------------------------------------------------------
    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        path = request.url.path
        with self._lock:
            label = f"{request.method} {path}"
            self.stats.requests[label] = self.stats.requests.get(label, 0) + 1
        if path.startswith(ADMIN_PREFIX):
            reply, drop = self._admin(request.method, path, raw), False
        elif path == TOKEN_PATH and request.method == "POST":
            reply, drop = self._token(raw), False
        else:
            await inject_latency(self.faults, self._sleep)
            reply, drop = self._api(request, raw)
        headers = {"X-HubSpot-Correlation-Id": self._uuid(), **reply.headers}
        if drop:
            with self._lock:
                self.stats.dropped += 1
        await respond(
            scope, receive, send, make_response(reply.status, reply.body, headers), drop=drop
        )

    def _uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _error(self, message: str, category: str) -> dict[str, Any]:
        return {
            "status": "error",
            "message": message,
            "correlationId": self._uuid(),
            "category": category,
        }

    def _rate_limited(self, policy: str) -> Reply:
        self.stats.rate_limited += 1
        which = "daily" if policy == "DAILY" else "ten_secondly_rolling"
        body = {
            "status": "error", "message": f"You have reached your {which} limit.", "errorType": "RATE_LIMIT",
            "correlationId": self._uuid(), "policyName": policy, "requestId": self._uuid(),
        }  # fmt: skip
        return Reply(
            429, body, self.limits.headers(daily=True) | {"X-HubSpot-RateLimit-Remaining": "0"}
        )

    def _api(self, request: Request, raw: bytes) -> tuple[Reply, bool]:
        with self._lock:
            self.stats.api_requests += 1
            now = self.now()
            auth = self._authenticate(request.headers.get("authorization", ""), now)
            if isinstance(auth, Reply):
                self.stats.unauthorized += 1
                return auth, False
            fault = self.faults.draw()
            if fault == "storm":
                return self._rate_limited("TEN_SECONDLY_ROLLING"), False
            if fault == "error":
                self.stats.errors_sent += 1
                status = self._random.choice((500, 502, 503))
                return Reply(
                    status, self._error("An internal error occurred.", "INTERNAL_ERROR")
                ), False
            policy = self.limits.admit(now)
            if policy is not None:
                return self._rate_limited(policy), False
            reply = self._dispatch(request.method, request.url.path, request.query_params, raw, now)
            reply.headers.update(self.limits.headers(daily=auth == "private"))
            return reply, fault == "drop"

    def _authenticate(self, header: str, now: float) -> str | Reply:
        """ "private" or "oauth" for a good bearer token, else HubSpot's 401."""
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if token in self.config.private_app_tokens:
            return "private"
        expires = self.access_tokens.get(token)
        if expires is not None and now < expires:
            return "oauth"
        if expires is not None:
            message = f"The OAuth token used to make this call expired {int(now - expires) // 60} minute(s) ago."
            return Reply(401, self._error(message, "EXPIRED_AUTHENTICATION"))
        message = "Authentication credentials not found. This API supports OAuth 2.0 authentication"
        return Reply(401, self._error(message, "INVALID_AUTHENTICATION"))

    def _token(self, raw: bytes) -> Reply:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        with self._lock:
            self.stats.token_requests += 1
            c = self.config
            if form.get("grant_type") != "refresh_token":
                problem = ("BAD_GRANT_TYPE", "grant_type must be refresh_token")
            elif form.get("client_id") != c.oauth_client_id:
                problem = ("BAD_CLIENT_ID", "missing or unknown client id")
            elif form.get("client_secret") != c.oauth_client_secret:
                problem = ("BAD_CLIENT_SECRET", "missing or invalid client secret")
            elif form.get("refresh_token") not in c.refresh_tokens:
                problem = ("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
            else:
                token = f"sandbox-at-{self._random.getrandbits(64):016x}"
                self.access_tokens[token] = self.now() + c.access_token_ttl_seconds
                body = {
                    "access_token": token, "refresh_token": form["refresh_token"],
                    "expires_in": int(c.access_token_ttl_seconds), "token_type": "bearer",
                }  # fmt: skip
                return Reply(200, body)
            status, message = problem
            return Reply(400, {"status": status, "message": message, "correlationId": self._uuid()})

    def _dispatch(self, method: str, path: str, query: Any, raw: bytes, now: float) -> Reply:
        for verb, pattern, route in ROUTES:
            match = pattern.fullmatch(path)
            if verb == method and match:
                name = route
                break
        else:
            return Reply(404, self._error(f"Unknown path {method} {path}", "OBJECT_NOT_FOUND"))
        params = match.groupdict()
        for key in ("obj", "a", "b"):
            if key in params:
                resolved = hs.object_name(params[key])
                if resolved is None:
                    return Reply(
                        400,
                        self._error(
                            f"Unable to infer object type from: {params[key]}", "VALIDATION_ERROR"
                        ),
                    )
                params[key] = resolved
        body: Any = None
        if method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return Reply(400, self._error("Invalid input JSON on line 1", "VALIDATION_ERROR"))
        handler: Callable[..., Reply] = getattr(self, f"_h_{name}")
        return handler(params, body, query, now)

    def _ctx(self, now: float) -> hb.BatchContext:
        shuffle = self._random.shuffle if self.config.shuffle_results else (lambda items: None)
        return hb.BatchContext(now=now, shuffle=shuffle, error=self._error)

    # -- handlers (under the lock) --------------------------------------------------------------
    def _h_batch(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        ctx, obj, op = self._ctx(now), p["obj"], p["op"]
        if op == "upsert":
            status, out = hb.batch_upsert(self.store, ctx, obj, body)
        elif op == "update":
            status, out = hb.batch_update(self.store, ctx, obj, body)
        elif op == "create":
            status, out = hb.batch_create(
                self.store, ctx, obj, body, multi_status=self.config.multi_status
            )
        elif op == "read":
            status, out = hb.batch_read(self.store, ctx, obj, body)
        else:
            status, out = hb.batch_archive(self.store, ctx, obj, body)
        return Reply(status, out)

    def _h_get_record(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        id_property = query.get("idProperty") or "hs_object_id"
        record = self.store.find_by(p["obj"], id_property, p["id"])
        if record is None:
            return Reply(
                404,
                self._error("Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"),
            )
        names = [n for n in (query.get("properties") or "").split(",") if n] or None
        return Reply(200, hb.record_json(record, names))

    def _h_associate(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        status, out = hb.batch_associate(self.store, self._ctx(now), p["a"], p["b"], body)
        return Reply(status, out)

    def _h_labels(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        type_id = hs.ASSOCIATION_TYPE_IDS.get((p["a"], p["b"]), 1)
        return Reply(
            200, {"results": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]}
        )

    def _h_associations(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        if p["id"] not in self.store.records[p["a"]]:
            return Reply(404, self._error("Object not found.", "OBJECT_NOT_FOUND"))
        type_id = hs.ASSOCIATION_TYPE_IDS.get((p["a"], p["b"]), 1)
        kinds = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
        results = [
            {"toObjectId": to, "associationTypes": kinds}
            for to in self.store.associated(p["a"], p["id"], p["b"])
        ]
        return Reply(200, {"results": results})

    def _h_get_group(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        group = self.store.groups[p["obj"]].get(p["name"])
        if group is None:
            return Reply(
                404, self._error(f"Unable to find property group {p['name']}", "OBJECT_NOT_FOUND")
            )
        return Reply(200, dict(group))

    def _h_create_group(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        if not isinstance(body, dict) or not body.get("name") or not body.get("label"):
            return Reply(
                400, self._error("Missing required fields: name, label", "VALIDATION_ERROR")
            )
        groups = self.store.groups[p["obj"]]
        if body["name"] in groups:
            return Reply(
                409, self._error(f"Property group '{body['name']}' already exists.", "CONFLICT")
            )
        groups[body["name"]] = {
            "name": body["name"], "label": body["label"], "displayOrder": int(body.get("displayOrder", -1)),
            "archived": False,
        }  # fmt: skip
        return Reply(201, dict(groups[body["name"]]))

    def _h_get_property(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        prop = self.store.properties[p["obj"]].get(p["name"])
        if prop is None:
            return Reply(
                404, self._error(f"Unable to find property {p['name']}", "OBJECT_NOT_FOUND")
            )
        return Reply(200, prop)

    def _h_list_properties(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        return Reply(200, {"results": list(self.store.properties[p["obj"]].values())})

    def _h_create_property(self, p: dict[str, str], body: Any, query: Any, now: float) -> Reply:
        if not isinstance(body, dict):
            return Reply(400, self._error("Invalid input JSON", "VALIDATION_ERROR"))
        problem = self.store.property_problem(p["obj"], body)
        if problem is not None:
            status, category, message = problem
            return Reply(status, self._error(message, category))
        prop = hs.property_json(body, now)
        self.store.properties[p["obj"]][body["name"]] = prop
        return Reply(201, prop)

    # -- /_sandbox admin --------------------------------------------------------------------------
    def _admin(self, method: str, path: str, raw: bytes) -> Reply:
        rest = path[len(ADMIN_PREFIX) :]
        if method == "GET" and rest.startswith("/records/"):
            obj = hs.object_name(rest[len("/records/") :])
            if obj is None:
                return Reply(404, {"detail": "unknown object"})
            return Reply(200, {"results": self.records(obj)})
        if method == "GET" and rest == "/stats":
            with self._lock:
                return Reply(200, self.stats.as_json())
        if method == "POST" and rest == "/faults":
            return Reply(*set_faults(self.faults, raw))
        if method == "POST" and rest == "/reset":
            self.reset()
            return Reply(200, {"reset": True})
        return Reply(404, {"detail": "unknown admin path"})


def create_hubspot_sandbox(
    config: HubSpotSandboxConfig | None = None,
    *,
    now: Callable[[], float] = time.time,
    sleep: Sleep = asyncio.sleep,
) -> HubSpotSandbox:
    """A fresh sandbox account: `.app` to serve, `.store`, `.faults` and `.stats` to inspect."""
    return HubSpotSandbox(config or HubSpotSandboxConfig(), now=now, sleep=sleep)


def serve_hubspot_sandbox(host: str, port: int, config: HubSpotSandboxConfig | None = None) -> None:
    """Run the sandbox under uvicorn until interrupted (for `telecrm sandbox hubspot`)."""
    serve_app(create_hubspot_sandbox(config).app, host, port)
