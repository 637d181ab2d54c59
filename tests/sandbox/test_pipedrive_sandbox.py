"""The Pipedrive sandbox keeps Pipedrive's contract: auth, envelopes, search, token limits, faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.pipedrive import (
    PipedriveSandbox,
    PipedriveSandboxConfig,
    create_pipedrive_sandbox,
)

TOKEN = "pd-sandbox-api-token"
AUTH = {"x-api-token": TOKEN}
START = 1_700_000_000.0  # 22:13:20 UTC
CANARY = "canary-pd@example"  # not a valid address: the sandbox echoes it in its error


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def make(clock: FakeClock, **config: Any) -> tuple[PipedriveSandbox, httpx.Client]:
    sandbox = create_pipedrive_sandbox(
        PipedriveSandboxConfig(**config), now=clock.now, sleep=clock.sleep
    )
    return sandbox, sandbox_client(sandbox.app)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pd(clock: FakeClock) -> Iterator[tuple[PipedriveSandbox, httpx.Client, str]]:
    sandbox, client = make(clock)
    key = add_field(client, "personFields", "telecrm_patient_id")
    yield sandbox, client, key
    client.close()


def add_field(client: httpx.Client, fields: str, name: str, **extra: Any) -> str:
    body = {"name": name, "field_type": "varchar", **extra}
    created = client.post(f"/api/v1/{fields}", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["key"])


def person(client: httpx.Client, key: str, patient_id: str, **extra: Any) -> httpx.Response:
    body = {"name": f"Patient {patient_id}", "custom_fields": {key: patient_id}, **extra}
    return client.post("/api/v2/persons", json=body, headers=AUTH)


def search(client: httpx.Client, term: str, **params: str) -> list[dict[str, Any]]:
    query = {"term": term, "fields": "custom_fields", "exact_match": "true", **params}
    found = client.get("/api/v2/persons/search", params=query, headers=AUTH)
    assert found.status_code == 200, found.text
    return [i["item"] for i in found.json()["data"]["items"]]


# -- auth -------------------------------------------------------------------------------------------
def test_api_token_works_as_header_or_query_and_a_wrong_one_gets_401(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, _ = pd
    assert client.get("/api/v2/persons", headers=AUTH).status_code == 200
    assert client.get("/api/v2/persons", params={"api_token": TOKEN}).status_code == 200
    for kwargs in ({}, {"headers": {"x-api-token": "nope"}}, {"params": {"api_token": "nope"}}):
        refused = client.get("/api/v2/persons", **kwargs)  # type: ignore[arg-type]
        assert refused.status_code == 401
        body = refused.json()
        assert body["success"] is False and body["data"] is None
        assert body["error"].startswith("Invalid token") and body["error_info"]


def refresh(
    client: httpx.Client,
    refresh_token: str,
    secret: str = "sandbox-client-secret",  # noqa: S107
) -> httpx.Response:
    return client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=("sandbox-client-id", secret),
    )


def test_refresh_grant_issues_an_hour_long_token_and_a_new_single_use_refresh_token(
    clock: FakeClock,
) -> None:
    sandbox, client = make(clock)
    granted = refresh(client, "sandbox-refresh-token")
    assert granted.status_code == 200
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/api/v2/persons", headers=bearer).status_code == 200
    clock.t += 3601
    expired = client.get("/api/v2/persons", headers=bearer)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    again = refresh(client, "sandbox-refresh-token")  # already exchanged
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert refresh(client, body["refresh_token"]).status_code == 200
    assert sandbox.stats.token_requests == 3 and sandbox.limits.tokens_spent == 20  # one list GET


def test_token_endpoint_refuses_a_bad_client_and_json_bodies(clock: FakeClock) -> None:
    _, client = make(clock)
    assert (
        refresh(client, "sandbox-refresh-token", secret="wrong").json()["error"] == "invalid_client"
    )
    as_json = client.post("/oauth/token", json={"grant_type": "refresh_token"})
    assert as_json.status_code == 400
    assert "x-www-form-urlencoded" in as_json.json()["error_description"]


# -- records, envelopes, validation -----------------------------------------------------------------
def test_create_update_and_get_use_the_success_envelope(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, key = pd
    created = person(client, key, "P-1", emails=[{"value": "a@example.com", "primary": True}])
    assert created.status_code == 200
    body = created.json()
    assert body["success"] is True and body["data"]["custom_fields"][key] == "P-1"
    pid = body["data"]["id"]
    patched = client.patch(f"/api/v2/persons/{pid}", json={"name": "Renamed"}, headers=AUTH)
    assert patched.json()["data"]["name"] == "Renamed"
    assert patched.json()["data"]["custom_fields"][key] == "P-1"  # untouched fields stay
    assert [r["id"] for r in sandbox.records("persons")] == [pid]
    assert client.get(f"/api/v2/persons/{pid}", headers=AUTH).json()["data"]["name"] == "Renamed"


def test_validation_errors_name_the_field(pd: tuple[PipedriveSandbox, httpx.Client, str]) -> None:
    _, client, key = pd
    cases = [
        ({"custom_fields": {key: "P-2"}}, "name"),
        ({"name": "x", "emails": [{"value": CANARY}]}, "emails"),
        ({"name": "x", "custom_fields": {"f" * 40: "v"}}, "f" * 40),
        ({"name": "x", "shoe_size": 44}, "shoe_size"),
    ]
    for body, field_name in cases:
        refused = client.post("/api/v2/persons", json=body, headers=AUTH)
        assert refused.status_code == 400
        envelope = refused.json()
        assert envelope["success"] is False and field_name in envelope["error"]


def test_deals_need_an_existing_stage_of_their_pipeline(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, _ = pd
    pipeline = client.post("/api/v1/pipelines", json={"name": "telecrm"}, headers=AUTH).json()[
        "data"
    ]
    stage = client.post(
        "/api/v1/stages", json={"name": "paid", "pipeline_id": pipeline["id"]}, headers=AUTH
    ).json()["data"]
    listed = client.get("/api/v1/stages", params={"pipeline_id": pipeline["id"]}, headers=AUTH)
    assert [s["name"] for s in listed.json()["data"]] == ["paid"]
    deal = client.post(
        "/api/v2/deals", json={"title": "C-1", "stage_id": stage["id"]}, headers=AUTH
    )
    assert deal.json()["data"]["pipeline_id"] == pipeline["id"]
    wrong = client.post("/api/v2/deals", json={"title": "C-2", "stage_id": 999_999}, headers=AUTH)
    assert wrong.status_code == 400 and "stage_id" in wrong.json()["error"]


def test_deleted_records_answer_410_and_unknown_ones_404(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, key = pd
    pid = person(client, key, "P-3").json()["data"]["id"]
    assert client.delete(f"/api/v2/persons/{pid}", headers=AUTH).json()["data"] == {"id": pid}
    assert (
        client.patch(f"/api/v2/persons/{pid}", json={"name": "x"}, headers=AUTH).status_code == 410
    )
    assert client.get("/api/v2/persons/424242", headers=AUTH).status_code == 404
    assert sandbox.records("persons") == []


def test_plan_cap_is_403_with_a_code(clock: FakeClock) -> None:
    _, client = make(clock, deal_limit=0)
    capped = client.post("/api/v2/deals", json={"title": "C-1"}, headers=AUTH)
    assert capped.status_code == 403 and capped.json()["code"] == "feature_capping_deals_limit"


# -- custom fields and search -----------------------------------------------------------------------
def test_custom_fields_get_a_40_char_hash_key_and_enum_options_ids(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, key = pd
    assert len(key) == 40 and all(c in "0123456789abcdef" for c in key)
    stage_key = add_field(client, "personFields", "stage", field_type="enum",
                          options=[{"label": "Lead"}, {"label": "Customer"}])  # fmt: skip
    fields = client.get("/api/v1/personFields", headers=AUTH).json()
    assert fields["additional_data"]["pagination"]["more_items_in_collection"] is False
    stage = next(f for f in fields["data"] if f["key"] == stage_key)
    option = {o["label"]: o["id"] for o in stage["options"]}["Customer"]
    assert (
        person(client, key, "P-4", custom_fields={key: "P-4", stage_key: option}).status_code == 200
    )
    bad = person(client, key, "P-5", custom_fields={stage_key: "Customer"})  # a label, not an id
    assert bad.status_code == 400 and stage_key in bad.json()["error"]


def test_exact_search_on_custom_fields_finds_only_the_exact_value(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, key = pd
    for pid in ("P-10", "P-100", "p-1000"):
        person(client, key, pid)
    assert [i["custom_fields"] for i in search(client, "P-10")] == [["P-10"]]
    assert len(search(client, "P-10", exact_match="false")) == 3
    assert search(client, "nobody") == []
    short = client.get("/api/v2/persons/search", params={"term": "P"}, headers=AUTH)
    assert short.status_code == 400 and "term" in short.json()["error"]
    assert search(client, "X" * 31) == []  # exact match only works up to 30 chars


def test_search_lags_behind_a_create(clock: FakeClock) -> None:
    _, client = make(clock, search_lag_seconds=5)
    key = add_field(client, "personFields", "telecrm_patient_id")
    person(client, key, "P-20")
    assert search(client, "P-20") == []
    clock.t += 6
    assert len(search(client, "P-20")) == 1


# -- limits -----------------------------------------------------------------------------------------
def test_every_answer_carries_the_rate_limit_headers(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, key = pd
    created = person(client, key, "P-30")
    assert created.headers["x-ratelimit-limit"] == "20"
    assert int(created.headers["x-ratelimit-remaining"]) == 18  # the field, then this
    assert created.headers["x-ratelimit-reset"] == "2"
    assert created.headers["x-daily-requests-left"] == "9998"
    found = client.get("/api/v2/persons/search", params={"term": "P-30"}, headers=AUTH)
    assert found.headers["x-ratelimit-limit"] == "10"  # the search window


def test_burst_over_the_window_is_429_with_retry_after_and_costs_nothing(clock: FakeClock) -> None:
    sandbox, client = make(clock, burst_api_token=3)
    for _ in range(3):
        assert client.get("/api/v2/persons", headers=AUTH).status_code == 200
    refused = client.get("/api/v2/persons", headers=AUTH)
    assert refused.status_code == 429 and refused.json()["success"] is False
    assert refused.headers["Retry-After"] == "2" and refused.headers["x-ratelimit-remaining"] == "0"
    assert sandbox.limits.tokens_spent == 60
    clock.t += 2
    assert client.get("/api/v2/persons", headers=AUTH).status_code == 200


def test_search_costs_more_tokens_and_the_daily_budget_ends_in_429_until_midnight(
    clock: FakeClock,
) -> None:
    sandbox, client = make(clock, daily_token_budget=100)
    key = add_field(client, "personFields", "telecrm_patient_id")  # 10 tokens
    for _ in range(2):
        search(client, "P-1")  # 40 each
    refused = client.get("/api/v2/persons/search", params={"term": "P-1"}, headers=AUTH)
    assert refused.status_code == 429 and "budget" in refused.json()["error"]
    until_midnight = 86_400 - int(START % 86_400)
    assert refused.headers["Retry-After"] == str(until_midnight)
    assert person(client, key, "P-1").status_code == 200  # 10 more still fit
    clock.t += until_midnight
    assert len(search(client, "P-1")) == 1
    assert sandbox.stats.rate_limited == 1


# -- faults and admin -------------------------------------------------------------------------------
def test_storms_errors_and_drops_come_with_pipedrives_bodies(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, key = pd
    sandbox.faults.set(Faults(storm_requests=2))
    for _ in range(2):
        stormed = client.get("/api/v2/persons", headers=AUTH)
        assert stormed.status_code == 429 and stormed.headers["Retry-After"] == "2"
    sandbox.faults.set(Faults(error_rate=1.0))
    failed = client.get("/api/v2/persons", headers=AUTH)
    assert failed.status_code in (500, 502, 503) and failed.json()["success"] is False
    sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        person(client, key, "P-40")
    assert len(sandbox.records("persons")) == 1  # applied, then the connection was cut


def test_admin_endpoints_show_records_stats_and_reset(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, key = pd
    person(client, key, "P-50")
    assert client.post("/_sandbox/faults", json={"latency_seconds": 0.5}).status_code == 200
    assert sandbox.faults.latency == 0.5
    rows = client.get("/_sandbox/records/persons").json()["results"]
    assert [r["custom_fields"][key] for r in rows] == ["P-50"]
    stats = client.get("/_sandbox/stats").json()
    assert stats["api_requests"] == 2 and stats["tokens_spent"] == 20
    client.post("/_sandbox/reset")
    assert (
        sandbox.records("persons") == []
        and sandbox.field_key("persons", "telecrm_patient_id") is None
    )


# -- activities (v2) and notes (v1) ------------------------------------------------------------------
def _person(client: httpx.Client, name: str = "Pat") -> int:
    made = client.post("/api/v2/persons", json={"name": name}, headers=AUTH)
    assert made.status_code == 200, made.text
    return int(made.json()["data"]["id"])


def _refused(response: httpx.Response, status: int, mentions: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and mentions in body["error"]
    assert body["error_info"] and body["data"] is None


def test_activities_are_validated_like_pipedrive_and_listed_by_person(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    _, client, _ = pd
    a, b = _person(client, "A"), _person(client, "B")
    _refused(client.post("/api/v2/activities", json={"subject": "x", "type": "séance", "person_id": a},
                         headers=AUTH), 400, "type")  # fmt: skip
    _refused(client.post("/api/v2/activities", json={"type": "task", "due_date": "20/09/2025"},
                         headers=AUTH), 400, "due_date")  # fmt: skip
    _refused(client.post("/api/v2/activities", json={"type": "task", "busy": "yes"}, headers=AUTH),
             400, "busy")  # fmt: skip
    _refused(client.post("/api/v2/activities", json={"type": "task", "person_id": 999_999},
                         headers=AUTH), 400, "person_id")  # fmt: skip
    for person in (a, a, b):
        made = client.post("/api/v2/activities", json={"subject": "Follow up", "type": "task",
                                                        "person_id": person}, headers=AUTH)  # fmt: skip
        assert made.status_code == 200 and "x-ratelimit-remaining" in made.headers
    listed = client.get(
        "/api/v2/activities", params={"person_id": str(a), "limit": "1"}, headers=AUTH
    )
    page = listed.json()
    assert [x["person_id"] for x in page["data"]] == [a]
    assert page["additional_data"]["next_cursor"] == "1"
    rest = client.get("/api/v2/activities", headers=AUTH,
                      params={"person_id": str(a), "cursor": page["additional_data"]["next_cursor"]})  # fmt: skip
    assert len(rest.json()["data"]) == 1 and rest.json()["additional_data"]["next_cursor"] is None
    _refused(
        client.get("/api/v2/activities", params={"person_id": "abc"}, headers=AUTH),
        400,
        "person_id",
    )
    _refused(
        client.patch("/api/v2/activities/424242", json={"subject": "x"}, headers=AUTH),
        404,
        "not found",
    )


def test_notes_need_a_parent_update_with_put_and_page_with_start(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, _ = pd
    person = _person(client)
    _refused(client.post("/api/v1/notes", json={"content": "orphan"}, headers=AUTH), 400, "deal_id")
    _refused(client.post("/api/v1/notes", json={"content": "", "person_id": person}, headers=AUTH),
             400, "content")  # fmt: skip
    ids = []
    for i in range(3):
        made = client.post(
            "/api/v1/notes", json={"content": f"n{i}", "person_id": person}, headers=AUTH
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["data"]["id"])
    changed = client.put(f"/api/v1/notes/{ids[0]}", json={"content": "changed"}, headers=AUTH)
    assert changed.status_code == 200 and changed.json()["data"]["content"] == "changed"
    _refused(
        client.put("/api/v1/notes/424242", json={"content": "x"}, headers=AUTH), 404, "not found"
    )
    first = client.get(
        "/api/v1/notes", params={"person_id": str(person), "limit": "2"}, headers=AUTH
    )
    pagination = first.json()["additional_data"]["pagination"]
    assert len(first.json()["data"]) == 2 and pagination["more_items_in_collection"] is True
    second = client.get("/api/v1/notes", headers=AUTH,
                        params={"person_id": str(person), "start": str(pagination["next_start"])})  # fmt: skip
    assert [n["id"] for n in second.json()["data"]] == [ids[2]]
    assert client.get("/api/v1/notes", params={"person_id": "7"}, headers=AUTH).json()["data"] == []
    spent = sandbox.stats.tokens_spent
    client.get("/api/v1/notes", params={"person_id": str(person)}, headers=AUTH)
    assert sandbox.stats.tokens_spent - spent == 20  # a list costs 20 tokens (crm-apis.md §3.3)


def test_the_flat_view_shows_a_marker_as_the_field_it_names(
    pd: tuple[PipedriveSandbox, httpx.Client, str],
) -> None:
    sandbox, client, _ = pd
    person = _person(client)
    content = "Consultation C-1: status paid\n[telecrm:telecrm_consultation_id:C-1]"
    client.post("/api/v1/notes", json={"content": content, "person_id": person}, headers=AUTH)
    [flat] = sandbox.flat_records("notes")
    assert flat["content"] == "Consultation C-1: status paid"
    assert flat["telecrm_consultation_id"] == "C-1"
