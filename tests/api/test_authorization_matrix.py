"""The authorization matrix: every read endpoint, every role, every way a token can be bad.

A good token of a role that may call the endpoint gets its 200; a good token of any other role
gets 403; every bad token gets 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`,
whatever the role it claims. No response ever holds a canary value of a field the role may not
see, and no log line holds any canary at all.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from telecrm.observability.logs import configure_logging
from telecrm.security.roles import Role, visible_fields
from telecrm.settings import Settings
from tests.support.builders import CANARY_EMAIL
from tests.support.read_api import (
    CANARIES,
    PATIENT,
    REASON,
    ReadApi,
    bearer,
    canaries_in,
    open_read_api,
    read_api_settings,
)

ADMIN, INTEGRATION, MARKETING, CARE, COMPLIANCE = (
    Role.ADMIN,
    Role.INTEGRATION,
    Role.MARKETING,
    Role.CARE_COORDINATOR,
    Role.COMPLIANCE,
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    allowed: frozenset[Role]
    json: dict[str, Any] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    whole_record: bool = False  # the right-of-access export: every value, for the patient

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# Who may call what: the role table of docs/api.md, written out by hand on purpose.
ENDPOINTS = [
    Endpoint("GET", f"/v1/patients/{PATIENT}", frozenset({MARKETING, CARE})),
    Endpoint("GET", f"/v1/patients/{PATIENT}/timeline", frozenset({MARKETING, CARE})),
    Endpoint(
        "POST", "/v1/patients/search", frozenset({CARE, COMPLIANCE}), json={"email": CANARY_EMAIL}
    ),
    Endpoint("GET", f"/v1/patients/{PATIENT}/disclosures", frozenset({COMPLIANCE})),
    Endpoint("GET", f"/v1/patients/{PATIENT}/export", frozenset({COMPLIANCE}), whole_record=True),
    Endpoint("GET", "/v1/audit", frozenset({ADMIN, COMPLIANCE})),
    Endpoint("GET", "/v1/segments", frozenset({ADMIN, INTEGRATION, MARKETING})),
    Endpoint("GET", "/v1/funnels", frozenset({ADMIN, MARKETING})),
    Endpoint("GET", "/v1/journeys", frozenset({ADMIN, INTEGRATION, MARKETING})),
    Endpoint(
        "GET", "/v1/journeys/lead_nurturing/stats", frozenset({ADMIN, INTEGRATION, MARKETING})
    ),
    Endpoint("GET", "/v1/sync/status", frozenset({ADMIN, INTEGRATION})),
    Endpoint("GET", "/v1/sync/dead-letters", frozenset({ADMIN, INTEGRATION})),
    Endpoint("GET", "/v1/clients", frozenset({ADMIN})),
]

# Each bad token variant, built from a genuine token of the role, and the reason code it earns.
BadToken = Callable[[ReadApi, Role, str], str | None]


def _expired(api: ReadApi, role: Role, _: str) -> str:
    now = api.clock.now()
    api.clock.set(now - timedelta(hours=1))
    try:
        return api.token(role)
    finally:
        api.clock.set(now)


def _disabled(api: ReadApi, role: Role, _: str) -> str:
    client_id = api.add_client(role, name=f"{role.value}-to-disable")
    response = api.request_token(client_id)
    api.disable(client_id)
    return str(response.json()["access_token"])


BAD_TOKENS: dict[str, tuple[BadToken, str]] = {
    "no token": (lambda api, role, good: None, "missing_token"),
    "expired": (_expired, "expired"),
    "wrong issuer": (
        lambda api, role, good: api.forge().signed_with_our_key(good, iss="https://evil.example"),
        "unknown_issuer",
    ),
    "wrong audience": (
        lambda api, role, good: api.forge().signed_with_our_key(good, aud="https://other.example"),
        "wrong_audience",
    ),
    "alg none": (lambda api, role, good: api.forge().alg_none(good), "disallowed_algorithm"),
    "HS256 keyed with the public key": (
        lambda api, role, good: api.forge().hs256_with_public_key(good),
        "disallowed_algorithm",
    ),
    "tampered payload": (
        lambda api, role, good: api.forge().tampered(
            good, sub=api.clients[ADMIN], exp=api.forge().claims_of(good)["exp"] + 86_400
        ),
        "bad_signature",
    ),
    "unknown kid": (lambda api, role, good: api.forge().unknown_kid(good), "unknown_key"),
    "disabled client": (_disabled, "client_disabled"),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_api_settings(tmp_path)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        configure_logging("WARNING")


@pytest.fixture
def api(runtime, clock, logs) -> Iterator[ReadApi]:
    with open_read_api(runtime, clock) as read_api:
        read_api.seed_canary_patient()
        yield read_api


def call(api: ReadApi, endpoint: Endpoint, token: str | None):
    headers = {**REASON, **endpoint.extra, **(bearer(token) if token else {})}
    return api.http.request(endpoint.method, endpoint.path, headers=headers, json=endpoint.json)


def assert_no_forbidden_canary(text: str, role: Role, where: str) -> None:
    allowed = visible_fields(role)
    leaked = {value for value in canaries_in(text) if CANARIES[value] not in allowed}
    assert not leaked, f"{where}: {role.value} received {sorted(CANARIES[v] for v in leaked)}"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_every_role_and_every_bad_token_get_the_expected_answer(
    api: ReadApi, endpoint: Endpoint, logs: io.StringIO
) -> None:
    good = {role: api.token(role) for role in Role}
    for role in Role:
        response = call(api, endpoint, good[role])
        where = f"{endpoint} as {role.value}"
        if role in endpoint.allowed:
            assert response.status_code == 200, f"{where}: {response.text}"
        else:
            assert response.status_code == 403, f"{where}: {response.text}"
            assert response.headers["content-type"] == "application/problem+json"
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        if not (endpoint.whole_record and role in endpoint.allowed):
            assert_no_forbidden_canary(response.text, role, where)
        fields = response.json().get("fields") if response.status_code == 200 else None
        if isinstance(fields, dict):
            assert set(fields) <= visible_fields(role), where

        for variant, (make, reason) in BAD_TOKENS.items():
            response = call(api, endpoint, make(api, role, good[role]))
            where = f"{endpoint} as {role.value} with {variant}"
            assert response.status_code == 401, f"{where}: {response.text}"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"].endswith("/" + reason), where
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="telecrm"'), where
            if variant != "no token":
                assert 'error="invalid_token"' in challenge, where
            assert not canaries_in(response.text), where
    assert not canaries_in(logs.getvalue()), sorted(canaries_in(logs.getvalue()))


def test_every_denial_is_logged_and_audited_without_the_token(api: ReadApi, logs) -> None:
    from telecrm.security.audit import audit_rows

    token = api.token(MARKETING)
    forged = api.forge().alg_none(token)
    assert call(api, ENDPOINTS[4], token).status_code == 403  # marketing reads the audit log
    assert call(api, ENDPOINTS[0], forged).status_code == 401
    with api.runtime.engine.connect() as conn:
        denials = [r for r in audit_rows(conn, limit=50) if r["action"] == "deny"]
    assert [(d["outcome"], d["purpose"].split(":")[0]) for d in denials] == [
        ("denied", "401 disallowed_algorithm"),
        ("denied", "403 forbidden"),
    ]
    assert denials[0]["record_type"] == "patient" and denials[0]["record_ids"] == [PATIENT]
    assert denials[1]["actor"] == f"client:{api.clients[MARKETING]}"
    text = logs.getvalue()
    assert text.count('"access.denied"') == 2
    for secret in (token, forged, token.split(".")[1], forged.split(".")[1]):
        assert secret not in text
    metrics = api.http.get("/metrics").text
    assert 'telecrm_access_denied_total{reason="forbidden",status="403"} 1.0' in metrics


def test_a_bad_token_is_refused_before_a_bad_parameter_is_looked_at(api: ReadApi) -> None:
    response = api.http.get("/v1/sync/dead-letters?limit=100000")
    assert response.status_code == 401
    response = api.http.get("/v1/sync/dead-letters?limit=100000", headers=bearer(api.token(ADMIN)))
    assert response.status_code == 422
