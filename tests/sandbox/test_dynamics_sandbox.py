"""The Dataverse sandbox keeps the Web API's contract (crm-apis.md §4).

Shapes checked against Microsoft's docs (MicrosoftDocs/powerapps-docs):
- $batch, change sets, Content-ID, continue-on-error, the 1,000 maximum:
  developer/data-platform/webapi/execute-batch-operations-using-web-api.md
- service protection limits, codes, Retry-After and x-ms-ratelimit-* headers:
  developer/data-platform/api-limits.md
- upsert by alternate key, If-Match / If-None-Match: crm-apis.md §4.2
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from telecrm.sandbox.dynamics import DynamicsSandbox, DynamicsSandboxConfig, create_dynamics_sandbox
from telecrm.sandbox.dynamics_schema import Column
from telecrm.sandbox.faults import Faults, sandbox_client

V = "/api/data/v9.2/"
TENANT = "00000000-0000-0000-0000-00000000e1d0"
SCOPE = "https://telecrm-sandbox.crm.dynamics.com/.default"
P1 = "contacts(telecrm_patientid='P-1')"
LABEL = {"DisplayName": {"LocalizedLabels": [{"Label": "Patient ID", "LanguageCode": 1033}]}}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def with_patient_key(sandbox: DynamicsSandbox, table: str = "contact") -> None:
    sandbox.store.add_column(table, "telecrm_patientid", Column("String", 100, custom=True))
    sandbox.store.add_key(table, "telecrm_patientid_key", ("telecrm_patientid",))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def env(clock: Clock) -> DynamicsSandbox:
    sandbox = create_dynamics_sandbox(now=clock)
    with_patient_key(sandbox)
    return sandbox


@pytest.fixture
def http(env: DynamicsSandbox) -> httpx.Client:
    client = sandbox_client(env.app)
    token = token_for(client).json()["access_token"]
    client.headers.update({"Authorization": f"Bearer {token}", "OData-Version": "4.0"})
    return client


def token_for(client: httpx.Client, **overrides: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": "sandbox-client-id"}
    form |= {"client_secret": "sandbox-client-secret", "scope": SCOPE} | overrides
    return client.post(f"/{TENANT}/oauth2/v2.0/token", data=form)


def batch(*items: list[tuple[str, str, dict[str, Any] | None]] | tuple[str, str, Any]) -> str:
    """A multipart $batch: a list is a change set, a tuple a lone operation."""
    lines, n = [], 0
    for item in items:
        lines.append("--batch_T")
        ops = item if isinstance(item, list) else [item]
        if isinstance(item, list):
            lines += ["Content-Type: multipart/mixed; boundary=changeset_T", ""]
        for method, url, body in ops:
            n += 1
            if isinstance(item, list):
                lines.append("--changeset_T")
            lines += ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
            lines += [f"Content-ID: {n}", "", f"{method} {V}{url} HTTP/1.1"]
            lines += ["Content-Type: application/json;type=entry", "", json_text(body)]
        if isinstance(item, list):
            lines.append("--changeset_T--")
    return "\r\n".join([*lines, "--batch_T--", ""])


def json_text(body: Any) -> str:
    import json

    return json.dumps(body) if body is not None else ""


def post_batch(http: httpx.Client, body: str, *, keep_going: bool = True) -> httpx.Response:
    headers = {"Content-Type": "multipart/mixed; boundary=batch_T"}
    if keep_going:
        headers["Prefer"] = "odata.continue-on-error"
    return http.post(V + "$batch", content=body, headers=headers)


def ids(env: DynamicsSandbox) -> list[str]:
    return sorted(r["telecrm_patientid"] for r in env.records("contacts"))


# -- Entra ID tokens -----------------------------------------------------------------------------
def test_client_credentials_give_an_expiring_bearer_token_and_no_refresh_token(env) -> None:
    body = token_for(sandbox_client(env.app)).json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert "refresh_token" not in body


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"scope": "https://other.crm.dynamics.com/.default"}, 400, "invalid_scope"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
def test_bad_token_requests_get_entra_errors(env, overrides, status, error) -> None:
    answer = token_for(sandbox_client(env.app), **overrides)
    assert answer.status_code == status and answer.json()["error"] == error
    assert answer.json()["error_codes"]


def test_an_expired_token_gets_401_with_a_bearer_challenge(env, http, clock) -> None:
    clock.t += 3600
    answer = http.get(V + "WhoAmI")
    assert answer.status_code == 401 and "authorization_uri" in answer.headers["www-authenticate"]


def test_without_an_application_user_a_valid_token_is_refused_403(clock) -> None:
    sandbox = create_dynamics_sandbox(DynamicsSandboxConfig(application_user=False), now=clock)
    client = sandbox_client(sandbox.app)
    token = token_for(client).json()["access_token"]
    answer = client.get(V + "WhoAmI", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "0x80072560"


# -- upsert by alternate key -----------------------------------------------------------------------
def test_upsert_creates_then_updates_the_same_row_with_204_and_entity_id(env, http) -> None:
    first = http.patch(V + P1, json={"firstname": "Ann"})
    second = http.patch(V + P1, json={"lastname": "Doe"})
    assert first.status_code == second.status_code == 204 and not first.content
    assert first.headers["OData-EntityId"] == second.headers["OData-EntityId"]
    [row] = env.records("contacts")
    assert row["firstname"] == "Ann" and row["lastname"] == "Doe"
    assert row["telecrm_patientid"] == "P-1"  # the key values in the URL are set on create
    assert http.get(first.headers["OData-EntityId"]).json()["contactid"] == row["contactid"]


def test_if_none_match_star_is_create_only_and_if_match_star_update_only(env, http) -> None:
    http.patch(V + P1, json={"firstname": "Ann"})
    again = http.patch(V + P1, json={"firstname": "Bo"}, headers={"If-None-Match": "*"})
    assert again.status_code == 412 and again.json()["error"]["code"] == "0x80040237"
    absent = "contacts(telecrm_patientid='P-2')"
    update = http.patch(V + absent, json={"firstname": "Cy"}, headers={"If-Match": "*"})
    assert update.status_code == 404 and update.json()["error"]["code"] == "0x80040217"
    assert ids(env) == ["P-1"] and env.records("contacts")[0]["firstname"] == "Ann"


def test_upserting_by_a_column_without_an_alternate_key_is_refused(clock) -> None:
    sandbox = create_dynamics_sandbox(now=clock)
    sandbox.store.add_column("contact", "telecrm_patientid", Column("String", 100, custom=True))
    client = sandbox_client(sandbox.app)
    client.headers["Authorization"] = "Bearer " + token_for(client).json()["access_token"]
    refused = client.patch(V + P1, json={"firstname": "Ann"})
    assert refused.status_code == 400 and "alternate key" in refused.json()["error"]["message"]
    assert sandbox.records("contacts") == []


def test_a_new_key_is_pending_until_its_index_job_finishes(clock) -> None:
    sandbox = create_dynamics_sandbox(DynamicsSandboxConfig(key_activation_seconds=60), now=clock)
    with_patient_key(sandbox)
    client = sandbox_client(sandbox.app)
    client.headers["Authorization"] = "Bearer " + token_for(client).json()["access_token"]
    key = client.get(
        V + "EntityDefinitions(LogicalName='contact')/Keys(LogicalName='telecrm_patientid_key')"
    )
    assert key.json()["EntityKeyIndexStatus"] == "Pending"
    assert client.patch(V + P1, json={"firstname": "A"}).status_code == 400
    clock.t += 60
    assert client.patch(V + P1, json={"firstname": "A"}).status_code == 204


def test_lookups_bind_by_alternate_key_or_guid_and_a_missing_target_is_404(env, http) -> None:
    contact = http.patch(V + P1, json={"firstname": "Ann"}).headers["OData-EntityId"]
    contact_id = contact.rsplit("(", 1)[1].rstrip(")")
    by_key = {"name": "C-1", "parentcontactid@odata.bind": "/" + P1}
    assert (
        http.patch(
            V + f"opportunities({'1' * 8}-0000-0000-0000-000000000001)", json=by_key
        ).status_code
        == 204
    )
    by_id = {"title": "T", "customerid_contact@odata.bind": f"/contacts({contact_id})"}
    assert (
        http.patch(V + f"incidents({'2' * 8}-0000-0000-0000-000000000001)", json=by_id).status_code
        == 204
    )
    assert env.records("opportunities")[0]["_parentcontactid_value"] == contact_id
    assert env.records("incidents")[0]["_customerid_value"] == contact_id
    gone = {"name": "C-2", "parentcontactid@odata.bind": "/contacts(telecrm_patientid='P-9')"}
    missing = http.patch(V + f"opportunities({'3' * 8}-0000-0000-0000-000000000001)", json=gone)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "0x80040217"


def test_a_case_needs_a_customer(env, http) -> None:
    answer = http.patch(
        V + f"incidents({'4' * 8}-0000-0000-0000-000000000001)", json={"title": "T"}
    )
    assert (
        answer.status_code == 400
        and "parent contact or account" in answer.json()["error"]["message"]
    )


# -- OData errors ---------------------------------------------------------------------------------
def test_errors_are_odata_error_bodies_with_hex_codes(env, http) -> None:
    unknown = http.patch(V + P1, json={"nickname": "x"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "0x0"
    too_long = http.patch(V + P1, json={"firstname": "x" * 51})
    assert too_long.json()["error"] == {
        "code": "0x80044331",
        "message": "A validation error occurred.  The length of the 'firstname' attribute of the 'contact' entity exceeded the maximum allowed length of '50'.",
    }
    segment = http.get(V + "Patients(1)")
    assert segment.status_code == 404 and segment.json()["error"]["code"] == "0x8006088a"


def test_a_literal_that_does_not_convert_is_quoted_back_like_the_real_api(env, http) -> None:
    """Why connectors must never copy an OData message: it can hold the value (PHI)."""
    env.store.add_column("contact", "telecrm_leadscore", Column("Decimal", custom=True))
    answer = http.patch(V + P1, json={"telecrm_leadscore": "canary@example.com"})
    assert answer.status_code == 400 and "canary@example.com" in answer.json()["error"]["message"]
    assert "'telecrm_leadscore'" in answer.json()["error"]["message"]


# -- $batch --------------------------------------------------------------------------------------
def test_a_failed_change_set_rolls_back_only_its_own_operations(env, http) -> None:
    body = batch(
        [("PATCH", "contacts(telecrm_patientid='P-1')", {"firstname": "A"})],
        [
            ("PATCH", "contacts(telecrm_patientid='P-2')", {"firstname": "B"}),
            ("PATCH", "contacts(telecrm_patientid='P-3')", {"nickname": "C"}),
        ],
        [("PATCH", "contacts(telecrm_patientid='P-4')", {"firstname": "D"})],
    )
    answer = post_batch(http, body)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    text = answer.text
    assert (
        text.count("HTTP/1.1 204 No Content") == 2 and text.count("HTTP/1.1 400 Bad Request") == 1
    )
    assert "Content-ID: 1" in text and "Content-ID: 4" in text and "Content-ID: 2" not in text
    assert ids(env) == ["P-1", "P-4"]  # P-2 ran, then rolled back with P-3


def test_without_continue_on_error_the_batch_stops_at_the_first_failure_with_400(env, http) -> None:
    body = batch(
        [("PATCH", P1, {"nickname": "x"})],
        [("PATCH", "contacts(telecrm_patientid='P-2')", {"firstname": "B"})],
    )
    answer = post_batch(http, body, keep_going=False)
    assert answer.status_code == 400 and answer.text.count("HTTP/1.1") == 1
    assert env.records("contacts") == []


def test_content_id_references_resolve_inside_a_change_set(env, http) -> None:
    body = batch(
        [
            ("PATCH", P1, {"firstname": "A"}),
            (
                "PATCH",
                f"opportunities({'5' * 8}-0000-0000-0000-000000000001)",
                {"name": "O", "parentcontactid@odata.bind": "$1"},
            ),
        ]
    )
    assert post_batch(http, body).text.count("204 No Content") == 2
    contact = env.records("contacts")[0]
    assert env.records("opportunities")[0]["_parentcontactid_value"] == contact["contactid"]


def test_more_than_1000_operations_is_refused_whole(env, http) -> None:
    ops = [
        ("PATCH", f"contacts(telecrm_patientid='P-{i}')", {"firstname": "A"}) for i in range(1001)
    ]
    answer = post_batch(http, batch(*ops))
    assert answer.status_code == 400 and "1000" in answer.json()["error"]["message"]
    assert env.records("contacts") == []
    assert post_batch(http, batch(*ops[:1000])).status_code == 200


def test_gets_are_not_allowed_inside_a_change_set(env, http) -> None:
    answer = post_batch(http, batch([("GET", P1, None)]))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "0x0"


# -- metadata --------------------------------------------------------------------------------------
def test_columns_and_keys_are_created_once_through_entity_definitions(clock) -> None:
    sandbox = create_dynamics_sandbox(now=clock)
    client = sandbox_client(sandbox.app)
    client.headers["Authorization"] = "Bearer " + token_for(client).json()["access_token"]
    base = V + "EntityDefinitions(LogicalName='contact')"
    assert client.get(base + "/Attributes(LogicalName='telecrm_patientid')").status_code == 404
    column = {
        "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "SchemaName": "telecrm_PatientId",
        "MaxLength": 64,
    } | LABEL
    assert client.post(base + "/Attributes", json=column).status_code == 204
    assert client.post(base + "/Attributes", json=column).status_code == 400
    unprefixed = column | {"SchemaName": "patientid"}
    assert (
        "publisher prefix"
        in client.post(base + "/Attributes", json=unprefixed).json()["error"]["message"]
    )
    got = client.get(base + "/Attributes(LogicalName='telecrm_patientid')").json()
    assert got["AttributeType"] == "String" and got["MaxLength"] == 64
    key = {"SchemaName": "telecrm_patientid_key", "KeyAttributes": ["telecrm_patientid"]} | LABEL
    assert client.post(base + "/Keys", json=key).status_code == 204
    assert client.get(base + "/Keys").json()["value"][0]["EntityKeyIndexStatus"] == "Active"
    assert client.patch(V + P1, json={"firstname": "A"}).status_code == 204


# -- service protection ----------------------------------------------------------------------------
def limited(clock: Clock, **config: Any) -> tuple[DynamicsSandbox, httpx.Client]:
    sandbox = create_dynamics_sandbox(DynamicsSandboxConfig(**config), now=clock)
    with_patient_key(sandbox)
    client = sandbox_client(sandbox.app)
    client.headers["Authorization"] = "Bearer " + token_for(client).json()["access_token"]
    return sandbox, client


def test_over_the_request_limit_the_next_request_gets_429_with_retry_after(clock) -> None:
    sandbox, client = limited(clock, requests_per_window=3)
    for _ in range(3):
        ok = client.get(V + "WhoAmI")
        assert ok.status_code == 200
    assert ok.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "0"
    clock.t += 100
    refused = client.get(V + "WhoAmI")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "200"
    assert refused.json()["error"]["code"] == "0x80072322"
    assert "limit of 3 over time window of 300 seconds" in refused.json()["error"]["message"]
    clock.t += 200
    assert client.get(V + "WhoAmI").status_code == 200
    assert sandbox.stats.limit_refusals == 1


def test_a_batch_is_one_request_but_each_operation_adds_execution_time(clock) -> None:
    sandbox, client = limited(
        clock, requests_per_window=2, operation_seconds=1.0, execution_seconds_per_window=10
    )
    ops = [("PATCH", f"contacts(telecrm_patientid='P-{i}')", {"firstname": "A"}) for i in range(12)]
    assert post_batch(client, batch(*ops)).status_code == 200  # over the limit after, not before
    assert sandbox.stats.api_requests == 1 and sandbox.stats.operations == 12
    refused = client.get(V + "WhoAmI")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "0x80072321"
    assert int(refused.headers["Retry-After"]) == 300


def test_too_many_concurrent_requests_are_refused_at_once(clock) -> None:
    sandbox, client = limited(clock)
    sandbox.user_limits().in_flight = 52
    refused = client.get(V + "WhoAmI")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "0x80072326"
    assert "Retry-After" in refused.headers


# -- faults and admin ----------------------------------------------------------------------------
def test_a_storm_is_429_with_retry_after_and_errors_are_5xx_odata_bodies(env, http) -> None:
    env.faults.set(Faults(storm_requests=1))
    storm = http.get(V + "WhoAmI")
    assert storm.status_code == 429 and storm.headers["Retry-After"] == "30"
    env.faults.set(Faults(error_rate=1.0))
    error = http.patch(V + P1, json={"firstname": "A"})
    assert error.status_code >= 500 and error.json()["error"]["code"] == "0x80040216"
    assert env.records("contacts") == []


def test_a_dropped_connection_still_applies_the_write(env, http) -> None:
    env.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        http.patch(V + P1, json={"firstname": "A"})
    assert ids(env) == ["P-1"] and env.stats.dropped == 1


def test_admin_endpoints_show_records_stats_and_reset(env, http) -> None:
    http.patch(V + P1, json={"firstname": "A"})
    assert len(http.get("/_sandbox/records/contacts").json()["value"]) == 1
    assert http.get("/_sandbox/stats").json()["api_requests"] == 1
    assert http.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 422
    assert http.post("/_sandbox/reset").json() == {"reset": True}
    assert env.records("contacts") == [] and env.stats.api_requests == 0
    assert http.get(V + "WhoAmI").status_code == 401  # tokens went with the reset
