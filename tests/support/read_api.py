"""The read API under test: the real app in-process, API clients per role, a canary patient, and
tokens forged every way an attacker would (own key with wrong claims, alg none, HS256 keyed
with the public key, tampered payload, unknown key id)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from pydantic import SecretStr

from telecrm.api.app import create_app
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.security.clients import create_client, disable_client
from telecrm.security.roles import Role
from telecrm.security.signing_keys import SigningKeys
from telecrm.settings import Settings
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_MEDICATION,
    CANARY_PHONE,
    MASTER_KEY,
    SECRET,
    SignedClient,
    event,
    registration,
)

PATIENT = "pat_canary"
REASON = {"X-Telecrm-Reason": "care review"}

# Canary value -> the catalog field it is stored in. A role that may not see the field must
# never receive the value, in any response, and no log line may ever hold it.
CANARIES: dict[str, str] = {
    CANARY_FIRST: "first_name",
    CANARY_LAST: "last_name",
    CANARY_EMAIL: "email",
    CANARY_PHONE: "phone",
    "1 Canary Lane": "address_line1",
    "Canaryville": "city",
    "Canaryemergency Guardian": "emergency_contact_name",
    CANARY_CONDITION: "conditions",
    CANARY_MEDICATION: "medications",
    "Canarysymptom ache": "symptoms",
    "Canaryoutcome steady": "treatment_outcome",
    "Canaryshield Mutual": "insurance_provider",
    "CANARYMEMBER77": "insurance_member_id",
}


def read_api_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for read API tests: rate limits off (hundreds of requests on a frozen clock)."""
    values: dict[str, Any] = {
        "home": tmp_path,
        "master_key": SecretStr(MASTER_KEY),
        "webhook_secrets": [SecretStr(SECRET)],
        "embedded_worker": False,
        "rate_limit_api_rate": 0,
        "rate_limit_token_rate": 0,
        "rate_limit_intake_rate": 0,
    }
    values.update(overrides)
    return Settings(**values)


def canary_events(pid: str, at: datetime) -> list[dict[str, Any]]:
    s = timedelta(seconds=1)
    return [
        registration(
            pid,
            at,
            data={
                "first_name": CANARY_FIRST,
                "last_name": CANARY_LAST,
                "email": CANARY_EMAIL,
                "phone": CANARY_PHONE,
                "address": {
                    "line1": "1 Canary Lane",
                    "city": "Canaryville",
                    "state": "CA",
                    "postal_code": "94110",
                },
                "emergency_contact": {"name": "Canaryemergency Guardian", "phone": "+14155550199"},
                "insurance": {"provider": "Canaryshield Mutual", "member_id": "CANARYMEMBER77"},
                "conditions": [CANARY_CONDITION],
                "communication_preferences": {"email_consent": True, "marketing_consent": True},
            },
        ),
        event("session.tracked", pid, at + s, {"page": "/start", "feature": "chat"}),
        event(
            "consultation.submitted",
            pid,
            at + 2 * s,
            {"consultation_id": "c1", "symptoms": [{"name": "Canarysymptom ache", "severity": 4}]},
        ),
        event(
            "prescription.approved",
            pid,
            at + 3 * s,
            {"prescription_id": "rx1", "consultation_id": "c1", "medication": CANARY_MEDICATION},
        ),
        event("order.paid", pid, at + 4 * s, {"order_id": "o1", "amount": 49.0}),
        event(
            "treatment_plan.updated",
            pid,
            at + 5 * s,
            {"treatment_plan_id": "tp1", "status": "created", "outcome": "Canaryoutcome steady"},
        ),
    ]


def canaries_in(text: str) -> set[str]:
    low = text.lower()
    return {value for value in CANARIES if value.lower() in low}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ReadApi:
    runtime: Runtime
    clock: FrozenClock
    http: TestClient
    platform: SignedClient
    secrets: dict[str, str]  # client id -> secret
    clients: dict[Role, str]  # role -> client id
    _tokens: dict[tuple[Role, datetime], str] = field(default_factory=dict)

    def seed_canary_patient(self, pid: str = PATIENT) -> None:
        response = self.platform.post(canary_events(pid, self.clock.now() - timedelta(hours=1)))
        assert response.status_code == 202, response.text
        self.runtime.worker().drain()

    def add_client(self, role: Role, name: str | None = None) -> str:
        with self.runtime.engine.begin() as conn:
            new = create_client(
                conn, name or f"{role.value}-tests", role, now_us=to_micros(self.clock.now())
            )
        self.secrets[new.client.client_id] = new.secret
        return new.client.client_id

    def request_token(self, client_id: str, **form: str) -> httpx.Response:
        return self.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", **form},
            auth=(client_id, self.secrets[client_id]),
        )

    def token(self, role: Role) -> str:
        """A genuine token of the role's client, issued now (one per instant: scrypt is slow)."""
        key = (role, self.clock.now())
        if key not in self._tokens:
            response = self.request_token(self.clients[role])
            assert response.status_code == 200, response.text
            self._tokens[key] = str(response.json()["access_token"])
        return self._tokens[key]

    def disable(self, client_id: str) -> None:
        with self.runtime.engine.begin() as conn:
            disable_client(conn, client_id, now_us=to_micros(self.clock.now()))

    def forge(self) -> Forger:
        return Forger(SigningKeys(self.runtime.engine, self.runtime.cipher, self.clock), self)


@contextmanager
def open_read_api(
    runtime: Runtime, clock: FrozenClock, *, jwks_fetch: Callable[[str], Any] | None = None
) -> Iterator[ReadApi]:
    app = create_app(runtime, embedded_worker=False, jwks_fetch=jwks_fetch)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = ReadApi(runtime, clock, client, SignedClient(client, clock.now()), {}, {})
        for role in Role:
            api.clients[role] = api.add_client(role)
        yield api


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return (
        orjson.loads(base64.urlsafe_b64decode(header + "==")),
        orjson.loads(base64.urlsafe_b64decode(payload + "==")),
        signature,
    )


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))


class Forger:
    """Tokens an attacker could make, each based on a genuine token's claims."""

    def __init__(self, keys: SigningKeys, api: ReadApi) -> None:
        self.keys = keys
        self.api = api

    def claims_of(self, token: str) -> dict[str, Any]:
        return _segments(token)[1]

    def signed_with_our_key(self, token: str, **changes: Any) -> str:
        key = self.keys.signing_key()
        claims = {**self.claims_of(token), **changes}
        return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})

    def alg_none(self, token: str) -> str:
        header, claims, _ = _segments(token)
        return unsigned({**header, "alg": "none"}, claims) + "."

    def hs256_with_public_key(self, token: str) -> str:
        """The classic confusion attack: HMAC keyed with the published public key (PEM)."""
        header, claims, _ = _segments(token)
        public = self.keys.signing_key().private_key.public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = unsigned({**header, "alg": "HS256"}, claims)
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64(mac)

    def tampered(self, token: str, **changes: Any) -> str:
        header, claims, signature = _segments(token)
        return unsigned(header, {**claims, **changes}) + "." + signature

    def unknown_kid(self, token: str) -> str:
        stranger = ec.generate_private_key(ec.SECP256R1())
        return jwt.encode(
            self.claims_of(token), stranger, algorithm="ES256", headers={"kid": "not-a-known-kid"}
        )
