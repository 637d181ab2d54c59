"""The simulated platform's REST API: auth, keyset paging, the consultation workflow, problems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.simulate.platform_api import create_platform_app, mint_token
from telecrm.simulate.platform_data import PlatformData

SECRET = "test-platform-secret-0123456789abcdef"  # >= 32 bytes: PyJWT warns on shorter HMAC keys
EVENTS = list(generate(SimulationConfig(patients=40, months=3, seed=5)))
# The simulator assigns and accepts every consultation within the hour; leave the last two as
# the platform would hold them mid-flow (submitted only) so the workflow has something to do.
_SUBMITTED = [e["data"]["consultation_id"] for e in EVENTS if e["type"] == "consultation.submitted"]
OPEN = set(_SUBMITTED[-2:])
STREAM = [
    e
    for e in EVENTS
    if not (
        e["type"] in ("consultation.assigned", "consultation.accepted")
        and e["data"]["consultation_id"] in OPEN
    )
]
PATHS = {
    "/patients",
    "/patients/{patient_id}/consultations",
    "/consultations",
    "/consultations/pending",
    "/consultations/{consultation_id}/assign",
    "/consultations/{consultation_id}/accept",
    "/orders/stats",
    "/me/orders",
    "/me/consultations",
}


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2025, 4, 15, 12, 0, tzinfo=UTC)  # after the 3 simulated months

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def data() -> PlatformData:
    return PlatformData.from_events(STREAM)


@pytest.fixture
def client(data: PlatformData, clock: Clock) -> TestClient:
    return TestClient(create_platform_app(data, jwt_secret=SECRET, now=clock))


def bearer(
    clock: Clock, *, sub: str = "ops", role: Any = "admin", ttl: int = 3600
) -> dict[str, str]:
    return {
        "Authorization": "Bearer "
        + mint_token(SECRET, sub=sub, role=role, ttl_seconds=ttl, now=clock())
    }


def walk(
    client: TestClient, path: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= params.get("limit", 100)
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("paging never ended")


def key(row: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(row["updated_at"]), row["id"]


def test_materialises_the_stream(data: PlatformData) -> None:
    kinds = [e["type"] for e in STREAM]
    assert len(data.patients.rows) == kinds.count("patient.registered") == 40
    assert len(data.consultations.rows) == kinds.count("consultation.submitted")
    assert len(data.orders.rows) == kinds.count("order.paid")
    assert {c.id for c in data.consultations.rows.values() if c.status == "submitted"} == OPEN
    for row in [*data.patients.rows.values(), *data.orders.rows.values()]:
        assert row.created_at.tzinfo is not None and row.created_at <= row.updated_at


# -- auth ----------------------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    r = client.get("/patients")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["status"] == 401


def test_expired_and_tampered_tokens_are_401(client: TestClient, clock: Clock) -> None:
    expired = bearer(clock, ttl=60)
    clock.at += timedelta(seconds=61)
    r = client.get("/patients", headers=expired)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]

    token = mint_token(SECRET, sub="ops", role="admin", ttl_seconds=60, now=clock())
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (
        f"{header}.{payload}.{flipped}",
        mint_token(
            "another-secret-0123456789abcdefgh",
            sub="ops",
            role="admin",
            ttl_seconds=60,
            now=clock(),
        ),
        "not-a-jwt",
    ):
        r = client.get("/patients", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
        assert r.headers["www-authenticate"].startswith("Bearer")
    unknown_role = bearer(clock, role="superuser")
    assert client.get("/patients", headers=unknown_role).status_code == 401


def test_roles(client: TestClient, clock: Clock, data: PlatformData) -> None:
    pid = next(iter(data.patients.rows))
    as_patient = bearer(clock, sub=pid, role="patient")
    for path in (
        "/patients",
        "/consultations",
        "/consultations/pending",
        "/orders/stats",
        f"/patients/{pid}/consultations",
    ):
        r = client.get(path, headers=as_patient)
        assert r.status_code == 403, path
        assert r.headers["content-type"] == "application/problem+json"
    cid = next(iter(OPEN))
    assert (
        client.post(
            f"/consultations/{cid}/assign", json={"provider_id": "prov_1"}, headers=as_patient
        ).status_code
        == 403
    )
    assert client.post(f"/consultations/{cid}/accept", headers=as_patient).status_code == 403
    assert client.get("/me/orders", headers=bearer(clock)).status_code == 403
    assert (
        client.get(
            "/me/orders", headers=bearer(clock, sub="pat_nobody", role="patient")
        ).status_code
        == 404
    )


def test_me_endpoints_return_only_the_callers_rows(
    client: TestClient, clock: Clock, data: PlatformData
) -> None:
    buyers = {o.patient_id for o in data.orders.rows.values()}
    assert len(buyers) >= 2
    for pid in sorted(buyers)[:3]:
        headers = bearer(clock, sub=pid, role="patient")
        orders = walk(client, "/me/orders", headers, limit=2)
        assert orders and {o["patient_id"] for o in orders} == {pid}
        assert {o["id"] for o in orders} == {
            o.id for o in data.orders.rows.values() if o.patient_id == pid
        }
        cons = walk(client, "/me/consultations", headers, limit=2)
        assert {c["id"] for c in cons} == {
            c.id for c in data.consultations.rows.values() if c.patient_id == pid
        }


# -- paging --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "collection"), [("/patients", "patients"), ("/consultations", "consultations")]
)
def test_paging_walks_every_record_once_in_order(
    client: TestClient, clock: Clock, data: PlatformData, path: str, collection: str
) -> None:
    headers = bearer(clock)
    rows = walk(client, path, headers, limit=7)
    everything = client.get(path, params={"limit": 500}, headers=headers).json()
    assert everything["next_cursor"] is None
    assert rows == everything["data"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(getattr(data, collection).rows)
    assert [key(r) for r in rows] == sorted(key(r) for r in rows)
    assert all(r["updated_at"].endswith("Z") and r["created_at"].endswith("Z") for r in rows)


def test_updated_since_filters(client: TestClient, clock: Clock, data: PlatformData) -> None:
    headers = bearer(clock)
    everything = walk(client, "/patients", headers, limit=500)
    since = datetime.fromisoformat(everything[len(everything) // 2]["updated_at"])
    rows = walk(client, "/patients", headers, limit=7, updated_since=since.isoformat())
    assert rows == [r for r in everything if datetime.fromisoformat(r["updated_at"]) >= since]
    assert 0 < len(rows) < len(everything)
    as_z = since.isoformat().replace("+00:00", "Z")
    assert walk(client, "/patients", headers, updated_since=as_z) == rows


def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, clock: Clock) -> None:
    headers = bearer(clock)
    first = client.get("/consultations", params={"limit": 3}, headers=headers).json()
    foreign = first["next_cursor"]  # a consultations cursor is not a patients cursor
    for param, value in [
        ("cursor", "garbage!!"),
        ("cursor", "eyJub3QiOiJvdXJzIn0"),
        ("cursor", foreign),
        ("updated_since", "yesterday-ish"),
        ("updated_since", "2025-02-01T00:00:00"),  # no timezone
        ("cursor", "x" * 600),
        ("updated_since", "2" * 100),
    ]:
        r = client.get("/patients", params={param: value}, headers=headers)
        assert r.status_code == 400, (param, value)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["parameter"] == param and param in body["detail"]
        assert value not in r.text
    assert client.get("/patients", params={"limit": 501}, headers=headers).status_code == 422
    assert client.get("/patients", params={"limit": 0}, headers=headers).status_code == 422


# -- the consultation workflow ---------------------------------------------------------------------


def test_assign_then_accept(client: TestClient, clock: Clock, data: PlatformData) -> None:
    headers = bearer(clock)
    pending = walk(client, "/consultations/pending", headers)
    assert {c["id"] for c in pending} == OPEN and all(c["status"] == "submitted" for c in pending)
    cid = sorted(OPEN)[0]
    before = clock.at
    everything_before = walk(client, "/consultations", headers, limit=500)
    assert not walk(client, "/consultations", headers, updated_since=before.isoformat())

    clock.at += timedelta(minutes=5)
    r = client.post(
        f"/consultations/{cid}/assign", json={"provider_id": "prov_0042"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "assigned" and r.json()["provider_id"] == "prov_0042"
    assert datetime.fromisoformat(r.json()["updated_at"]) == clock.at
    assert cid not in {c["id"] for c in walk(client, "/consultations/pending", headers)}

    clock.at += timedelta(minutes=5)
    r = client.post(f"/consultations/{cid}/accept", headers=headers)
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["status"] == "accepted" and accepted["provider_id"] == "prov_0042"
    assert datetime.fromisoformat(accepted["updated_at"]) == clock.at

    changed = walk(client, "/consultations", headers, limit=7, updated_since=before.isoformat())
    assert changed == [accepted]
    after = walk(client, "/consultations", headers, limit=7)
    assert len(after) == len(everything_before) and after[-1] == accepted  # moved to the end
    owner = accepted["patient_id"]
    mine = walk(client, "/me/consultations", bearer(clock, sub=owner, role="patient"))
    assert accepted in mine
    assert accepted in walk(client, f"/patients/{owner}/consultations", headers)

    r = client.post(f"/consultations/{cid}/assign", json={"provider_id": "prov_1"}, headers=headers)
    assert r.status_code == 409


def test_accept_without_assign_is_409(client: TestClient, clock: Clock) -> None:
    cid = sorted(OPEN)[1]
    r = client.post(f"/consultations/{cid}/accept", headers=bearer(clock))
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status_now"] == "submitted"


def test_unknown_ids_are_404(client: TestClient, clock: Clock) -> None:
    headers = bearer(clock)
    for r in (
        client.post("/consultations/con_nope/assign", json={"provider_id": "p1"}, headers=headers),
        client.post("/consultations/con_nope/accept", headers=headers),
        client.get("/patients/pat_nope/consultations", headers=headers),
    ):
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
    r = client.post(f"/consultations/{sorted(OPEN)[0]}/assign", json={}, headers=headers)
    assert r.status_code == 422


# -- stats and the contract ------------------------------------------------------------------------


def test_order_stats_add_up(client: TestClient, clock: Clock, data: PlatformData) -> None:
    stats = client.get("/orders/stats", headers=bearer(clock)).json()
    amounts = [e["data"]["amount"] for e in STREAM if e["type"] == "order.paid"]
    assert stats["count"] == len(amounts) > 0
    assert stats["total_amount"] == pytest.approx(sum(amounts), abs=0.005)
    assert stats["average_amount"] == pytest.approx(sum(amounts) / len(amounts), abs=0.005)
    assert set(stats["by_currency"]) == {"USD"}
    assert stats["by_currency"]["USD"]["count"] == len(amounts)
    assert stats["by_currency"]["USD"]["total_amount"] == stats["total_amount"]


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) == PATHS
    assert "post" in doc["paths"]["/consultations/{consultation_id}/assign"]
    assert any(s.get("scheme") == "bearer" for s in doc["components"]["securitySchemes"].values())


def test_simulate_serve_refuses_a_short_jwt_secret_before_starting() -> None:
    from typer.testing import CliRunner

    from telecrm.cli import app

    result = CliRunner().invoke(app, ["simulate", "serve", "--jwt-secret", "short"])
    assert result.exit_code == 2
    assert "too short" in result.output
