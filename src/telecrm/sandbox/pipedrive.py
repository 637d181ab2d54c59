"""A Pipedrive stand-in speaking Pipedrive's API v1/v2 contract: auth, token limits, envelopes, faults.

`create_pipedrive_sandbox()` gives an ASGI app (wrapped in FaultInjector) plus its in-memory
company, fault plan and counters. Time is injected (`now`, `sleep`). Paths, bodies, limits and
error shapes follow docs/research crm-apis.md §3 (v2 for persons, organizations, deals,
activities and search; v1 for notes, custom field definitions, pipelines and stages); everything
under `/_sandbox` is ours, not Pipedrive's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from telecrm.sandbox import pipedrive_limits as pl
from telecrm.sandbox import pipedrive_store as ps
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

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path; POST oauth.pipedrive.com/oauth/token (§3.1)
ACCESS_TOKEN_TTL_S = 3600  # "expires_in": 3600 in the token response (§3.1)
ERROR_INFO = "Please check developers.pipedrive.com"  # error_info of §3.4's example body

Sleep = Callable[[float], Awaitable[None] | None]


class PipedriveSandboxConfig(BaseModel):
    """Who may call the sandbox company, and its limits (defaults: Lite plan, one seat)."""

    model_config = ConfigDict(extra="forbid")

    api_tokens: set[str] = Field(default_factory=lambda: {"pd-sandbox-api-token"})
    oauth_client_id: str = "sandbox-client-id"
    oauth_client_secret: str = "sandbox-client-secret"  # noqa: S105 - sandbox only
    refresh_tokens: set[str] = Field(default_factory=lambda: {"sandbox-refresh-token"})
    rotate_refresh_tokens: bool = True  # a refresh token is single-use (§3.1)
    access_token_ttl_seconds: float = Field(ACCESS_TOKEN_TTL_S, gt=0)
    daily_token_budget: int = Field(pl.DAILY_TOKEN_BUDGET, ge=1)
    burst_api_token: int = Field(pl.BURST_API_TOKEN, ge=1)
    burst_oauth: int = Field(pl.BURST_OAUTH, ge=1)
    burst_search: int = Field(pl.BURST_SEARCH, ge=1)
    window_seconds: float = Field(pl.BURST_WINDOW_S, gt=0)
    daily_writes_api_token: int = Field(pl.DAILY_WRITES_API_TOKEN, ge=1)
    search_lag_seconds: float = Field(0.0, ge=0)  # search index lag after a create (§3.2)
    deal_limit: int | None = Field(None, ge=0)  # plan cap: 403 feature_capping_deals_limit (§3.4)
    seed: int = 0


@dataclass(slots=True)
class PipedriveSandboxStats:
    """What the sandbox answered: requests by "METHOD path", limit refusals, errors."""

    requests: dict[str, int] = field(default_factory=dict)
    api_requests: int = 0
    token_requests: int = 0
    tokens_spent: int = 0
    rate_limited: int = 0
    errors_sent: int = 0
    dropped: int = 0
    unauthorized: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "api_requests": self.api_requests,
            "token_requests": self.token_requests, "tokens_spent": self.tokens_spent,
            "rate_limited": self.rate_limited, "errors_sent": self.errors_sent,
            "dropped": self.dropped, "unauthorized": self.unauthorized,
        }  # fmt: skip


@dataclass(slots=True)
class Reply:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


def ok(data: Any, status: int = 200, **additional: Any) -> Reply:
    return Reply(status, {"success": True, "data": data, "additional_data": additional or None})


def failure(status: int, error: str, code: str = "") -> Reply:
    body: dict[str, Any] = {
        "success": False, "error": error, "error_info": ERROR_INFO, "data": None,
        "additional_data": None,
    }  # fmt: skip
    if code:
        body["code"] = code
    return Reply(status, body)


_V2 = r"/api/v2/(?P<obj>persons|organizations|deals|activities)"
_FIELDS = r"/api/v1/(?P<fields>personFields|organizationFields|dealFields|activityFields)"
# (method, path pattern, handler, token cost)
ROUTES: list[tuple[str, re.Pattern[str], str, int]] = [
    ("GET", re.compile(rf"{_V2}/search"), "search", pl.COST_SEARCH),
    ("GET", re.compile(_V2), "list", pl.COST_GET_LIST),
    ("POST", re.compile(_V2), "create", pl.COST_WRITE),
    ("GET", re.compile(rf"{_V2}/(?P<id>\d+)"), "get", pl.COST_GET_ONE),
    ("PATCH", re.compile(rf"{_V2}/(?P<id>\d+)"), "update", pl.COST_WRITE),
    ("DELETE", re.compile(rf"{_V2}/(?P<id>\d+)"), "delete", pl.COST_DELETE),
    ("GET", re.compile(r"/api/v1/(?P<obj>notes)"), "list", pl.COST_GET_LIST),
    ("POST", re.compile(r"/api/v1/(?P<obj>notes)"), "create", pl.COST_WRITE),
    ("GET", re.compile(r"/api/v1/(?P<obj>notes)/(?P<id>\d+)"), "get", pl.COST_GET_ONE),
    ("PUT", re.compile(r"/api/v1/(?P<obj>notes)/(?P<id>\d+)"), "update", pl.COST_WRITE),
    ("DELETE", re.compile(r"/api/v1/(?P<obj>notes)/(?P<id>\d+)"), "delete", pl.COST_DELETE),
    ("GET", re.compile(_FIELDS), "list_fields", pl.COST_GET_LIST),
    ("POST", re.compile(_FIELDS), "create_field", pl.COST_WRITE),
    ("GET", re.compile(r"/api/v1/pipelines"), "list_pipelines", pl.COST_GET_LIST),
    ("POST", re.compile(r"/api/v1/pipelines"), "create_pipeline", pl.COST_WRITE),
    ("GET", re.compile(r"/api/v1/stages"), "list_stages", pl.COST_GET_LIST),
    ("POST", re.compile(r"/api/v1/stages"), "create_stage", pl.COST_WRITE),
]
# What a list may be filtered by (v2 GET /activities, v1 GET /notes: crm-apis.md §3.2).
LIST_FILTERS = {"activities": ("person_id", "deal_id", "org_id"),
                "notes": ("person_id", "deal_id", "org_id")}  # fmt: skip
WRITES = {"POST", "PUT", "PATCH"}  # PATCH counted with POST/PUT (§3.3 names POST/PUT; UNCONFIRMED)


class PipedriveSandbox:
    """One sandbox Pipedrive company. `app` is what uvicorn or `sandbox_client` serves."""

    def __init__(
        self, config: PipedriveSandboxConfig, *, now: Callable[[], float], sleep: Sleep
    ) -> None:
        self.config = config
        self.now = now
        self._sleep = sleep
        self.faults = FaultPlan()
        self.app = FaultInjector(self._asgi)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Empty the company, the limits, the issued tokens and the counters."""
        with self._lock:
            c = self.config
            self.store = ps.Company(self.now(), seed=c.seed)
            self.limits = pl.CompanyLimits(
                c.daily_token_budget, {"api_token": c.burst_api_token, "oauth": c.burst_oauth},
                c.burst_search, c.window_seconds, c.daily_writes_api_token,
            )  # fmt: skip
            self.stats = PipedriveSandboxStats()
            self.access_tokens: dict[str, float] = {}
            self.refresh_tokens = set(c.refresh_tokens)
            self._random = random.Random(c.seed)

    # -- conveniences for tests -----------------------------------------------------------------
    def records(self, obj: str) -> list[dict[str, Any]]:
        """Live (not deleted) records of `obj` as v2 JSON."""
        with self._lock:
            return [self.store.record_json(obj, r) for r in self.store.live(obj)]

    def flat_records(self, obj: str) -> list[dict[str, Any]]:
        """Records as a person reads them in Pipedrive's screens: custom fields by name, the
        primary email and phone, pipeline and stage by name, and an activity's or note's
        `[telecrm:field:key]` marker as that field (what the agreement check compares)."""
        with self._lock:
            fields = self.store.fields.get(obj, [])
            names = {f["key"]: f["name"] for f in fields}
            labels = {
                (f["key"], o["id"]): o["label"] for f in fields for o in f.get("options") or []
            }
            pipelines = {p["id"]: p["name"] for p in self.store.pipelines.values()}
            stages = {s["id"]: s["name"] for s in self.store.stages.values()}
            out = []
            for r in (self.store.record_json(obj, r) for r in self.store.live(obj)):
                row = {k: v for k, v in r.items() if k != "custom_fields"}
                row.update(
                    {
                        names.get(k, k): labels.get((k, v), v)
                        for k, v in (r.get("custom_fields") or {}).items()
                    }
                )
                for plural, single in (("emails", "email"), ("phones", "phone")):
                    items = row.pop(plural, None) or []
                    primary = next(
                        (i for i in items if i.get("primary")), items[0] if items else None
                    )
                    row[single] = primary.get("value") if primary else None
                if "pipeline_id" in row:
                    row["pipeline_id"] = pipelines.get(row["pipeline_id"], row["pipeline_id"])
                if "stage_id" in row:
                    row["stage_id"] = stages.get(row["stage_id"], row["stage_id"])
                text = ps.MARKED_TEXT.get(obj)
                if text is not None and isinstance(row.get(text), str):
                    row[text], found = ps.split_markers(row[text])
                    row.update(found)
                out.append(row)
            return out

    def field_key(self, obj: str, name: str) -> str | None:
        """The 40-char hash key of the custom field of `obj` called `name`."""
        with self._lock:
            return next((f["key"] for f in self.store.fields[obj] if f["name"] == name), None)

    # -- ASGI -----------------------------------------------------------------------------------
    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        path = request.url.path
        with self._lock:
            label = f"{request.method} {path}"
            self.stats.requests[label] = self.stats.requests.get(label, 0) + 1
        drop = False
        if path.startswith(ADMIN_PREFIX):
            reply = self._admin(request.method, path, raw)
        elif path == TOKEN_PATH and request.method == "POST":
            reply = self._token(request, raw)
        else:
            await inject_latency(self.faults, self._sleep)
            reply, drop = self._api(request, raw)
        response = make_response(reply.status, reply.body, reply.headers)
        if drop:
            with self._lock:
                self.stats.dropped += 1
        await respond(scope, receive, send, response, drop=drop)

    def _api(self, request: Request, raw: bytes) -> tuple[Reply, bool]:
        with self._lock:
            self.stats.api_requests += 1
            now = self.now()
            who = self._authenticate(request, now)
            if isinstance(who, Reply):
                self.stats.unauthorized += 1
                return who, False
            method, path = request.method, request.url.path
            route = next(((h, m.groupdict(), cost) for verb, pattern, h, cost in ROUTES
                          if verb == method and (m := pattern.fullmatch(path))), None)  # fmt: skip
            search, write = route is not None and route[0] == "search", method in WRITES
            fault = self.faults.draw()
            if fault == "storm":
                return self._rate_limited(pl.Refusal("burst", 2), now, who, search, write), False
            if fault == "error":
                self.stats.errors_sent += 1
                status = self._random.choice((500, 502, 503))
                return failure(status, "Internal server error"), False
            if route is None:
                return failure(404, f"Unknown method or path: {method} {path}"), False
            handler, params, cost = route
            refusal = self.limits.admit(now, who, cost, search=search, write=write)
            if refusal is not None:
                return self._rate_limited(refusal, now, who, search, write), False
            self.stats.tokens_spent += cost
            reply = self._dispatch(handler, params, request.query_params, raw, now)
            reply.headers.update(self.limits.headers(now, who, search=search, write=write))
            return reply, fault == "drop"

    def _rate_limited(
        self, refusal: pl.Refusal, now: float, who: str, search: bool, write: bool
    ) -> Reply:
        self.stats.rate_limited += 1
        message = {
            "daily_tokens": "Daily API token budget exhausted",  # body text UNCONFIRMED (§3.3)
            "daily_writes": "Daily POST/PUT request limit reached",
        }.get(refusal.reason, "Too many requests")
        reply = failure(429, message)
        reply.headers.update(self.limits.headers(now, who, search=search, write=write))
        reply.headers["x-ratelimit-remaining"] = "0"
        reply.headers["Retry-After"] = str(refusal.retry_after)  # old docs promised it (§3.3)
        if refusal.reason.startswith("daily"):
            reply.headers["x-ratelimit-reset"] = str(refusal.retry_after)
        return reply

    def _authenticate(self, request: Request, now: float) -> str | Reply:
        """ "api_token" or "oauth" for a good credential, else Pipedrive's 401 (§3.1, §3.4)."""
        token = request.headers.get("x-api-token") or request.query_params.get("api_token")
        if token is not None:
            return "api_token" if token in self.config.api_tokens else failure(401, "Invalid token")
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return failure(401, "Invalid token: missing or malformed authorization header")
        expires = self.access_tokens.get(header[7:].strip())
        if expires is not None and now < expires:
            return "oauth"
        return failure(401, "Invalid token: access token expired" if expires else "Invalid token")

    def _token(self, request: Request, raw: bytes) -> Reply:
        """The refresh_token grant; client auth by Basic header or form fields (§3.1)."""
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                client_id = secret = None
        with self._lock:
            self.stats.token_requests += 1
            c = self.config
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("application/x-www-form-urlencoded"):
                problem = (
                    "invalid_request",
                    "Invalid request: content must be application/x-www-form-urlencoded",
                )
            elif "grant_type" not in form:
                problem = ("invalid_request", "Missing parameter: grant_type")
            elif client_id != c.oauth_client_id or secret != c.oauth_client_secret:
                problem = ("invalid_client", "Invalid client: client is invalid")
            elif (
                form["grant_type"] != "refresh_token"
                or form.get("refresh_token") not in self.refresh_tokens
            ):
                problem = ("invalid_grant", "Invalid grant: refresh_token is invalid")
            else:
                refresh = form["refresh_token"]
                if c.rotate_refresh_tokens:
                    self.refresh_tokens.discard(refresh)
                    refresh = f"sandbox-rt-{self._random.getrandbits(64):016x}"
                    self.refresh_tokens.add(refresh)
                token = f"sandbox-at-{self._random.getrandbits(64):016x}"
                self.access_tokens[token] = self.now() + c.access_token_ttl_seconds
                body = {
                    "access_token": token, "token_type": "Bearer", "refresh_token": refresh,
                    "expires_in": int(c.access_token_ttl_seconds), "scope": "base,deals:full,contacts:full",
                    "api_domain": str(request.base_url).rstrip("/"),  # field name UNCONFIRMED (§3)
                }  # fmt: skip
                return Reply(200, body)
            # OAuth-style error body: Pipedrive's messages (§3.1), the key names UNCONFIRMED
            return Reply(400, {"error": problem[0], "error_description": problem[1]})

    def _dispatch(
        self, handler: str, params: dict[str, str], query: Any, raw: bytes, now: float
    ) -> Reply:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return failure(400, "Invalid JSON in request body")
        try:
            result: Reply = getattr(self, f"_h_{handler}")(params, query, body, now)
            return result
        except ps.Invalid as exc:
            named = exc.status != 400 or exc.field in exc.message
            return failure(
                exc.status, exc.message if named else f"{exc.field}: {exc.message}", exc.code
            )

    # -- handlers (under the lock) --------------------------------------------------------------
    def _h_search(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        obj = p["obj"]
        if obj not in ps.SEARCHABLE:
            raise ps.Invalid("obj", f"Search is not available for {obj}", status=404)
        term, exact = query.get("term", ""), query.get("exact_match") == "true"
        if len(term) < (1 if exact else 2):
            raise ps.Invalid("term", "term must be at least 2 characters (1 with exact_match)")
        default = "custom_fields,name,email,phone,notes,title,address"
        fields = set((query.get("fields") or default).split(","))
        limit = min(int(query.get("limit") or 100), 500)  # limit up to 500 (§3.2)
        hits = self.store.search(obj, term, fields, exact, now - self.config.search_lag_seconds)
        items = []
        for record in hits[:limit]:
            item = self.store.record_json(obj, record)
            item["custom_fields"] = [v for v in item["custom_fields"].values() if v is not None]
            items.append({"result_score": 1.0, "item": {"type": obj[:-1], **item}})
        return ok({"items": items}, next_cursor=None)

    def _h_list(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        """v2 lists (cursor pages) and v1 notes (start/limit pages), filtered by link ids."""
        obj, v1 = p["obj"], p["obj"] == "notes"
        filters: dict[str, int] = {}
        for name in LIST_FILTERS.get(obj, ()):
            raw = query.get(name)
            if raw is not None:
                if not raw.isdigit():
                    raise ps.Invalid(name, f"{name} must be an integer")
                filters[name] = int(raw)
        live = self.store.linked(obj, filters)
        cursor = query.get("start" if v1 else "cursor") or "0"
        if not cursor.isdigit():
            raise ps.Invalid("cursor", "Invalid cursor")
        start, limit = int(cursor), min(int(query.get("limit") or 100), 500)
        page = [self.store.record_json(obj, r) for r in live[start : start + limit]]
        more = start + limit < len(live)
        if v1:
            return ok(page, pagination={"start": start, "limit": limit, "more_items_in_collection": more,
                                        **({"next_start": start + limit} if more else {})})  # fmt: skip
        return ok(page, next_cursor=str(start + limit) if more else None)

    def _h_get(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        return ok(self.store.record_json(p["obj"], self.store.get(p["obj"], int(p["id"]))))

    def _h_create(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        limit = self.config.deal_limit
        if p["obj"] == "deals" and limit is not None and len(self.store.live("deals")) >= limit:
            raise ps.Invalid(
                "deals", "Deal limit reached for your plan", 403, "feature_capping_deals_limit"
            )
        record = self.store.create(p["obj"], body, now)
        return ok(
            self.store.record_json(p["obj"], record), status=201 if p["obj"] == "notes" else 200
        )

    def _h_update(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        record = self.store.update(p["obj"], int(p["id"]), body, now)
        return ok(self.store.record_json(p["obj"], record))

    def _h_delete(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        self.store.delete(p["obj"], int(p["id"]))
        return ok({"id": int(p["id"])})

    def _h_list_fields(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        fields = [dict(f) for f in self.store.fields[ps.FIELD_LISTS[p["fields"]]]]
        start, limit = int(query.get("start") or 0), min(int(query.get("limit") or 100), 500)
        page, more = fields[start : start + limit], start + limit < len(fields)
        return ok(page, pagination={"start": start, "limit": limit, "more_items_in_collection": more,
                                    **({"next_start": start + limit} if more else {})})  # fmt: skip

    def _h_create_field(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        return ok(dict(self.store.create_field(ps.FIELD_LISTS[p["fields"]], body)), status=201)

    def _h_list_pipelines(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        return ok([dict(x) for x in self.store.pipelines.values()])

    def _h_create_pipeline(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        if not isinstance(body, dict) or not str(body.get("name") or "").strip():
            raise ps.Invalid("name", "Pipeline name must be given")
        return ok(dict(self.store.add_pipeline(str(body["name"]))), status=201)

    def _h_list_stages(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        wanted = query.get("pipeline_id")
        stages = [dict(s) for s in self.store.stages.values()
                  if wanted is None or str(s["pipeline_id"]) == wanted]  # fmt: skip
        return ok(stages)

    def _h_create_stage(self, p: dict[str, str], query: Any, body: Any, now: float) -> Reply:
        if not isinstance(body, dict):
            raise ps.Invalid("body", "Request body must be a JSON object")
        return ok(dict(self.store.add_stage(body.get("pipeline_id"), body.get("name"))), status=201)

    # -- /_sandbox admin --------------------------------------------------------------------------
    def _admin(self, method: str, path: str, raw: bytes) -> Reply:
        rest = path[len(ADMIN_PREFIX) :]
        if method == "GET" and rest.startswith("/records/"):
            obj = rest[len("/records/") :]
            if obj not in ps.OBJECTS:
                return Reply(404, {"detail": "unknown object"})
            return Reply(200, {"results": self.records(obj)})
        if method == "GET" and rest.startswith("/flat/"):  # field names, not hash keys
            obj = rest[len("/flat/") :]
            if obj not in ps.OBJECTS:
                return Reply(404, {"detail": "unknown object"})
            return Reply(200, {"results": self.flat_records(obj)})
        if method == "GET" and rest == "/stats":
            with self._lock:
                return Reply(200, self.stats.as_json() | {"tokens_left": self.limits.tokens_left})
        if method == "POST" and rest == "/faults":
            return Reply(*set_faults(self.faults, raw))
        if method == "POST" and rest == "/reset":
            self.reset()
            return Reply(200, {"reset": True})
        return Reply(404, {"detail": "unknown admin path"})


def create_pipedrive_sandbox(
    config: PipedriveSandboxConfig | None = None,
    *,
    now: Callable[[], float] = time.time,
    sleep: Sleep = asyncio.sleep,
) -> PipedriveSandbox:
    """A fresh sandbox company: `.app` to serve, `.store`, `.faults` and `.stats` to inspect."""
    return PipedriveSandbox(config or PipedriveSandboxConfig(), now=now, sleep=sleep)


def serve_pipedrive_sandbox(
    host: str, port: int, config: PipedriveSandboxConfig | None = None
) -> None:
    """Run the sandbox under uvicorn until interrupted (for `telecrm sandbox pipedrive`)."""
    serve_app(create_pipedrive_sandbox(config).app, host, port)
