"""A Salesforce org in process: OAuth token flows, REST sObject Collections, SOQL, Tooling, SOAP convertLead.

Faithful to the documented contract (see /work/shared/research/crm-apis.md §2): JWT bearer and
client-credentials tokens without refresh tokens; 401 INVALID_SESSION_ID once a session expires;
`Sforce-Limit-Info: api-usage=n/m` on every REST answer; over the rolling 24-hour allocation a
403 REQUEST_LIMIT_EXCEEDED (Salesforce never sends 429); errors as JSON arrays. Records live in
`salesforce_store.SalesforceStore` so tests can compare the org's final state with telecrm's.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import inspect
import json
import random
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from telecrm.sandbox.faults import ADMIN_PREFIX, DropConnection, FaultInjector, FaultPlan, Faults
from telecrm.sandbox.salesforce_store import RequestRefused, SalesforceStore

COLLECTION_MAX = 200  # sObject Collections: "The list can contain up to 200 objects"
LEAD_CONVERT_MAX = 100  # convertLead(): up to 100 LeadConvert objects per call
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER_NS = "urn:partner.soap.sforce.com"
NOT_FOUND = ("NOT_FOUND", "The requested resource does not exist")
ORG_ID = "00D8d000000TeLcRM"
Sleep = Callable[[float], Awaitable[None] | None]


class SalesforceSandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_version: str = "62.0"
    login_url: str = "https://login.salesforce.com"  # the JWT `aud` the org accepts
    consumer_key: str = "sandbox-consumer-key"
    username: str = "integration@telecrm.example"
    jwt_public_key: str | None = None  # PEM of the connected app's certificate key; None: JWT off
    client_id: str = "sandbox-client-id"
    client_secret: SecretStr = SecretStr("sandbox-client-secret")
    session_ttl_seconds: float = Field(7200, gt=0)  # the org's default session timeout, 2 hours
    daily_api_allocation: int = Field(100_000, ge=0)  # Enterprise base allocation per rolling 24 h
    window_seconds: float = Field(86_400, gt=0)  # the rolling window; tests shrink it
    instance_url: str | None = None  # None: the URL the token request came in on
    seed: int = 0


@dataclass
class SandboxStats:
    requests_by_path: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    api_requests: int = 0  # counted against the allocation
    limit_refusals: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_by_path": self.requests_by_path,
            "token_requests": self.token_requests,
            "api_requests": self.api_requests,
            "limit_refusals": self.limit_refusals,
        }


def sf_errors(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        [{"message": message, "errorCode": code}], status_code=status, headers=headers
    )


def oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


class SalesforceSandbox:
    """The org: `.app` (ASGI, fault-wrapped), `.store`, `.faults`, `.stats`."""

    def __init__(
        self, config: SalesforceSandboxConfig, now: Callable[[], float], sleep: Sleep
    ) -> None:
        self.config, self.now, self.sleep = config, now, sleep
        self.store = SalesforceStore(now=now, seed=config.seed)
        self.faults = FaultPlan(Faults(seed=config.seed))
        self.stats = SandboxStats()
        self.sessions: dict[str, float] = {}  # access token -> issued at
        self.usage: collections.deque[float] = collections.deque()
        self._random = random.Random(config.seed)
        v = "/services/data/v{version}"
        routes = [
            Route("/services/oauth2/token", self.token, methods=["POST"]),
            Route(
                v + "/composite/sobjects/{sobject}/{ext_field}",
                self._api(self.upsert),
                methods=["PATCH"],
            ),
            Route(
                v + "/composite/sobjects", self._api(self.collections), methods=["PATCH", "DELETE"]
            ),
            Route(
                v + "/sobjects/{sobject}/{record_id}", self._api(self.get_record), methods=["GET"]
            ),
            Route(v + "/query", self._api(self.query), methods=["GET"]),
            Route(v + "/tooling/query", self._api(self.query), methods=["GET"]),
            Route(
                v + "/tooling/sobjects/CustomField", self._api(self.create_field), methods=["POST"]
            ),
            Route(v + "/limits", self._api(self.limits), methods=["GET"]),
            Route("/services/Soap/u/{version}", self.soap, methods=["POST"]),
            Route(ADMIN_PREFIX + "/records/{sobject}", self.admin_records, methods=["GET", "POST"]),
            Route(ADMIN_PREFIX + "/stats", self.admin_stats, methods=["GET"]),
            Route(ADMIN_PREFIX + "/faults", self.admin_faults, methods=["POST"]),
            Route(ADMIN_PREFIX + "/reset", self.admin_reset, methods=["POST"]),
            Route(ADMIN_PREFIX + "/sessions/expire", self.admin_expire, methods=["POST"]),
            Route(
                "/services/data/{rest:path}",
                self._api(self.not_found),
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            ),
        ]
        self.app = FaultInjector(Starlette(routes=routes))

    # -- sessions and limits ---------------------------------------------------------------
    def expire_sessions(self) -> None:
        self.sessions.clear()

    def api_usage(self) -> int:
        while self.usage and self.usage[0] <= self.now() - self.config.window_seconds:
            self.usage.popleft()
        return len(self.usage)

    def limit_info(self) -> dict[str, str]:
        return {
            "Sforce-Limit-Info": f"api-usage={self.api_usage()}/{self.config.daily_api_allocation}"
        }

    def _session_ok(self, token: str | None) -> bool:
        issued = self.sessions.get(token or "")
        return issued is not None and self.now() - issued < self.config.session_ttl_seconds

    async def _admit(
        self, request: Request, template: str, token: str | None
    ) -> tuple[str | None, str]:
        """Common gatekeeping. Returns (refusal code or None, fault drawn)."""
        self.stats.requests_by_path[f"{request.method} {template}"] = (
            self.stats.requests_by_path.get(f"{request.method} {template}", 0) + 1
        )
        if self.faults.latency:
            pending = self.sleep(self.faults.latency)
            if inspect.isawaitable(pending):
                await pending
        if not self._session_ok(token):
            return "INVALID_SESSION_ID", ""
        fault = self.faults.draw() or ""
        if fault == "storm" or self.api_usage() >= self.config.daily_api_allocation:
            self.stats.limit_refusals += 1
            return "REQUEST_LIMIT_EXCEEDED", fault
        if fault == "error":
            return "SERVER_UNAVAILABLE", fault
        self.usage.append(self.now())
        self.stats.api_requests += 1
        return None, fault

    def _api(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            route = request.scope.get("route")
            template = getattr(route, "path", request.url.path)
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else None
            refusal, fault = await self._admit(request, template, token)
            if refusal == "INVALID_SESSION_ID":
                return sf_errors(401, refusal, "Session expired or invalid", self.limit_info())
            if refusal == "REQUEST_LIMIT_EXCEEDED":
                return sf_errors(403, refusal, "TotalRequests Limit exceeded.", self.limit_info())
            if refusal:
                status = self._random.choice((500, 503))
                return sf_errors(
                    status,
                    refusal,
                    "Server is unavailable. Please try again later.",
                    self.limit_info(),
                )
            try:
                response = await handler(request)
            except RequestRefused as refused:
                response = sf_errors(refused.status, refused.error_code, refused.message)
            response.headers.update(self.limit_info())
            if fault == "drop":
                raise DropConnection()
            return response

        return endpoint

    # -- OAuth 2.0 token endpoint ----------------------------------------------------------
    async def token(self, request: Request) -> Response:
        self.stats.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        if grant == JWT_BEARER:
            problem = self._check_assertion(form.get("assertion", ""))
            if problem:
                return oauth_error(*problem)
        elif grant == "client_credentials":
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = request.headers.get("authorization", "")
            if basic.lower().startswith(
                "basic "
            ):  # RFC 6749 §2.3.1 form that simple-salesforce sends
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            expected = self.config.client_secret.get_secret_value()
            if client_id != self.config.client_id or not hmac.compare_digest(
                secret or "", expected
            ):
                return oauth_error("invalid_client", "invalid client credentials")
        else:
            return oauth_error("unsupported_grant_type", "grant type not supported")
        access_token = f"{ORG_ID}!AQ{secrets.token_urlsafe(40)}"
        self.sessions[access_token] = self.now()
        instance = self.config.instance_url or str(request.base_url).rstrip("/")
        issued_at = str(int(self.now() * 1000))
        identity = f"{self.config.login_url}/id/{ORG_ID}/0058d000001TeLcAAA"
        key = self.config.client_secret.get_secret_value().encode()
        signature = base64.b64encode(
            hmac.new(key, (identity + issued_at).encode(), hashlib.sha256).digest()
        )
        return JSONResponse(
            {
                "access_token": access_token,
                "scope": "api",
                "instance_url": instance,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": signature.decode(),
            }
        )

    def _check_assertion(self, assertion: str) -> tuple[str, str] | None:
        if not self.config.jwt_public_key:
            return "invalid_grant", "invalid assertion"
        try:
            claims = jwt.decode(
                assertion,
                self.config.jwt_public_key,
                algorithms=["RS256"],
                audience=self.config.login_url,
                options={"verify_exp": False, "require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.InvalidAudienceError:
            return "invalid_grant", "audience is invalid"
        except jwt.PyJWTError:
            return "invalid_grant", "invalid assertion"
        if claims["iss"] != self.config.consumer_key:
            return "invalid_client_id", "client identifier invalid"
        if claims["sub"] != self.config.username:
            return "invalid_grant", "user hasn't approved this consumer"
        if float(claims["exp"]) <= self.now():
            return "invalid_grant", "expired authorization code"
        return None

    # -- REST resources --------------------------------------------------------------------
    @staticmethod
    async def _json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise RequestRefused(
                400, "JSON_PARSER_ERROR", "Unexpected character in request body"
            ) from None

    async def _records_body(self, request: Request) -> tuple[list[Any], bool]:
        body = await self._json(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("records"), list)
            or not all(isinstance(r, dict) for r in body["records"])
        ):
            raise RequestRefused(400, "JSON_PARSER_ERROR", "Body needs a records list")
        if len(body["records"]) > COLLECTION_MAX:
            raise RequestRefused(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        return body["records"], bool(body.get("allOrNone", False))

    async def upsert(self, request: Request) -> Response:
        records, all_or_none = await self._records_body(request)
        p = request.path_params
        return JSONResponse(self.store.upsert(p["sobject"], p["ext_field"], records, all_or_none))

    async def collections(self, request: Request) -> Response:
        if request.method == "PATCH":
            records, all_or_none = await self._records_body(request)
            return JSONResponse(self.store.update(records, all_or_none))
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if not ids:
            raise RequestRefused(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > COLLECTION_MAX:
            raise RequestRefused(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
        return JSONResponse(self.store.delete(ids, all_or_none))

    async def get_record(self, request: Request) -> Response:
        self.store.require_object(request.path_params["sobject"])
        found = self.store.find(request.path_params["record_id"])
        if found is None or found[0] != request.path_params["sobject"]:
            return sf_errors(404, *NOT_FOUND)
        obj, record = found
        url = f"/services/data/v{request.path_params['version']}/sobjects/{obj}/{record['Id']}"
        return JSONResponse({"attributes": {"type": obj, "url": url}, **record})

    async def query(self, request: Request) -> Response:
        tooling = "/tooling/" in request.url.path
        rows = self.store.query(request.query_params.get("q", ""), tooling=tooling)
        base = f"/services/data/v{request.path_params['version']}{'/tooling' if tooling else ''}/sobjects"
        obj = request.query_params["q"].split()[
            request.query_params["q"].upper().split().index("FROM") + 1
        ]
        records = [
            {"attributes": {"type": obj, "url": f"{base}/{obj}/{r.get('Id')}"}, **r} for r in rows
        ]
        body: dict[str, Any] = {"totalSize": len(records), "done": True, "records": records}
        if tooling:
            body = {"size": len(records), **body, "queryLocator": None, "entityTypeName": obj}
        return JSONResponse(body)

    async def create_field(self, request: Request) -> Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("Metadata"), dict):
            raise RequestRefused(400, "JSON_PARSER_ERROR", "Body needs FullName and Metadata")
        field_id = self.store.create_custom_field(str(body.get("FullName", "")), body["Metadata"])
        return JSONResponse(
            {"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []},
            status_code=201,
        )

    async def limits(self, request: Request) -> Response:
        cap = self.config.daily_api_allocation
        return JSONResponse(
            {"DailyApiRequests": {"Max": cap, "Remaining": max(0, cap - self.api_usage())}}
        )

    async def not_found(self, request: Request) -> Response:
        return sf_errors(404, *NOT_FOUND)

    # -- SOAP API: convertLead (the documented way to convert a lead; there is no REST resource) --
    async def soap(self, request: Request) -> Response:
        try:
            envelope = ET.fromstring(await request.body())  # noqa: S314 - sandbox input from tests
        except ET.ParseError:
            return soap_fault("INVALID_XML", "could not parse the SOAP envelope")
        token = envelope.findtext(f".//{{{PARTNER_NS}}}SessionHeader/{{{PARTNER_NS}}}sessionId")
        refusal, fault = await self._admit(request, "/services/Soap/u/{version}", token)
        if refusal == "INVALID_SESSION_ID":
            return soap_fault(refusal, "Invalid Session ID found in SessionHeader: Illegal Session")
        if refusal == "REQUEST_LIMIT_EXCEEDED":
            return soap_fault(refusal, "TotalRequests Limit exceeded.")
        if refusal:
            return soap_fault(refusal, "Server is unavailable. Please try again later.")
        converts = envelope.findall(f".//{{{PARTNER_NS}}}convertLead/{{{PARTNER_NS}}}leadConverts")
        if not converts:
            return soap_fault("INVALID_OPERATION", "only convertLead is supported by this sandbox")
        if len(converts) > LEAD_CONVERT_MAX:
            return soap_fault("LIMIT_EXCEEDED", "Too many leadConverts: limit 100")
        results = []
        for item in converts:

            def text(name: str, node: ET.Element = item) -> str | None:
                return node.findtext(f"{{{PARTNER_NS}}}{name}")

            results.append(
                self.store.convert_lead(
                    text("leadId") or "",
                    text("convertedStatus") or "",
                    do_not_create_opportunity=(text("doNotCreateOpportunity") or "").lower()
                    == "true",
                    account_id=text("accountId"),
                    contact_id=text("contactId"),
                    opportunity_name=text("opportunityName"),
                )
            )
        response = Response(
            convert_lead_response(results, self.api_usage(), self.config.daily_api_allocation),
            media_type="text/xml; charset=utf-8",
        )
        if fault == "drop":
            raise DropConnection()
        return response

    # -- admin -----------------------------------------------------------------------------
    async def admin_records(self, request: Request) -> Response:
        obj = request.path_params["sobject"]
        if obj not in self.store.records:
            return sf_errors(404, *NOT_FOUND)
        if request.method == "POST":  # seed a record as-is (e.g. two sharing an external id)
            return JSONResponse(self.store.insert(obj, await request.json()), status_code=201)
        return JSONResponse(list(self.store.records[obj].values()))

    async def admin_stats(self, request: Request) -> Response:
        return JSONResponse(
            self.stats.as_json()
            | {"api_usage": self.api_usage(), "api_allocation": self.config.daily_api_allocation}
        )

    async def admin_faults(self, request: Request) -> Response:
        try:
            self.faults.set(Faults.model_validate(await request.json()))
        except (ValidationError, ValueError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse(self.faults.faults.model_dump())

    async def admin_reset(self, request: Request) -> Response:
        """Records, custom fields, usage, stats and faults back to new; sessions stay valid."""
        self.store.reset()
        self.usage.clear()
        self.stats = SandboxStats()
        self.faults.set(Faults(seed=self.config.seed))
        return JSONResponse({"reset": True})

    async def admin_expire(self, request: Request) -> Response:
        self.expire_sessions()
        return JSONResponse({"expired": True})


def soap_fault(code: str, message: str) -> Response:
    """A partner-API SOAP fault, HTTP 500 as SOAP 1.1 requires."""
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{code}: "
        f'{escape(message)}</faultstring><detail><sf:UnexpectedErrorFault xsi:type="sf:UnexpectedErrorFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>{escape(message)}"
        "</sf:exceptionMessage></sf:UnexpectedErrorFault></detail></soapenv:Fault></soapenv:Body>"
        "</soapenv:Envelope>"
    )
    return Response(body, status_code=500, media_type="text/xml; charset=utf-8")


def convert_lead_response(results: list[dict[str, Any]], used: int, limit: int) -> str:
    """convertLeadResponse with LeadConvertResult elements and the LimitInfoHeader."""

    def element(name: str, value: Any) -> str:
        if value is None:
            return f'<{name} xsi:nil="true"/>'
        return f"<{name}>{escape(str(value).lower() if isinstance(value, bool) else str(value))}</{name}>"

    parts = []
    for r in results:
        errors = "".join(
            "<errors>"
            + "".join(f"<fields>{escape(f)}</fields>" for f in e["fields"])
            + element("message", e["message"])
            + element("statusCode", e["statusCode"])
            + "</errors>"
            for e in r["errors"]
        )
        parts.append(
            "<result>"
            + element("accountId", r["accountId"])
            + element("contactId", r["contactId"])
            + errors
            + element("leadId", r["leadId"])
            + element("opportunityId", r["opportunityId"])
            + element("success", r["success"])
            + "</result>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
        f'xmlns="{PARTNER_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Header>'
        f"<LimitInfoHeader><limitInfo><current>{used}</current><limit>{limit}</limit>"
        "<type>API REQUESTS</type></limitInfo></LimitInfoHeader></soapenv:Header><soapenv:Body>"
        f"<convertLeadResponse>{''.join(parts)}</convertLeadResponse></soapenv:Body></soapenv:Envelope>"
    )


def create_salesforce_sandbox(
    config: SalesforceSandboxConfig | None = None,
    *,
    now: Callable[[], float] = time.time,
    sleep: Sleep | None = None,
) -> SalesforceSandbox:
    """A fresh org. `now` (seconds) drives sessions, the usage window and timestamps."""
    import asyncio

    return SalesforceSandbox(config or SalesforceSandboxConfig(), now, sleep or asyncio.sleep)


def serve_salesforce_sandbox(
    host: str, port: int, config: SalesforceSandboxConfig | None = None
) -> None:
    """Run the sandbox under uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_salesforce_sandbox(config).app, host=host, port=port, log_level="info")
