"""HubSpot credentials: a private-app token, or OAuth access tokens refreshed before they expire.

HubSpot asks integrations to refresh on the token's TTL rather than wait for a 401
(crm-apis.md §1.1), so `OAuthTokens` refreshes a margin before `expires_in` runs out, and once
more when a call is refused anyway. Token calls are counted apart from API calls: they do not
count against HubSpot's API limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from telecrm.connectors.base import AuthFailed, CallStats, TransientFailure, check_token_or_oauth

HUBSPOT_API_BASE = "https://api.hubapi.com"  # crm-apis.md §1
HUBSPOT_TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a path, not a secret; OAuth v1 token endpoint (crm-apis.md §1.1)
TOKEN_REFRESH_MARGIN_S = 300.0  # refresh 5 minutes early: the 1800 s token never runs out mid-batch


class HubSpotConfig(BaseModel):
    """One HubSpot account: a private-app token, or an OAuth app's refresh token."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = HUBSPOT_API_BASE
    private_app_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_url: str | None = None  # default: base_url + /oauth/v1/token
    timeout_seconds: float = 30.0

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        check_token_or_oauth(
            "private_app_token",
            self.private_app_token,
            self.client_id,
            self.client_secret,
            self.refresh_token,
        )
        return self

    @property
    def uses_oauth(self) -> bool:
        return self.private_app_token is None

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or self.base_url.rstrip("/") + HUBSPOT_TOKEN_PATH


class OAuthTokens:
    """Access tokens from HubSpot's refresh-token grant, renewed before they expire."""

    def __init__(
        self,
        config: HubSpotConfig,
        client: httpx.Client,
        stats: CallStats,
        now: Callable[[], float],
    ) -> None:
        self._config = config
        self._client = client
        self._stats = stats
        self._now = now
        self._token: str | None = None
        self._refresh_at = 0.0

    def current(self) -> str:
        """A usable access token, refreshing first when it is within the margin of expiry."""
        if self._token is None or self._now() >= self._refresh_at:
            self.refresh()
        assert self._token is not None
        return self._token

    def refresh(self) -> None:
        config = self._config
        assert config.client_secret is not None and config.refresh_token is not None
        form = {
            "grant_type": "refresh_token",
            "client_id": config.client_id or "",
            "client_secret": config.client_secret.get_secret_value(),
            "refresh_token": config.refresh_token.get_secret_value(),
        }
        self._stats.token_calls += 1
        try:
            response = self._client.post(config.resolved_token_url, data=form)
        except httpx.TimeoutException:
            raise TransientFailure("TOKEN_TIMEOUT", "OAuth token endpoint timed out") from None
        except httpx.TransportError as exc:
            raise TransientFailure("TOKEN_CONNECTION", type(exc).__name__) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientFailure("TOKEN_UNAVAILABLE", status=response.status_code)
        body = _json_or_empty(response)
        if response.status_code != 200 or "access_token" not in body:
            # BAD_REFRESH_TOKEN, BAD_CLIENT_ID, ...: the status field names it, never a secret
            raise AuthFailed(
                str(body.get("status") or "TOKEN_REFUSED"),
                "OAuth refresh refused",
                status=response.status_code,
            )
        now = self._now()
        expires_in = float(str(body.get("expires_in", 1800)))
        self._token = str(body["access_token"])
        self._refresh_at = now + expires_in - min(TOKEN_REFRESH_MARGIN_S, expires_in / 2)


def _json_or_empty(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
