"""Access tokens: telecrm's own ES256 tokens, an external issuer's through its JWKS (served by an
in-process app, never the network), and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from telecrm.domain.clock import to_micros
from telecrm.security.clients import create_client
from telecrm.security.jwks import (
    JwksCache,
    JwksUnavailable,
    http_fetcher,
    parse_jwks,
    verification_key,
)
from telecrm.security.roles import Role
from telecrm.security.signing_keys import SigningKeys
from telecrm.security.tables import signing_keys
from telecrm.security.tokens import (
    ExternalIssuer,
    RoleMissing,
    TokenRejected,
    TokenService,
)
from telecrm.settings import Settings
from tests.support.read_api import bearer, open_read_api, read_api_settings

ISSUER = "https://login.example-idp.com/"
AUDIENCE = "api://telecrm"
JWKS_URL = "https://login.example-idp.com/.well-known/jwks.json"  # served in-process


class FakeIssuer:
    """An identity provider: RSA and EC keys, its JWKS served in-process, counting fetches."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: list[dict[str, Any]] = [
            self.jwk(self.rsa, "rsa-1"),
            self.jwk(self.ec, "ec-1"),
        ]
        self.hits = 0
        self.down = False
        app = FastAPI()

        @app.get("/.well-known/jwks.json")
        def jwks() -> Any:
            self.hits += 1
            if self.down:
                from starlette.responses import Response

                return Response(status_code=503)
            return {"keys": self.published}

        self.http = TestClient(app)

    @staticmethod
    def jwk(key: Any, kid: str) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm
            if isinstance(key, rsa.RSAPrivateKey)
            else jwt.algorithms.ECAlgorithm
        )
        return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}

    def token(self, now: int, *, kid: str = "rsa-1", **claims: Any) -> str:
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-123", "client_id": "svc-123",
                "telecrm_role": "marketing", "iat": now, "exp": now + 300, **claims}  # fmt: skip
        key, alg = (self.rsa, "RS256") if kid.startswith("rsa") else (self.ec, "ES256")
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg,
                          headers={"kid": kid})  # fmt: skip


@pytest.fixture
def idp() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
def service(runtime, clock, idp: FakeIssuer) -> TokenService:
    cache = JwksCache(JWKS_URL, http_fetcher(idp.http), clock)
    return TokenService(
        runtime.engine,
        SigningKeys(runtime.engine, runtime.cipher, clock),
        clock,
        issuer="https://telecrm.example",
        ttl_seconds=600,
        external=ExternalIssuer(ISSUER, AUDIENCE, "telecrm_role", cache),
    )


def now_of(clock) -> int:
    return int(clock.now().timestamp())


def reason_of(service: TokenService, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        service.verify(token)
    return caught.value.reason


# -- telecrm's own tokens -------------------------------------------------------------------------


def test_own_tokens_round_trip_and_the_key_is_sealed_at_rest(service, runtime, clock) -> None:
    with runtime.engine.begin() as conn:
        client = create_client(conn, "svc", Role.INTEGRATION, now_us=to_micros(clock.now())).client
    issued = service.issue(client)
    principal = service.verify(issued.access_token)
    assert (principal.client_id, principal.role, principal.external) == (
        client.client_id, Role.INTEGRATION, False,
    )  # fmt: skip
    with runtime.engine.connect() as conn:
        row = conn.execute(select(signing_keys)).one()
    assert "PRIVATE" not in row.sealed_private and "BEGIN" not in row.sealed_private
    assert "d" not in orjson.loads(row.public_jwk)
    # Another process reads the same key back through the keyring and accepts the token.
    other = TokenService(
        runtime.engine, SigningKeys(runtime.engine, runtime.cipher, clock), clock,
        issuer="https://telecrm.example", ttl_seconds=600,
    )  # fmt: skip
    assert other.verify(issued.access_token).client_id == client.client_id
    assert other.keys.signing_key().kid == row.kid


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nbf": 120}, "not_yet_valid"),
        ({"iat": 120}, "issued_in_future"),
        ({"exp": -31}, "expired"),
        ({"exp": "soon"}, "malformed"),
    ],
)
def test_times_are_checked_on_the_injected_clock_with_a_small_leeway(
    service, idp, clock, claims, reason
) -> None:
    now = now_of(clock)
    token = idp.token(now, **{k: (now + v if isinstance(v, int) else v) for k, v in claims.items()})
    assert reason_of(service, token) == reason
    within = idp.token(now, nbf=now + 20, iat=now + 20)
    assert service.verify(within).role is Role.MARKETING


# -- an external issuer ---------------------------------------------------------------------------


def test_an_external_rs256_or_es256_token_names_client_and_role(service, idp, clock) -> None:
    principal = service.verify(idp.token(now_of(clock)))
    assert (principal.client_id, principal.role, principal.external) == (
        "svc-123",
        Role.MARKETING,
        True,
    )
    assert principal.actor == "oauth:svc-123"
    assert (
        service.verify(idp.token(now_of(clock), kid="ec-1", telecrm_role=["compliance"])).role
        is Role.COMPLIANCE
    )


@pytest.mark.parametrize(
    ("role_claim", "expected"),
    [(None, RoleMissing), ("root", RoleMissing), (["admin", "marketing"], RoleMissing)],
)
def test_a_token_without_exactly_one_role_is_refused(
    service, idp, clock, role_claim, expected
) -> None:
    with pytest.raises(expected):
        service.verify(idp.token(now_of(clock), telecrm_role=role_claim))


def test_wrong_audience_issuer_and_missing_claims_are_refused(service, idp, clock) -> None:
    now = now_of(clock)
    assert reason_of(service, idp.token(now, aud="api://someone-else")) == "wrong_audience"
    assert reason_of(service, idp.token(now, iss="https://evil.example/")) == "unknown_issuer"
    assert reason_of(service, idp.token(now, exp=None)) == "missing_claim"
    assert reason_of(service, idp.token(now, client_id=None, sub="x" * 300)) == "missing_claim"


def test_hs256_signed_with_the_issuers_public_key_is_refused(service, idp, clock) -> None:
    genuine = idp.token(now_of(clock))
    _, payload, _ = genuine.split(".")
    forged_header = (
        base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}))
        .decode()
        .rstrip("=")
    )
    pem = idp.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, orjson.dumps(idp.published[0])):
        mac = hmac.new(secret, f"{forged_header}.{payload}".encode(), hashlib.sha256).digest()
        forged = f"{forged_header}.{payload}." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
        assert reason_of(service, forged) == "disallowed_algorithm"


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RS512", "ES384", "PS256", "EdDSA"])
def test_only_rs256_and_es256_are_ever_accepted(service, idp, clock, alg) -> None:
    header = (
        base64.urlsafe_b64encode(orjson.dumps({"alg": alg, "kid": "rsa-1"})).decode().rstrip("=")
    )
    payload = idp.token(now_of(clock)).split(".")[1]
    assert reason_of(service, f"{header}.{payload}.c2ln") == "disallowed_algorithm"


def test_a_token_whose_alg_does_not_match_its_key_is_refused(service, idp, clock) -> None:
    # Signed ES256 with the EC key, but naming the RSA key's id.
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "exp": now_of(clock) + 60},
        idp.ec, algorithm="ES256", headers={"kid": "rsa-1"},
    )  # fmt: skip
    assert reason_of(service, token) == "disallowed_algorithm"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "é.é.é", "x" * 9000])
def test_garbage_is_malformed(service, token: str) -> None:
    assert reason_of(service, token) == "malformed"


def test_an_unknown_kid_refetches_the_set_at_most_once_a_minute(service, idp, clock) -> None:
    now = now_of(clock)
    service.verify(idp.token(now))
    assert idp.hits == 1
    rotated = ec.generate_private_key(ec.SECP256R1())
    stranger = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "exp": now + 60},
                          rotated, algorithm="ES256", headers={"kid": "ec-2"})  # fmt: skip
    assert reason_of(service, stranger) == "unknown_key"
    assert reason_of(service, stranger) == "unknown_key"
    assert idp.hits == 1  # attempted at first use, less than a minute ago
    clock.advance(timedelta(seconds=61))
    idp.published.append(FakeIssuer.jwk(rotated, "ec-2"))  # the issuer rotates in a new key
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "telecrm_role": "admin",
                        "exp": now_of(clock) + 60}, rotated, algorithm="ES256",
                       headers={"kid": "ec-2"})  # fmt: skip
    assert service.verify(token).role is Role.ADMIN
    assert idp.hits == 2


def test_a_stale_set_keeps_verifying_known_keys_while_the_issuer_is_down(
    service, idp, clock
) -> None:
    service.verify(idp.token(now_of(clock)))
    idp.down = True
    clock.advance(timedelta(hours=2))
    assert service.verify(idp.token(now_of(clock))).client_id == "svc-123"
    assert idp.hits == 2  # one refetch for the stale set, not one per request
    with pytest.raises(JwksUnavailable, match="could not be fetched"):
        service.verify(idp.token(now_of(clock), kid="ec-9"))  # unknown: cannot tell, say so
    assert idp.hits == 2


def test_the_jwks_parser_keeps_only_signature_keys_it_trusts(idp) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = {"keys": [
        idp.published[0],
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        FakeIssuer.jwk(weak, "weak"),
        FakeIssuer.jwk(p384, "p384"),
        {**idp.published[1], "kid": "enc", "use": "enc"},
        {**idp.published[1], "kid": "lying", "alg": "RS256"},
        {**idp.published[1], "kid": None},
        "not a key",
    ]}  # fmt: skip
    assert set(parse_jwks(document)) == {"rsa-1"}
    assert verification_key({"kty": "RSA", "kid": "x", "n": "!!", "e": "AQAB"}) is None
    with pytest.raises(JwksUnavailable):
        parse_jwks(["not", "a", "set"])


# -- the external issuer through the API ----------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_api_settings(
        tmp_path, oauth_issuer=ISSUER, oauth_audience=AUDIENCE, oauth_jwks_url=JWKS_URL,
        oauth_role_claim="https://telecrm.example/role",
    )  # fmt: skip


def test_the_api_accepts_the_external_issuer_with_its_configured_role_claim(
    runtime, clock, idp
) -> None:
    with open_read_api(runtime, clock, jwks_fetch=http_fetcher(idp.http)) as api:
        token = idp.token(now_of(clock), **{"https://telecrm.example/role": "admin"})
        assert api.http.get("/v1/funnels", headers=bearer(token)).status_code == 200
        default_claim_only = idp.token(now_of(clock))  # telecrm_role is not the claim here
        refused = api.http.get("/v1/funnels", headers=bearer(default_claim_only))
        assert refused.status_code == 403 and refused.json()["type"].endswith("/no_role")
        idp.down = True
        clock.advance(timedelta(minutes=2))
        stranger = idp.token(now_of(clock), kid="ec-7")
        down = api.http.get("/v1/funnels", headers=bearer(stranger))
        assert down.status_code == 503 and down.json()["type"].endswith("/issuer_unavailable")


def test_an_external_issuer_needs_all_three_settings_and_https(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TELECRM_OAUTH_JWKS_URL is not set"):
        read_api_settings(tmp_path, oauth_issuer=ISSUER, oauth_audience=AUDIENCE)
    with pytest.raises(ValidationError, match="https"):
        read_api_settings(tmp_path, oauth_issuer=ISSUER, oauth_audience=AUDIENCE,
                          oauth_jwks_url="http://idp.example/jwks")  # fmt: skip
    with pytest.raises(ValidationError, match="https"):
        read_api_settings(tmp_path, oauth_issuer=ISSUER, oauth_audience=AUDIENCE,
                          oauth_jwks_url="http://localhost.evil.example/jwks")  # fmt: skip


def test_jwks_http_fetcher_reports_failures_without_secrets(idp) -> None:
    idp.down = True
    with pytest.raises(JwksUnavailable, match="answered HTTP 503"):
        http_fetcher(idp.http)(JWKS_URL)
