"""The Twilio SMS connector: one Messages API call per message, refusals mapped to outcomes.

A thin client of `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (research messaging.md
§4.1) through a Messaging Service, so Twilio picks the sender and applies the service's opt-outs.
Answers map per §5: 201 is sent; 21610 is opted_out; errors about the message's data are
rejected with Twilio's code; 401/20003, 429/20429 and 5xx or broken connections are the
whole-call errors of `connectors.base`. Twilio's messages can echo the number (§5.1), so only
codes and statuses ever leave this module, never a message, a number or a body.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from telecrm.connectors.base import (
    AuthFailed,
    ConfigurationError,
    ConnectorError,
    RateLimited,
    TransientFailure,
)
from telecrm.connectors.messaging_base import SendResult, SendStats, SmsMessage

TWILIO_API_BASE = "https://api.twilio.com"  # the spec's only server (§4.1)
TWILIO_BATCH_MAX = 1  # the Messages API creates one message per call (§4.1)
OPTED_OUT = 21610  # recipient sent STOP to this service (§5.2)
# Refusals for this message's data: permanent until the number or body changes (§5.2).
MESSAGE_REJECTIONS = frozenset({21211, 21408, 21602, 21604, 21612, 21614, 21617, 21635})
# Refusals for our account's setup: no message will pass until an operator fixes it (§5.2).
CONFIGURATION_ERRORS = frozenset({20404, 21603, 21606, 21608, 21609, 21701})
AUTH_FAILED = 20003
TOO_MANY_REQUESTS = 20429


class TwilioConfig(BaseModel):
    """One Twilio account and the Messaging Service telecrm sends through."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = TWILIO_API_BASE
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    messaging_service_sid: str = Field(pattern=r"^MG[0-9a-fA-F]{32}$")
    status_callback_url: str | None = None  # else the service's own callback URL
    timeout_seconds: float = 30.0


class TwilioConnector:
    """Sends SMS through one Messaging Service, through an injected httpx.Client."""

    name = "twilio"
    batch_max = TWILIO_BATCH_MAX

    def __init__(self, config: TwilioConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self.stats = SendStats()
        self._stats_lock = threading.Lock()
        self._client = client or httpx.Client(timeout=config.timeout_seconds)
        self._url = (
            f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        )
        self._auth = (config.account_sid, config.auth_token.get_secret_value())

    def close(self) -> None:
        self._client.close()

    def send_sms(self, messages: Sequence[SmsMessage]) -> list[SendResult]:
        """One result per message, in order.

        A whole-call failure on the first message raises. After a message has gone out, a
        retryable failure does not raise (that would lose the sent results and send them twice
        on retry): the rest come back as outcome "retry" with the failure's code.
        """
        results: list[SendResult] = []
        for index, message in enumerate(messages):
            try:
                results.append(self._send_one(message))
            except TransientFailure as exc:
                if index == 0:
                    raise
                results += [
                    SendResult(m.message_id, "retry", code=exc.code, detail=exc.detail)
                    for m in messages[index:]
                ]
                break
        return results

    def _send_one(self, message: SmsMessage) -> SendResult:
        form = {
            "To": message.to_phone,
            "MessagingServiceSid": self.config.messaging_service_sid,
            "Body": message.body,
        }
        if self.config.status_callback_url:
            form["StatusCallback"] = self.config.status_callback_url
        with self._stats_lock:  # the dispatcher sends from several threads at once
            self.stats.calls += 1
        try:
            response = self._client.post(self._url, data=form, auth=self._auth)
        except httpx.TimeoutException:
            raise TransientFailure("timeout", "Twilio did not answer in time") from None
        except httpx.RemoteProtocolError:
            raise TransientFailure(
                "connection_dropped", "the connection broke before Twilio answered; "
                "the message may have been sent",
            ) from None  # fmt: skip
        except httpx.TransportError as exc:
            raise TransientFailure("connection_failed", type(exc).__name__) from None
        return self._result(message, response)

    def _result(self, message: SmsMessage, response: httpx.Response) -> SendResult:
        status = response.status_code
        body = _json(response)
        if status == 201 and isinstance(body.get("sid"), str):
            return SendResult(message.message_id, "sent", provider_id=body["sid"])
        code = body.get("code") if isinstance(body.get("code"), int) else None
        name = str(code if code is not None else status)
        if status == 401 or code == AUTH_FAILED:
            raise AuthFailed(name, "Twilio refused the account SID or auth token", status=status)
        if status == 429 or code == TOO_MANY_REQUESTS:
            with self._stats_lock:
                self.stats.rate_limited += 1
            raise RateLimited(
                name, "Twilio's request limit", status=status, retry_after=_retry_after(response)
            )
        if status >= 500:
            raise TransientFailure(
                name, f"Twilio answered {status}", status=status, retry_after=_retry_after(response)
            )
        if code == OPTED_OUT:
            return SendResult(
                message.message_id, "opted_out", code=name, detail="recipient opted out"
            )
        if code in CONFIGURATION_ERRORS:
            raise ConfigurationError(name, "the Twilio account or service refused the sender setup",
                                     status=status)  # fmt: skip
        if code in MESSAGE_REJECTIONS or 400 <= status < 500:
            return SendResult(
                message.message_id, "rejected", code=name, detail=f"Twilio error {name}"
            )
        raise ConnectorError(name, f"unexpected Twilio answer {status}", status=status)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


__all__ = ["TWILIO_BATCH_MAX", "TwilioConfig", "TwilioConnector"]
