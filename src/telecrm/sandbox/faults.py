"""Fault knobs every sandbox shares: error rate, 429 storms, latency, dropped connections.

A sandbox wraps its ASGI app in `FaultInjector`. The knobs are set from tests (`injector.faults`)
or over HTTP (`POST /_sandbox/faults` with a JSON body of the `Faults` fields), and draw from a
seeded random generator so a failing run can be repeated. What each fault does to a request:

- `error_rate`: answer 500/502/503 (the provider's own error body, from the sandbox) *before*
  touching any record;
- `storm_requests`: the next N API requests are refused for the rate limit (the sandbox decides
  the body and headers: HubSpot 429 `TEN_SECONDLY_ROLLING`, Salesforce 403 `REQUEST_LIMIT_EXCEEDED`);
- `latency_seconds`: every request takes this long (slept on the sandbox's injected `sleep`);
- `drop_rate`: the request is *applied*, then the connection is cut before the answer: the nasty
  case where the CRM holds the change but the client never hears of it.

`SandboxTransport` lets an in-process `httpx.Client` talk to a sandbox app and turns a cut
connection into `httpx.RemoteProtocolError`, which is what a real socket would give.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

ADMIN_PREFIX = "/_sandbox"


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1)
    storm_requests: int = Field(0, ge=0)
    latency_seconds: float = Field(0.0, ge=0, le=60)
    drop_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0


class DropConnection(Exception):
    """Raised by a sandbox after the response started: the server cuts the connection."""


class FaultPlan:
    """Which fault, if any, one request gets. Thread-safe: uvicorn and tests share it."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._random = random.Random(faults.seed)
            self._storm_left = faults.storm_requests

    def draw(self) -> str | None:
        """Which fault this request gets: "error", "storm", "drop", or None."""
        with self._lock:
            if self._storm_left > 0:
                self._storm_left -= 1
                return "storm"
            f = self.faults
            roll = self._random.random()
            if roll < f.error_rate:
                return "error"
            if roll < f.error_rate + f.drop_rate:
                return "drop"
            return None

    @property
    def latency(self) -> float:
        return self.faults.latency_seconds


class FaultInjector:
    """ASGI wrapper: cuts the connection when the app (or the plan) says so.

    The sandbox app itself asks `plan.draw()` at the start of each API request, because only it
    knows its provider's error bodies; for "drop" it applies the request, starts the response
    and raises DropConnection, which this wrapper turns into a cut connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except DropConnection:
            if not started:
                await tracking_send({"type": "http.response.start", "status": 200, "headers": []})
            # Raising after the response started makes a server close the socket mid-answer.
            raise


class SandboxTransport(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI sandbox app, in process.

    Built on Starlette's test transport; a DropConnection inside the app surfaces as
    httpx.RemoteProtocolError, exactly what a client sees when a real server cuts the socket.
    """

    def __init__(self, app: ASGIApp, *, base_url: str = "http://sandbox") -> None:
        self._client = TestClient(app, base_url=base_url, raise_server_exceptions=True)
        self._inner: httpx.BaseTransport = self._client._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
            response.read()  # the app runs while the body streams: a cut shows up here
            return response
        except DropConnection:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body",
                request=request,
            ) from None

    def close(self) -> None:
        self._client.close()


def sandbox_client(app: ASGIApp, base_url: str = "http://sandbox", **kwargs: Any) -> httpx.Client:
    """An httpx.Client wired to a sandbox app in process (what the connector tests use)."""
    return httpx.Client(
        transport=SandboxTransport(app, base_url=base_url), base_url=base_url, **kwargs
    )


Sleep = Callable[[float], Any]


def set_faults(plan: FaultPlan, raw: bytes | str | None) -> tuple[int, dict[str, Any]]:
    """`POST /_sandbox/faults`: (status, body) every sandbox answers with."""
    try:
        plan.set(Faults.model_validate_json(raw or b"{}"))
    except ValidationError as exc:
        return 422, {"detail": exc.errors(include_input=False, include_url=False)}
    return 200, plan.faults.model_dump()


def serve_app(app: ASGIApp, host: str, port: int) -> None:
    """Run a sandbox under uvicorn until interrupted (the `telecrm sandbox ...` commands)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="off")


async def inject_latency(plan: FaultPlan, sleep: Callable[[float], Any]) -> None:
    """The `latency_seconds` knob: wait before answering an API request (on the injected sleep)."""
    if plan.latency:
        pending = sleep(plan.latency)
        if inspect.isawaitable(pending):
            await pending


def make_response(status: int, body: Any, headers: dict[str, str]) -> Response:
    """No body, raw bytes, or JSON: the three kinds of answer the sandboxes give."""
    if body is None:
        return Response(status_code=status, headers=headers)
    if isinstance(body, bytes):
        return Response(body, status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


async def respond(
    scope: Scope, receive: Receive, send: Send, response: Response, *, drop: bool
) -> None:
    """Send the answer; for a dropped connection start it, then cut the socket (DropConnection)."""
    if drop:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        raise DropConnection()
    await response(scope, receive, send)
