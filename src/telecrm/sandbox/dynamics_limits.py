"""The Dataverse sandbox's knobs and its service protection limits (crm-apis.md §4.3).

Per user over a 300-s sliding window: 6,000 requests, 1,200 s combined execution time, 52
concurrent requests (MicrosoftDocs/powerapps-docs developer/data-platform/api-limits.md, the
"Limit per web server" table). A `$batch` is one request ("A batch can contain up to 1,000
operations and avoids the number of requests limit") but each of its operations adds execution
time. A window already over a limit refuses the *next* request; concurrency refuses at once.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

BATCH_MAX = 1000  # §4.2: "Batch requests can contain up to 1000 individual requests"
REQUESTS_CODE = "0x80072322"  # api-limits.md: number of requests
EXECUTION_CODE = "0x80072321"  # api-limits.md: combined execution time
CONCURRENCY_CODE = "0x80072326"  # api-limits.md: concurrent requests


class DynamicsSandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_url: str = "https://telecrm-sandbox.crm.dynamics.com"  # the scope is f"{org_url}/.default"
    tenant_id: str = "00000000-0000-0000-0000-00000000e1d0"
    client_id: str = "sandbox-client-id"
    client_secret: SecretStr = SecretStr("sandbox-client-secret")
    application_user: bool = True  # False: tokens are valid but Dataverse refuses them (§4.1)
    token_ttl_seconds: float = Field(3599, gt=0)  # §4.1: expires_in 3599 (UNCONFIRMED)
    window_seconds: float = Field(300, gt=0)  # §4.3: 5-minute sliding window
    requests_per_window: int = Field(6000, ge=1)  # §4.3 / api-limits.md
    execution_seconds_per_window: float = Field(1200, gt=0)  # §4.3: 20 minutes combined
    concurrent_requests: int = Field(52, ge=1)  # §4.3: "52 or higher"
    operation_seconds: float = Field(0.01, ge=0)  # simulated server time per operation
    storm_retry_after_seconds: int = Field(30, ge=1)  # Retry-After of an injected 429 storm
    key_activation_seconds: float = Field(0, ge=0)  # §4.2: key index job runs in the background
    batch_max: int = Field(BATCH_MAX, ge=1)
    publisher_prefix: str = "telecrm"
    seed: int = 0


@dataclass
class DynamicsSandboxStats:
    requests: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    api_requests: int = 0  # counted against the number-of-requests limit ($batch = 1)
    operations: int = 0  # what ran, $batch operations one by one
    limit_refusals: int = 0
    unauthorized: int = 0
    errors_sent: int = 0
    dropped: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ServiceProtection:
    """One user's three facets (api-limits.md "How the system enforces ..."). A window already
    over its limit refuses the *next* request; concurrency refuses at once."""

    def __init__(self, config: DynamicsSandboxConfig) -> None:
        self.config = config
        self.calls: collections.deque[tuple[float, float]] = collections.deque()  # (at, seconds)
        self.in_flight = 0

    def _age(self, now: float) -> None:
        while self.calls and self.calls[0][0] <= now - self.config.window_seconds:
            self.calls.popleft()

    def refusal(self, now: float) -> tuple[str, str, int] | None:
        c = self.config
        if self.in_flight >= c.concurrent_requests:
            return (
                CONCURRENCY_CODE,
                f"Number of concurrent requests exceeded the limit of {c.concurrent_requests}.",
                1,
            )
        self._age(now)
        if len(self.calls) >= c.requests_per_window:
            wait = self.calls[len(self.calls) - c.requests_per_window][0] + c.window_seconds - now
            return (
                REQUESTS_CODE,
                f"Number of requests exceeded the limit of {c.requests_per_window} over time window of {c.window_seconds:g} seconds.",
                math.ceil(max(wait, 1)),
            )
        spent = sum(s for _, s in self.calls)
        if spent >= c.execution_seconds_per_window:
            freed, wait = 0.0, 1.0
            for at, seconds in self.calls:
                freed += seconds
                wait = at + c.window_seconds - now
                if spent - freed < c.execution_seconds_per_window:
                    break
            ms = int(c.execution_seconds_per_window * 1000)
            return (
                EXECUTION_CODE,
                f"Combined execution time of incoming requests exceeded limit of {ms:,} milliseconds over time window of {c.window_seconds:g} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                math.ceil(max(wait, 1)),
            )
        return None

    def headers(self, now: float) -> dict[str, str]:
        """The debugging headers of api-limits.md (value formats UNCONFIRMED)."""
        self._age(now)
        left = self.config.execution_seconds_per_window - sum(s for _, s in self.calls)
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(
                max(0, self.config.requests_per_window - len(self.calls))
            ),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{max(0.0, left):,.2f}",
        }
