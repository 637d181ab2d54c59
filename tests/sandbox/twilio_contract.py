"""Checks requests and responses against Twilio's own OpenAPI subset (../shared/specs/twilio)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"
TWILIO_SPEC = SPECS / "twilio" / "api_v2010.messages-subset.json"
TWILIO_HOST = (
    "https://api.twilio.com"  # the spec's server: sandbox requests are checked as if sent there
)


@cache
def twilio_openapi() -> OpenAPI:
    if not TWILIO_SPEC.is_file():
        raise FileNotFoundError(
            f"Twilio OpenAPI subset missing at {TWILIO_SPEC}: the contract tests need ../shared/specs"
        )
    return OpenAPI.from_file_path(str(TWILIO_SPEC))


class SpecRequest:
    """An httpx.Request as openapi-core's Request protocol, re-hosted on api.twilio.com."""

    def __init__(self, request: httpx.Request) -> None:
        self.host_url = TWILIO_HOST
        self.path = request.url.path
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )


class SpecResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.data: bytes | None = response.content
        self.content_type = response.headers.get("content-type", "").lower()
        self.headers = Headers(list(response.headers.multi_items()))


def check_request(request: httpx.Request) -> None:
    """Raise openapi-core's validation error unless the request fits the spec."""
    twilio_openapi().validate_request(SpecRequest(request))


def check_response(request: httpx.Request, response: httpx.Response) -> None:
    twilio_openapi().validate_response(SpecRequest(request), SpecResponse(response))
