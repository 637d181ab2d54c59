"""A Dataverse (Dynamics 365) environment in process: Entra ID tokens, the Web API, `$batch`, metadata.

Faithful to the contract in /work/shared/research/crm-apis.md §4 and Microsoft's own docs
(MicrosoftDocs/powerapps-docs: developer/data-platform/api-limits.md,
webapi/execute-batch-operations-using-web-api.md): client-credentials tokens for the scope
`https://{org}/.default` that expire (§4.1); upsert by alternate key with PATCH, `If-Match: *`
(update only, 404) and `If-None-Match: *` (create only, 412), 204 + `OData-EntityId` (§4.2);
lookups bound with `nav@odata.bind`; `$batch` of at most 1,000 operations whose change sets roll
back alone; tables, one-to-many relationships, columns and alternate keys through
`EntityDefinitions` and `RelationshipDefinitions` (a key must be Active before upserts use it); service protection per user over a 300-s sliding window — 6,000 requests (a
`$batch` is one), 1,200 s execution time (every operation adds), 52 concurrent — answered 429
with `Retry-After` (§4.3); errors as `{"error": {"code", "message"}}` (§4.4). Faults as
faults.py describes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from telecrm.sandbox.dynamics_batch import (
    Answer,
    ChangeSet,
    MalformedBatch,
    Operation,
    operation_count,
    parse_batch,
    render_batch,
)
from telecrm.sandbox.dynamics_limits import (
    REQUESTS_CODE,
    DynamicsSandboxConfig,
    DynamicsSandboxStats,
    ServiceProtection,
)
from telecrm.sandbox.dynamics_metadata import MetadataApi
from telecrm.sandbox.dynamics_schema import (
    BAD_PROPERTY,
    ENTITY_REF,
    OdataError,
    Table,
    parse_key,
)
from telecrm.sandbox.dynamics_store import DataverseStore
from telecrm.sandbox.faults import (
    ADMIN_PREFIX,
    FaultInjector,
    FaultPlan,
    Faults,
    inject_latency,
    make_response,
    respond,
    serve_app,
    set_faults,
)

API_PREFIX = "/api/data/v9.2/"  # §4: Web API v9.2
NOT_A_MEMBER = "0x80072560"  # "The user is not a member of the organization." (UNCONFIRMED)
GENERIC_ERROR = "0x80040216"  # §4.4: generic, retryable (UNCONFIRMED)
TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
Sleep = Callable[[float], Any]


def odata_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Answer:
    return Answer(status, headers or {}, {"error": {"code": code, "message": message}})


class DynamicsSandbox:
    """One environment: `.app` (ASGI, fault-wrapped), `.store`, `.faults`, `.stats`."""

    def __init__(
        self, config: DynamicsSandboxConfig, *, now: Callable[[], float], sleep: Sleep
    ) -> None:
        self.config, self.now, self._sleep = config, now, sleep
        self.faults = FaultPlan()
        self.app = FaultInjector(self._asgi)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Rows, custom columns, keys, tokens, limits, stats and faults back to new."""
        with self._lock:
            self.store = DataverseStore(
                self.now, self.config.publisher_prefix, self.config.key_activation_seconds
            )
            self.metadata = MetadataApi(self.store)
            self.stats = DynamicsSandboxStats()
            self.tokens: dict[
                str, tuple[float, str]
            ] = {}  # access token -> (expires at, client id)
            self.protection: dict[str, ServiceProtection] = {}
            self.faults.set(Faults(seed=self.config.seed))
            self._random = random.Random(self.config.seed)

    def records(self, entity_set: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.store.rows[self.store.table_by_set(entity_set).logical].values()
            ]

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def user_limits(self, user: str | None = None) -> ServiceProtection:
        user = user or self.config.client_id
        return self.protection.setdefault(user, ServiceProtection(self.config))

    # -- ASGI --------------------------------------------------------------------------------
    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw, path = await request.body(), request.url.path
        with self._lock:
            label = f"{request.method} {path}"
            self.stats.requests[label] = self.stats.requests.get(label, 0) + 1
        drop = False
        if path.startswith(ADMIN_PREFIX):
            answer = self._admin(request.method, path[len(ADMIN_PREFIX) :], raw)
        elif (m := TOKEN_PATH.match(path)) and request.method == "POST":
            answer = self._token(m.group(1), raw)
        else:
            await inject_latency(self.faults, self._sleep)
            answer, drop = self._api(request, raw)
        response = make_response(answer.status, answer.body, answer.headers)
        if drop:
            with self._lock:
                self.stats.dropped += 1
        await respond(scope, receive, send, response, drop=drop)

    # -- Entra ID token endpoint (§4.1; AADSTS codes UNCONFIRMED) -------------------------------
    def _token(self, tenant: str, raw: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        c = self.config

        def refuse(status: int, error: str, description: str) -> Answer:
            return Answer(
                status,
                {},
                {
                    "error": error,
                    "error_description": description,
                    "error_codes": [int(description[6:].split(":")[0])],
                    "trace_id": str(uuid.uuid4()),
                },
            )

        with self._lock:
            self.stats.token_requests += 1
            if tenant != c.tenant_id:
                return refuse(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
            if form.get("grant_type") != "client_credentials":
                return refuse(
                    400,
                    "unsupported_grant_type",
                    "AADSTS70003: The app requested an unsupported grant type.",
                )
            if form.get("client_id") != c.client_id:
                return refuse(
                    400,
                    "unauthorized_client",
                    "AADSTS700016: Application was not found in the directory.",
                )
            if not hmac.compare_digest(
                form.get("client_secret", ""), c.client_secret.get_secret_value()
            ):
                return refuse(
                    401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
                )
            if form.get("scope") != c.org_url.rstrip("/") + "/.default":
                return refuse(
                    400,
                    "invalid_scope",
                    "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
                )
            token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(48)
            self.tokens[token] = (self.now() + c.token_ttl_seconds, c.client_id)
            ttl = int(c.token_ttl_seconds)
            return Answer(
                200,
                {},
                {
                    "token_type": "Bearer",
                    "expires_in": ttl,
                    "ext_expires_in": ttl,
                    "access_token": token,
                },
            )

    # -- the Web API -------------------------------------------------------------------------
    def _api(self, request: Request, raw: bytes) -> tuple[Answer, bool]:
        with self._lock:
            now = self.now()
            auth = request.headers.get("authorization", "")
            held = self.tokens.get(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
            if held is None or held[0] <= now:
                self.stats.unauthorized += 1
                challenge = f"Bearer authorization_uri=https://login.microsoftonline.com/{self.config.tenant_id}/oauth2/authorize, resource_id={self.config.org_url}/"
                return Answer(401, {"WWW-Authenticate": challenge}), False
            if not self.config.application_user:
                return odata_error(
                    403, NOT_A_MEMBER, "The user is not a member of the organization."
                ), False
            limits = self.user_limits(held[1])
            fault = self.faults.draw()
            refusal = limits.refusal(now)
            if fault == "storm":
                refusal = (
                    REQUESTS_CODE,
                    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                    self.config.storm_retry_after_seconds,
                )
            if refusal is not None:
                self.stats.limit_refusals += 1
                return odata_error(
                    429, refusal[0], refusal[1], {"Retry-After": str(refusal[2])}
                ), False
            if fault == "error":
                self.stats.errors_sent += 1
                status = self._random.choice((500, 502, 503))
                return odata_error(status, GENERIC_ERROR, "An unexpected error occurred."), False
            self.stats.api_requests += 1
            limits.in_flight += 1
            try:
                answer, operations = self._dispatch(request, raw)
            finally:
                limits.in_flight -= 1
            self.stats.operations += operations
            limits.calls.append((now, operations * self.config.operation_seconds))
            answer.headers.update({"OData-Version": "4.0", **limits.headers(now)})
            return answer, fault == "drop"

    def _dispatch(self, request: Request, raw: bytes) -> tuple[Answer, int]:
        path = request.url.path
        if not path.startswith(API_PREFIX):
            return odata_error(404, "0x8006088a", "Resource not found for the segment 'api'."), 1
        rest = unquote(path[len(API_PREFIX) :])
        if rest == "$batch" and request.method == "POST":
            return self._batch(request, raw)
        headers = {k.lower(): v for k, v in request.headers.items()}
        return self._one(request.method, rest, headers, raw, str(request.base_url).rstrip("/")), 1

    def _batch(self, request: Request, raw: bytes) -> tuple[Answer, int]:
        try:
            items = parse_batch(request.headers.get("content-type", ""), raw)
        except MalformedBatch as exc:
            return odata_error(400, BAD_PROPERTY, str(exc)), 1
        count = operation_count(items)
        if count > self.config.batch_max:
            return odata_error(
                400,
                BAD_PROPERTY,
                f"Number of requests in a batch exceeded the limit of {self.config.batch_max}.",
            ), 1
        keep_going = "odata.continue-on-error" in request.headers.get("prefer", "").lower()
        base = str(request.base_url).rstrip("/")
        results: list[Answer | list[Answer]] = []
        failed = False
        for item in items:
            if isinstance(item, Operation):
                answer = self._one(item.method, _relative(item.url), item.headers, item.body, base)
                results.append(answer)
                failed = answer.status >= 400
            else:
                change_set = self._change_set(item, base)
                results.append(change_set)
                failed = not isinstance(change_set, list)
            if failed and not keep_going:
                break
        content_type, body = render_batch(results)
        status = 400 if failed and not keep_going else 200  # the batch doc's "Handling errors"
        return Answer(status, {"Content-Type": content_type}, body), count

    def _change_set(self, change_set: ChangeSet, base: str) -> Answer | list[Answer]:
        """All operations or none (ExecuteTransaction): the first error undoes the others."""
        answers: list[Answer] = []
        created: dict[str, str] = {}  # Content-ID -> entity URL, for `$1` references
        try:
            with self.store.transaction():
                for op in change_set.operations:
                    url = _relative(op.url)
                    if url.startswith("$"):
                        ref, _, tail = url[1:].partition("/")
                        if ref not in created:
                            raise _Failed(
                                odata_error(
                                    400,
                                    BAD_PROPERTY,
                                    f"Content-ID Reference: '${ref}' does not exist in the batch context.",
                                )
                            )
                        url = _relative(created[ref]) + (f"/{tail}" if tail else "")
                    body = op.body
                    for ref, target in created.items():
                        body = body.replace(
                            f'"${ref}"'.encode(), json.dumps(_relative(target)).encode()
                        )
                    answer = self._one(op.method, url, op.headers, body, base)
                    if answer.status >= 400:
                        raise _Failed(answer)
                    answer.content_id = op.content_id
                    if op.content_id and "OData-EntityId" in answer.headers:
                        created[op.content_id] = answer.headers["OData-EntityId"]
                    answers.append(answer)
        except _Failed as failed:
            return failed.answer
        return answers

    def _one(
        self, method: str, path: str, headers: dict[str, str], body: bytes, base: str
    ) -> Answer:
        """One operation, alone or inside a batch: errors become their OData answer."""
        path = path.split("?", 1)[0]
        try:
            if (
                path.startswith(("EntityDefinitions", "RelationshipDefinitions"))
                or path == "WhoAmI"
            ):
                return Answer(*self.metadata.handle(method, path, body))
            m = ENTITY_REF.fullmatch(path) or re.fullmatch(r"(\w+)()", path)
            if m is None:
                raise OdataError(
                    404, "0x8006088a", f"Resource not found for the segment '{path.split('/')[0]}'."
                )
            table = self.store.table_by_set(m.group(1))
            if not m.group(2):
                if method != "GET":
                    raise OdataError(
                        405, BAD_PROPERTY, "The requested method is not supported on this resource."
                    )
                return Answer(
                    200, {}, {"value": [dict(r) for r in self.store.rows[table.logical].values()]}
                )
            key = parse_key(m.group(2))
            if method == "GET":
                return Answer(200, {}, dict(self.store.get(table, key)))
            if method == "DELETE":
                self.store.delete(table, key)
                return Answer(204)
            if method != "PATCH":
                raise OdataError(
                    405, BAD_PROPERTY, "The requested method is not supported on this resource."
                )
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                raise OdataError(
                    400,
                    BAD_PROPERTY,
                    "Invalid JSON. A token was not recognized in the JSON content.",
                ) from None
            if not isinstance(payload, dict):
                raise OdataError(400, BAD_PROPERTY, "The request body must be a JSON object.")
            row_id, _ = self.store.upsert(
                table,
                key,
                payload,
                if_match=headers.get("if-match", "").strip() == "*",
                if_none_match=headers.get("if-none-match", "").strip() == "*",
                resolve=self._resolve,
            )
            entity = f"{base}{API_PREFIX}{table.entity_set}({row_id})"
            return Answer(204, {"OData-EntityId": entity, "Location": entity})
        except OdataError as exc:
            return odata_error(exc.status, exc.code, exc.message)

    def _resolve(self, reference: str) -> tuple[Table, str | dict[str, str]]:
        """`/contacts(id)`, `contacts(key='v')` or an absolute URL → (table, key)."""
        m = ENTITY_REF.search(_relative(reference))
        if m is None:
            raise OdataError(
                400, BAD_PROPERTY, "The entity reference in an @odata.bind annotation is not valid."
            )
        return self.store.table_by_set(m.group(1)), parse_key(m.group(2))

    # -- /_sandbox admin -----------------------------------------------------------------------
    def _admin(self, method: str, rest: str, raw: bytes) -> Answer:
        if method == "GET" and rest.startswith("/records/"):
            try:
                return Answer(200, {}, {"value": self.records(rest[len("/records/") :])})
            except OdataError as exc:
                return odata_error(exc.status, exc.code, exc.message)
        if method == "GET" and rest == "/stats":
            with self._lock:
                return Answer(200, {}, self.stats.as_json())
        if method == "POST" and rest == "/faults":
            status, body = set_faults(self.faults, raw)
            return Answer(status, {}, body)
        if method == "POST" and rest == "/reset":
            self.reset()
            return Answer(200, {}, {"reset": True})
        if method == "POST" and rest == "/tokens/expire":
            self.expire_tokens()
            return Answer(200, {}, {"expired": True})
        return Answer(404, {}, {"detail": "unknown admin path"})


class _Failed(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _relative(url: str) -> str:
    """An operation URL (absolute, `/api/data/v9.2/…` or relative) as a path under the API root."""
    path = urlsplit(url).path if "://" in url else url
    path = unquote(path)
    return path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path.lstrip("/")


def create_dynamics_sandbox(
    config: DynamicsSandboxConfig | None = None,
    *,
    now: Callable[[], float] = time.time,
    sleep: Sleep = asyncio.sleep,
) -> DynamicsSandbox:
    """A fresh environment: `.app` to serve, `.store`, `.faults` and `.stats` to inspect."""
    return DynamicsSandbox(config or DynamicsSandboxConfig(), now=now, sleep=sleep)


def serve_dynamics_sandbox(
    host: str, port: int, config: DynamicsSandboxConfig | None = None
) -> None:
    """Run the sandbox under uvicorn until interrupted (for `telecrm sandbox dynamics`)."""
    serve_app(create_dynamics_sandbox(config).app, host, port)
