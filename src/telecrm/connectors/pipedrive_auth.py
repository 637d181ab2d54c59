"""Pipedrive credentials: an API token, or OAuth access tokens from a single-use refresh token.

Pipedrive's OAuth access tokens last an hour and each refresh token may be exchanged once
(docs/research crm-apis.md §3.1), so `OAuthTokens` keeps the newest refresh token it was given
and exposes it (`refresh_token`) for the caller to persist; the one in the configuration is
spent after the first refresh. Token calls are counted apart from API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from telecrm.connectors.base import AuthFailed, CallStats, TransientFailure, check_token_or_oauth

PIPEDRIVE_API_BASE = "https://api.pipedrive.com"  # v2 base; v1 also on {company}.pipedrive.com (§3)
PIPEDRIVE_TOKEN_URL = "https://oauth.pipedrive.com/oauth/token"  # noqa: S105 - a URL (§3.1)
TOKEN_REFRESH_MARGIN_S = 300.0  # refresh 5 minutes before the 3600 s token runs out (§3.1)


class PipedriveConfig(BaseModel):
    """One Pipedrive company: a user's API token, or an OAuth app's client and refresh token."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = PIPEDRIVE_API_BASE
    api_token: SecretStr | None = None
    token_in_query: bool = False  # send ?api_token= instead of the x-api-token header (§3.1)
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_url: str = PIPEDRIVE_TOKEN_URL
    timeout_seconds: float = 30.0

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        check_token_or_oauth(
            "api_token", self.api_token, self.client_id, self.client_secret, self.refresh_token
        )
        return self

    @property
    def uses_oauth(self) -> bool:
        return self.api_token is None


class OAuthTokens:
    """Access tokens from Pipedrive's refresh_token grant, renewed before they expire."""

    def __init__(
        self,
        config: PipedriveConfig,
        client: httpx.Client,
        stats: CallStats,
        now: Callable[[], float],
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        assert config.refresh_token is not None
        self._on_refresh = on_refresh
        self._config = config
        self._client = client
        self._stats = stats
        self._now = now
        self._token: str | None = None
        self._refresh_at = 0.0
        self.refresh_token: str = config.refresh_token.get_secret_value()

    def current(self) -> str:
        """A usable access token, refreshing first when it is within the margin of expiry."""
        if self._token is None or self._now() >= self._refresh_at:
            self.refresh()
        assert self._token is not None
        return self._token

    def refresh(self) -> None:
        """Exchange the refresh token; client credentials go in the Basic header (§3.1)."""
        config = self._config
        assert config.client_secret is not None
        self._stats.token_calls += 1
        try:
            response = self._client.post(
                config.token_url,
                data={"grant_type": "refresh_token", "refresh_token": self.refresh_token},
                auth=(config.client_id or "", config.client_secret.get_secret_value()),
            )
        except httpx.TimeoutException:
            raise TransientFailure("TOKEN_TIMEOUT", "OAuth token endpoint timed out") from None
        except httpx.TransportError as exc:
            raise TransientFailure("TOKEN_CONNECTION", type(exc).__name__) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientFailure("TOKEN_UNAVAILABLE", status=response.status_code)
        body = _json_or_empty(response)
        if response.status_code != 200 or "access_token" not in body:
            # invalid_grant, invalid_client, ...: the OAuth error code, never a secret
            raise AuthFailed(
                str(body.get("error") or "TOKEN_REFUSED"),
                "OAuth refresh refused",
                status=response.status_code,
            )
        expires_in = float(str(body.get("expires_in", 3600)))
        self._token = str(body["access_token"])
        rotated = str(body.get("refresh_token") or self.refresh_token)
        if rotated != self.refresh_token and self._on_refresh is not None:
            self._on_refresh(rotated)  # the old one is spent: keep the new one before using it
        self.refresh_token = rotated
        self._refresh_at = self._now() + expires_in - min(TOKEN_REFRESH_MARGIN_S, expires_in / 2)


def _json_or_empty(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
