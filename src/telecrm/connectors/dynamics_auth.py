"""Dataverse sign-in: Microsoft Entra ID client credentials for one environment (crm-apis.md §4.1).

`POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` with
`grant_type=client_credentials`, the app's client id and secret and the scope
`https://{org}.crm.dynamics.com/.default` gives `{"token_type": "Bearer", "expires_in": 3599,
"access_token": "..."}` and no refresh token: the source simply asks again before the token
expires, and once more when the Web API answers 401. MSAL's `acquire_token_for_client` does the
same; a plain form post keeps the dependency out and lets tests count token calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from telecrm.connectors.base import AuthFailed, CallStats, TransientFailure

DATAVERSE_API_VERSION = "9.2"  # §4: /api/data/v9.2/
ENTRA_AUTHORITY = "https://login.microsoftonline.com"  # §4.1: v2 token endpoint host
DATAVERSE_BATCH_MAX = 1000  # §4.2: "Batch requests can contain up to 1000 individual requests"
# Ask again this long before the token's end: a request signed just before expiry may still be
# refused in flight (MSAL refreshes about 5 minutes early; UNCONFIRMED exact figure).
TOKEN_REFRESH_MARGIN_SECONDS = 300.0


class DynamicsConfig(BaseModel):
    """One Dataverse environment and the Entra ID app registration telecrm signs in with."""

    model_config = ConfigDict(extra="forbid")

    org_url: (
        str  # the environment URL, e.g. https://contoso.crm.dynamics.com (region suffix varies)
    )
    tenant_id: str  # the Entra ID tenant (GUID or verified domain)
    client_id: str
    client_secret: SecretStr
    token_url: str | None = None  # override of the Entra token endpoint (the sandbox)
    api_url: str | None = None  # override of the Web API host (the sandbox); default org_url
    api_version: str = DATAVERSE_API_VERSION
    # Operations per $batch: the documented maximum by default. Microsoft advises smaller batches
    # when plug-ins make each operation slow (api-limits.md "Avoid large batches"): lower it then.
    batch_size: int = Field(DATAVERSE_BATCH_MAX, ge=1, le=DATAVERSE_BATCH_MAX)
    solution_unique_name: str | None = None  # MSCRM.SolutionUniqueName for provisioned columns
    timeout_seconds: float = Field(120.0, gt=0)  # §4.3: message operations time out at 2 minutes

    @field_validator("org_url", "token_url", "api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def scope(self) -> str:
        return f"{self.org_url}/.default"

    @property
    def token_endpoint(self) -> str:
        return self.token_url or f"{ENTRA_AUTHORITY}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def data_url(self) -> str:
        return f"{self.api_url or self.org_url}/api/data/v{self.api_version}/"

    def pointed_at(self, base_url: str) -> DynamicsConfig:
        """This configuration with both the token endpoint and the Web API at `base_url`
        (what `TELECRM_<DESTINATION>_URL` does for a sandbox)."""
        base = base_url.rstrip("/")
        return self.model_copy(
            update={"token_url": f"{base}/{self.tenant_id}/oauth2/v2.0/token", "api_url": base}
        )


class DynamicsTokenSource:
    """Keeps one access token fresh. Token calls count in `stats.token_calls` only."""

    def __init__(
        self,
        config: DynamicsConfig,
        client: httpx.Client,
        stats: CallStats,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.client, self.stats, self.now = config, client, stats, now
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        if self._token is None or self.now() >= self._expires_at - TOKEN_REFRESH_MARGIN_SECONDS:
            self._fetch()
        assert self._token is not None
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _fetch(self) -> None:
        self.stats.token_calls += 1
        c = self.config
        form = {
            "grant_type": "client_credentials",
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
            "scope": c.scope,
        }
        try:
            response = self.client.post(c.token_endpoint, data=form, timeout=c.timeout_seconds)
        except httpx.TimeoutException:
            raise TransientFailure("TIMEOUT", "token endpoint") from None
        except httpx.TransportError:
            raise TransientFailure("CONNECTION", "token endpoint") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientFailure("SERVER_ERROR", "token endpoint", status=response.status_code)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = (
                str(body.get("error", "invalid_response"))
                if isinstance(body, dict)
                else "invalid_response"
            )
            codes = body.get("error_codes") if isinstance(body, dict) else None
            # AADSTS codes name the problem (bad secret, unknown app, bad scope); the
            # description is not copied: it may quote the tenant or app identifiers.
            detail = (
                f"Entra ID AADSTS{codes[0]}" if isinstance(codes, list) and codes else "Entra ID"
            )
            raise AuthFailed(error, detail, status=response.status_code)
        self._token = str(body["access_token"])
        self._expires_at = self.now() + float(body.get("expires_in", 3599))
