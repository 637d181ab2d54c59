"""Salesforce OAuth 2.0 server-to-server token flows: JWT bearer and client credentials.

Neither flow returns a refresh token: when a session expires (401 INVALID_SESSION_ID) the
connector simply asks for a new one. Request shapes follow Salesforce's help articles
(xcloud.remoteaccess_oauth_jwt_flow.htm, xcloud.remoteaccess_oauth_client_credentials_flow.htm)
and simple-salesforce's `login.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from telecrm.connectors.base import AuthFailed, CallStats, TransientFailure

SALESFORCE_API_VERSION = "62.0"  # pinned; settings may override (crm-apis.md §2)
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523
JWT_LIFETIME_SECONDS = 180  # Salesforce: exp within 3 minutes of issue
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret


class SalesforceConfig(BaseModel):
    """One Salesforce org and how telecrm signs in to it (exactly one flow)."""

    model_config = ConfigDict(extra="forbid")

    login_url: str = "https://login.salesforce.com"  # or test.salesforce.com / the My Domain URL
    api_version: str = SALESFORCE_API_VERSION
    # JWT bearer flow
    consumer_key: str | None = None
    username: str | None = None
    private_key: SecretStr | None = None  # PEM (RSA), the connected app's certificate key
    audience: str | None = None  # defaults to login_url
    # client credentials flow (My Domain login_url)
    client_id: str | None = None
    client_secret: SecretStr | None = None
    timeout_seconds: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _one_flow(self) -> SalesforceConfig:
        jwt_ready = bool(self.consumer_key and self.username and self.private_key)
        cc_ready = bool(self.client_id and self.client_secret)
        if jwt_ready == cc_ready:
            raise ValueError(
                "configure exactly one flow: consumer_key+username+private_key, or client_id+client_secret"
            )
        return self

    @property
    def flow(self) -> Literal["jwt_bearer", "client_credentials"]:
        return "jwt_bearer" if self.consumer_key else "client_credentials"


@dataclass(frozen=True, slots=True)
class SalesforceSession:
    access_token: str
    instance_url: str  # every API call goes here, never to a hard-coded host


class SalesforceTokenSource:
    """Mints sessions with the configured flow. Token calls count in `stats.token_calls` only."""

    def __init__(
        self,
        config: SalesforceConfig,
        client: httpx.Client,
        stats: CallStats,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.client, self.stats, self.now = config, client, stats, now

    def _form(self) -> dict[str, str]:
        c = self.config
        if c.flow == "jwt_bearer":
            assert c.private_key is not None
            claims = {
                "iss": c.consumer_key,
                "sub": c.username,
                "aud": c.audience or c.login_url,
                "exp": int(self.now()) + JWT_LIFETIME_SECONDS,
            }
            assertion = jwt.encode(claims, c.private_key.get_secret_value(), algorithm="RS256")
            return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        assert c.client_secret is not None and c.client_id is not None
        return {
            "grant_type": "client_credentials",
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
        }

    def fetch(self) -> SalesforceSession:
        self.stats.token_calls += 1
        url = self.config.login_url.rstrip("/") + TOKEN_PATH
        try:
            response = self.client.post(url, data=self._form(), timeout=self.config.timeout_seconds)
        except httpx.TimeoutException:
            raise TransientFailure("TIMEOUT", "token endpoint") from None
        except httpx.TransportError:
            raise TransientFailure("CONNECTION", "token endpoint") from None
        if response.status_code >= 500:
            raise TransientFailure("SERVER_ERROR", "token endpoint", status=response.status_code)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = (
                str(body.get("error", "invalid_response"))
                if isinstance(body, dict)
                else "invalid_response"
            )
            # error_description speaks of the app and the user, never of a patient.
            detail = str(body.get("error_description", ""))[:200] if isinstance(body, dict) else ""
            raise AuthFailed(error, f"{self.config.flow}: {detail}", status=response.status_code)
        return SalesforceSession(body["access_token"], str(body["instance_url"]).rstrip("/"))
