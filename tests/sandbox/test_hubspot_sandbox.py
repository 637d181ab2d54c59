"""The HubSpot sandbox keeps HubSpot's contract: auth, limits, batch upsert, 207s, faults, admin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_hubspot_sandbox
from tests.sandbox.hubspot_contract import fits

TOKEN = "pat-na1-sandbox"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
START = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **config: Any) -> tuple[HubSpotSandbox, httpx.Client]:
    sandbox = create_hubspot_sandbox(
        HubSpotSandboxConfig(**config), now=clock.now, sleep=clock.sleep
    )
    return sandbox, sandbox_client(sandbox.app)


@pytest.fixture
def hub(clock: FakeClock) -> Iterator[tuple[HubSpotSandbox, httpx.Client]]:
    sandbox, client = make(clock)
    provision_patient_id(client)
    yield sandbox, client
    client.close()


def provision_patient_id(client: httpx.Client, obj: str = "contacts") -> None:
    client.post(
        f"/crm/v3/properties/{obj}/groups",
        json={"name": "telecrm", "label": "telecrm"},
        headers=AUTH,
    )
    created = client.post(
        f"/crm/v3/properties/{obj}",
        json={"name": "telecrm_patient_id", "label": "Patient ID", "type": "string", "fieldType": "text",
              "groupName": "telecrm", "hasUniqueValue": True},
        headers=AUTH,
    )  # fmt: skip
    assert created.status_code == 201


def upsert_body(*items: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"idProperty": "telecrm_patient_id", "id": key, "properties": props}
            for key, props in items
        ]
    }


def post_upsert(client: httpx.Client, *items: tuple[str, dict[str, str]]) -> httpx.Response:
    body = upsert_body(*items)
    fits("contacts", "BatchInputSimplePublicObjectBatchInputUpsert", body)
    return client.post(UPSERT, json=body, headers=AUTH)


# -- auth -------------------------------------------------------------------------------------------
def test_missing_or_unknown_token_gets_hubspots_401_body(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = client.post(UPSERT, json=upsert_body(("p1", {})), headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
        assert set(body) == {"status", "message", "correlationId", "category"}
        assert response.headers["X-HubSpot-Correlation-Id"]
    assert sandbox.records("contacts") == []


REFRESH_TOKEN = "sandbox-refresh-token"
CLIENT_SECRET = "sandbox-client-secret"


def refresh(
    client: httpx.Client, refresh_token: str = REFRESH_TOKEN, secret: str = CLIENT_SECRET
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": "sandbox-client-id", "client_secret": secret}  # fmt: skip
    return client.post("/oauth/v1/token", data=form)


def test_refresh_grant_issues_a_token_that_expires_after_its_ttl(clock: FakeClock) -> None:
    sandbox, client = make(clock)
    granted = refresh(client)
    assert granted.status_code == 200
    body = granted.json()
    assert body["expires_in"] == 1800 and body["token_type"] == "bearer"
    assert body["refresh_token"] == "sandbox-refresh-token"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    ok = client.get("/crm/v3/properties/contacts/email", headers=bearer)
    assert ok.status_code == 200
    assert "X-HubSpot-RateLimit-Daily" not in ok.headers  # OAuth calls omit the Daily headers
    clock.t += 1801
    expired = client.get("/crm/v3/properties/contacts/email", headers=bearer)
    assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
    assert (
        sandbox.stats.token_requests == 1 and sandbox.limits.day_count == 1
    )  # token calls are free


def test_bad_refresh_grant_is_refused_with_hubspots_status(clock: FakeClock) -> None:
    _, client = make(clock)
    assert refresh(client, refresh_token="stolen").json()["status"] == "BAD_REFRESH_TOKEN"
    bad = refresh(client, secret="wrong")
    assert bad.status_code == 400 and bad.json()["status"] == "BAD_CLIENT_SECRET"


# -- batch upsert -----------------------------------------------------------------------------------
def test_upsert_creates_then_updates_the_same_record(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    first = post_upsert(client, ("p1", {"email": "a@example.com", "firstname": "Ann"}))
    assert first.status_code == 200
    created = fits("contacts", "BatchResponseSimplePublicUpsertObject", first.json())
    assert created.status == "COMPLETE" and created.results[0].new is True
    second = post_upsert(client, ("p1", {"firstname": "Anne"}))
    updated = fits("contacts", "BatchResponseSimplePublicUpsertObject", second.json())
    assert updated.results[0].new is False and updated.results[0].id == created.results[0].id
    [record] = sandbox.records("contacts")
    assert (
        record["properties"]["firstname"] == "Anne"
        and record["properties"]["email"] == "a@example.com"
    )
    assert record["id"].isdigit()


def test_upsert_results_are_shuffled_but_complete(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    _, client = hub
    keys = [f"p{i:03d}" for i in range(100)]
    response = post_upsert(client, *[(k, {}) for k in keys])
    results = response.json()["results"]
    answered = [r["properties"]["telecrm_patient_id"] for r in results]
    assert sorted(answered) == keys and answered != keys
    assert all(isinstance(v, str) for r in results for v in r["properties"].values())


def test_more_than_100_inputs_is_refused_whole(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    sandbox, client = hub
    response = client.post(
        UPSERT, json=upsert_body(*[(f"p{i}", {}) for i in range(101)]), headers=AUTH
    )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR" and "100" in response.json()["message"]
    assert sandbox.records("contacts") == []


def test_duplicate_ids_in_one_batch_are_refused_whole(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    response = client.post(
        UPSERT, json=upsert_body(("p1", {}), ("p2", {}), ("p1", {})), headers=AUTH
    )
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"
    assert sandbox.records("contacts") == []


def test_id_property_must_be_a_unique_value_property(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    _, client = hub
    body = {"inputs": [{"idProperty": "firstname", "id": "Ann", "properties": {}}]}
    assert client.post(UPSERT, json=body, headers=AUTH).status_code == 400


def test_bad_values_are_207_errors_per_record_and_the_rest_is_written(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    response = post_upsert(
        client,
        ("good", {"email": "ok@example.com"}),
        ("bad-email", {"email": "not-an-email"}),
        ("bad-prop", {"favourite_colour": "blue"}),
        ("bad-option", {"lifecyclestage": "champion"}),
    )
    assert response.status_code == 207
    batch = fits("contacts", "BatchResponseSimplePublicUpsertObjectWithErrors", response.json())
    assert batch.num_errors == 3 and [
        r.properties["telecrm_patient_id"] for r in batch.results
    ] == ["good"]
    codes = {e.context["ids"][0]: e.errors[0].code for e in batch.errors}
    assert codes == {
        "bad-email": "INVALID_EMAIL",
        "bad-prop": "PROPERTY_DOESNT_EXIST",
        "bad-option": "INVALID_OPTION",
    }
    assert all(e.category == "VALIDATION_ERROR" for e in batch.errors)
    assert [r["properties"]["telecrm_patient_id"] for r in sandbox.records("contacts")] == ["good"]


def test_deal_stage_must_belong_to_the_pipeline(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    _, client = hub
    provision_patient_id(client, "deals")
    body = {"inputs": [
        {"idProperty": "telecrm_patient_id", "id": "d1", "properties": {"dealstage": "closedwon", "amount": "12.5"}},
        {"idProperty": "telecrm_patient_id", "id": "d2", "properties": {"dealstage": "won-ish"}},
        {"idProperty": "telecrm_patient_id", "id": "d3", "properties": {"amount": "lots"}},
    ]}  # fmt: skip
    response = client.post("/crm/v3/objects/0-3/batch/upsert", json=body, headers=AUTH)
    codes = {e["context"]["ids"][0]: e["errors"][0]["code"] for e in response.json()["errors"]}
    assert codes == {"d2": "INVALID_OPTION", "d3": "INVALID_DECIMAL"}


def test_lifecyclestage_never_moves_backwards_and_empty_clears_it(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub

    def stage() -> str:
        return sandbox.records("contacts")[0]["properties"]["lifecyclestage"]

    post_upsert(client, ("p1", {"lifecyclestage": "customer"}))
    backwards = post_upsert(client, ("p1", {"lifecyclestage": "lead"}))
    assert backwards.status_code == 200  # silently ignored, as HubSpot does
    assert backwards.json()["results"][0]["properties"]["lifecyclestage"] == "customer"
    assert stage() == "customer"
    post_upsert(client, ("p1", {"lifecyclestage": ""}))
    assert stage() == ""
    post_upsert(client, ("p1", {"lifecyclestage": "lead"}))
    assert stage() == "lead"


def test_batch_update_reports_unknown_records_as_object_not_found(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    _, client = hub
    post_upsert(client, ("p1", {}))
    body = {
        "inputs": [
            {"idProperty": "telecrm_patient_id", "id": k, "properties": {"city": "Reno"}}
            for k in ("p1", "p2", "p3")
        ]
    }
    fits("contacts", "BatchInputSimplePublicObjectBatchInput", body)
    response = client.post("/crm/v3/objects/contacts/batch/update", json=body, headers=AUTH)
    assert response.status_code == 207
    batch = fits("contacts", "BatchResponseSimplePublicObjectWithErrors", response.json())
    [error] = batch.errors
    assert error.category == "OBJECT_NOT_FOUND" and sorted(error.context["ids"]) == ["p2", "p3"]


def test_batch_create_refuses_whole_batch_unless_multi_status(clock: FakeClock) -> None:
    inputs = {
        "inputs": [{"properties": {"email": "a@example.com"}}, {"properties": {"email": "nope"}}]
    }
    sandbox, client = make(clock)
    assert (
        client.post("/crm/v3/objects/contacts/batch/create", json=inputs, headers=AUTH).status_code
        == 400
    )
    assert sandbox.records("contacts") == []
    sandbox, client = make(clock, multi_status=True)
    response = client.post("/crm/v3/objects/contacts/batch/create", json=inputs, headers=AUTH)
    assert response.status_code == 207 and len(sandbox.records("contacts")) == 1


def test_read_get_and_archive(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    _, client = hub
    crm_id = post_upsert(client, ("p1", {"city": "Reno"})).json()["results"][0]["id"]
    read = client.post(
        "/crm/v3/objects/contacts/batch/read",
        json={"idProperty": "telecrm_patient_id", "inputs": [{"id": "p1"}], "properties": ["city"]},
        headers=AUTH,
    )
    assert read.json()["results"][0]["properties"]["city"] == "Reno"
    assert client.get(f"/crm/v3/objects/contacts/{crm_id}", headers=AUTH).status_code == 200
    archived = client.post(
        "/crm/v3/objects/contacts/batch/archive", json={"inputs": [{"id": crm_id}]}, headers=AUTH
    )
    assert archived.status_code == 204
    missing = client.get(f"/crm/v3/objects/contacts/{crm_id}", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


# -- limits -----------------------------------------------------------------------------------------
def test_rolling_window_429_has_hubspots_body_and_applies_nothing(clock: FakeClock) -> None:
    sandbox, client = make(clock, burst_limit=3)
    provision_patient_id(client)  # 2 calls
    ok = post_upsert(client, ("p1", {}))
    assert (
        ok.headers["X-HubSpot-RateLimit-Max"] == "3"
        and ok.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    )
    assert ok.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert ok.headers["X-HubSpot-RateLimit-Daily"] == "250000"
    assert ok.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "249997"
    refused = post_upsert(client, ("p2", {}))
    assert refused.status_code == 429
    body = refused.json()
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert set(body) == {
        "status",
        "message",
        "errorType",
        "correlationId",
        "policyName",
        "requestId",
    }
    assert len(sandbox.records("contacts")) == 1 and sandbox.stats.rate_limited == 1
    clock.t += 10.01
    assert post_upsert(client, ("p2", {})).status_code == 200


def test_daily_limit_429_says_daily_until_midnight_utc(clock: FakeClock) -> None:
    _, client = make(clock, daily_limit=2)
    provision_patient_id(client)
    refused = post_upsert(client, ("p1", {}))
    assert refused.status_code == 429 and refused.json()["policyName"] == "DAILY"
    assert refused.json()["message"] == "You have reached your daily limit."
    clock.t = (clock.t // 86_400 + 1) * 86_400
    assert post_upsert(client, ("p1", {})).status_code == 200


# -- faults -----------------------------------------------------------------------------------------
def test_storm_refuses_the_next_requests_with_ten_secondly_429(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    sandbox.faults.set(Faults(storm_requests=2))
    assert [post_upsert(client, ("p1", {})).status_code for _ in range(3)] == [429, 429, 200]
    assert sandbox.stats.rate_limited == 2


def test_error_fault_answers_5xx_without_touching_records(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    sandbox.faults.set(Faults(error_rate=1.0))
    response = post_upsert(client, ("p1", {}))
    assert response.status_code in (500, 502, 503) and response.json()["status"] == "error"
    assert sandbox.records("contacts") == [] and sandbox.stats.errors_sent == 1


def test_drop_fault_applies_the_write_then_cuts_the_connection(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        post_upsert(client, ("p1", {}))
    assert len(sandbox.records("contacts")) == 1 and sandbox.stats.dropped == 1


def test_latency_fault_sleeps_on_the_injected_sleep(
    hub: tuple[HubSpotSandbox, httpx.Client], clock: FakeClock
) -> None:
    sandbox, client = hub
    sandbox.faults.set(Faults(latency_seconds=2.5))
    before = clock.t
    assert post_upsert(client, ("p1", {})).status_code == 200
    assert clock.slept == [2.5] and clock.t == before + 2.5


# -- properties -------------------------------------------------------------------------------------
def test_property_create_conflict_and_not_found(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    _, client = hub
    body = {"name": "telecrm_consent", "label": "Consent", "type": "enumeration", "fieldType": "select",
            "groupName": "telecrm", "options": [{"label": "Yes", "value": "yes", "displayOrder": 0, "hidden": False}],
            "dataSensitivity": "sensitive"}  # fmt: skip
    fits("properties", "PropertyCreate", body, extra_keys=frozenset({"dataSensitivity"}))
    created = client.post("/crm/v3/properties/contacts", json=body, headers=AUTH)
    assert created.status_code == 201
    prop = fits(
        "properties", "ModelProperty", created.json(), extra_keys=frozenset({"dataSensitivity"})
    )
    assert prop.name == "telecrm_consent" and created.json()["dataSensitivity"] == "sensitive"
    again = client.post("/crm/v3/properties/contacts", json=body, headers=AUTH)
    assert again.status_code == 409 and again.json()["category"] == "CONFLICT"
    assert (
        client.get("/crm/v3/properties/contacts/telecrm_nothing", headers=AUTH).status_code == 404
    )
    no_options = {**body, "name": "telecrm_other", "options": []}
    assert (
        client.post("/crm/v3/properties/contacts", json=no_options, headers=AUTH).status_code == 400
    )
    no_group = {**body, "name": "telecrm_x", "groupName": "ghosts"}
    assert (
        client.post("/crm/v3/properties/contacts", json=no_group, headers=AUTH).status_code == 400
    )
    listing = client.get("/crm/v3/properties/contacts", headers=AUTH).json()["results"]
    assert {"email", "lifecyclestage", "telecrm_consent"} <= {p["name"] for p in listing}
    group = client.get("/crm/v3/properties/contacts/groups/telecrm", headers=AUTH)
    fits("properties", "PropertyGroup", group.json())


# -- associations -----------------------------------------------------------------------------------
def test_default_associations_link_both_ways_and_report_unknown_ids(
    hub: tuple[HubSpotSandbox, httpx.Client],
) -> None:
    sandbox, client = hub
    provision_patient_id(client, "deals")
    contact = post_upsert(client, ("p1", {})).json()["results"][0]["id"]
    deal_body = {
        "inputs": [
            {"idProperty": "telecrm_patient_id", "id": "d1", "properties": {"dealname": "Visit"}}
        ]
    }
    deal = client.post("/crm/v3/objects/deals/batch/upsert", json=deal_body, headers=AUTH).json()[
        "results"
    ][0]["id"]
    body = {
        "inputs": [
            {"from": {"id": contact}, "to": {"id": deal}},
            {"from": {"id": contact}, "to": {"id": "999999"}},
        ]
    }
    fits("associations", "BatchInputPublicDefaultAssociationMultiPost", body)
    path = "/crm/v4/associations/contacts/deals/batch/associate/default"
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 207
    batch = fits("associations", "BatchResponsePublicDefaultAssociation", response.json())
    assert batch.results[0].association_spec.association_type_id == 4 and batch.num_errors == 1
    again = client.post(path, json={"inputs": body["inputs"][:1]}, headers=AUTH)
    assert again.status_code == 200  # an existing association is fine
    assert sandbox.associations("deals", deal, "contacts") == [contact]
    listed = client.get(
        f"/crm/v4/objects/contacts/{contact}/associations/deals", headers=AUTH
    ).json()
    fits("associations", "CollectionResponseMultiAssociatedObjectWithLabelForwardPaging", listed)
    labels = client.get("/crm/v4/associations/0-1/0-3/labels", headers=AUTH).json()
    fits("association_schema", "CollectionResponseAssociationSpecWithLabelNoPaging", labels)


# -- admin ------------------------------------------------------------------------------------------
def test_admin_endpoints_bypass_auth_and_limits(clock: FakeClock) -> None:
    sandbox, client = make(clock, burst_limit=1)
    assert client.get("/crm/v3/properties/contacts", headers=AUTH).status_code == 200
    assert client.get("/crm/v3/properties/contacts", headers=AUTH).status_code == 429
    assert client.post("/_sandbox/faults", json={"storm_requests": 1}).status_code == 200
    assert sandbox.faults.faults.storm_requests == 1
    stats = client.get("/_sandbox/stats").json()
    assert stats["rate_limited"] >= 1 and stats["requests"]["GET /crm/v3/properties/contacts"] == 2
    assert client.get("/_sandbox/records/contacts").json() == {"results": []}
    assert client.post("/_sandbox/reset").status_code == 200
    assert client.get("/_sandbox/stats").json()["api_requests"] == 0


def test_object_type_ids_name_the_same_objects(hub: tuple[HubSpotSandbox, httpx.Client]) -> None:
    sandbox, client = hub
    body = upsert_body(("p1", {"email": "x@example.com"}))
    assert (
        client.post("/crm/v3/objects/0-1/batch/upsert", json=body, headers=AUTH).status_code == 200
    )
    assert len(sandbox.records("contacts")) == 1
