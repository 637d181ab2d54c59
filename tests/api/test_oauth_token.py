"""POST /oauth/token: OAuth 2.0 client credentials (RFC 6749 §4.4) and its §5.2 errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from telecrm.security.roles import Role
from telecrm.settings import Settings
from tests.support.read_api import ReadApi, bearer, open_read_api, read_api_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_api_settings(tmp_path)


@pytest.fixture
def api(runtime, clock) -> Iterator[ReadApi]:
    with open_read_api(runtime, clock) as read_api:
        yield read_api


def assert_oauth_error(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_a_client_gets_a_short_lived_es256_token_with_basic_auth(api: ReadApi, clock) -> None:
    client_id = api.clients[Role.MARKETING]
    response = api.request_token(client_id)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "marketing"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == client_id and claims["telecrm_role"] == "marketing"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["iat"] == int(clock.now().timestamp())


def test_the_token_verifies_against_the_published_jwks(api: ReadApi) -> None:
    token = api.token(Role.ADMIN)
    jwks = api.http.get("/.well-known/jwks.json").json()
    (key,) = jwks["keys"]
    assert key["kty"] == "EC" and key["alg"] == "ES256" and "d" not in key
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        token, public, algorithms=["ES256"], audience="http://127.0.0.1:8000/v1",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )  # fmt: skip
    assert claims["iss"] == "http://127.0.0.1:8000"
    meta = api.http.get("/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"].endswith("/oauth/token")
    assert meta["grant_types_supported"] == ["client_credentials"]


def test_credentials_in_the_body_work_too(api: ReadApi) -> None:
    client_id = api.clients[Role.COMPLIANCE]
    response = api.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": api.secrets[client_id],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "compliance"


def test_a_wrong_secret_is_invalid_client_with_a_basic_challenge(api: ReadApi) -> None:
    client_id = api.clients[Role.ADMIN]
    response = api.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "tcs_wrong")
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_an_unknown_client_and_a_disabled_one_are_invalid_client(api: ReadApi) -> None:
    unknown = api.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("tcc_0000000000000000", "tcs_whatever"),
    )
    assert_oauth_error(unknown, 401, "invalid_client")
    client_id = api.clients[Role.MARKETING]
    api.disable(client_id)
    assert_oauth_error(api.request_token(client_id), 401, "invalid_client")


def test_no_client_authentication_is_invalid_client(api: ReadApi) -> None:
    response = api.http.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert_oauth_error(response, 401, "invalid_client")


def test_another_grant_type_is_unsupported(api: ReadApi) -> None:
    client_id = api.clients[Role.ADMIN]
    for grant in ("password", "authorization_code", "refresh_token"):
        response = api.http.post(
            "/oauth/token", data={"grant_type": grant}, auth=(client_id, api.secrets[client_id])
        )
        assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (b"grant_type=client_credentials&grant_type=client_credentials", None),
        (b"client_id=x", None),  # no grant_type
        (b"\xff\xfe=1", None),
        (b"a" * 5000, None),
    ],
    ids=["json", "repeated", "no-grant", "not-utf8", "too-big"],
)
def test_a_malformed_body_is_invalid_request(api: ReadApi, content: bytes, content_type) -> None:
    client_id = api.clients[Role.ADMIN]
    response = api.http.post(
        "/oauth/token",
        content=content,
        headers={"content-type": content_type or "application/x-www-form-urlencoded"},
        auth=(client_id, api.secrets[client_id]),
    )
    assert response.status_code in (400, 413)
    assert response.json()["error"] == "invalid_request"


def test_basic_and_body_credentials_together_are_refused(api: ReadApi) -> None:
    client_id = api.clients[Role.ADMIN]
    response = api.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id},
        auth=(client_id, api.secrets[client_id]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_a_malformed_basic_header_is_invalid_client(api: ReadApi) -> None:
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"):
        response = api.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": value},
        )
        assert_oauth_error(response, 401, "invalid_client")


def test_asking_for_another_roles_scope_is_invalid_scope(api: ReadApi) -> None:
    client_id = api.clients[Role.MARKETING]
    assert_oauth_error(api.request_token(client_id, scope="admin"), 400, "invalid_scope")
    assert api.request_token(client_id, scope="marketing").status_code == 200


def test_a_token_stops_working_when_it_expires(api: ReadApi, clock) -> None:
    from datetime import timedelta

    token = api.token(Role.ADMIN)
    assert api.http.get("/v1/clients", headers=bearer(token)).status_code == 200
    clock.advance(timedelta(seconds=600 + 29))  # inside the 30 s leeway
    assert api.http.get("/v1/clients", headers=bearer(token)).status_code == 200
    clock.advance(timedelta(seconds=2))
    response = api.http.get("/v1/clients", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["type"].endswith("/expired")


def test_token_requests_are_audited_without_the_secret(api: ReadApi) -> None:
    from telecrm.security.audit import audit_rows

    client_id = api.clients[Role.ADMIN]
    api.request_token(client_id)
    api.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "tcs_bad")
    )
    with api.runtime.engine.connect() as conn:
        rows = [r for r in audit_rows(conn, record_id=client_id) if r["action"] == "token"]
    assert [r["outcome"] for r in rows] == ["denied", "ok"]
    assert api.secrets[client_id] not in str(rows)
