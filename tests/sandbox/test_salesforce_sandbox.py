"""The Salesforce sandbox keeps Salesforce's REST contract.

Shapes checked against the docs:
- UpsertResult / SaveResult / DeleteResult in collections:
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-delete.html
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/object_ref/sforce_api_calls_upsert_upsertresult.htm
- error arrays and statuses: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
- Sforce-Limit-Info: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
- convertLead(): https://developer.salesforce.com/docs/atlas.en-us.api.meta/object_ref/sforce_api_calls_convertlead.htm
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import jsonschema
import jwt
import pytest

from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.salesforce import (
    SalesforceSandbox,
    SalesforceSandboxConfig,
    create_salesforce_sandbox,
)
from tests.support.keys import rsa_pem_pair

V = "/services/data/v62.0"
PATIENT = "Telecrm_Patient_Id__c"
PARTNER = "urn:partner.soap.sforce.com"
ERROR = {
    "type": "object",
    "required": ["statusCode", "message", "fields"],
    "properties": {
        "statusCode": {"type": "string"},
        "message": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "string"}},
    },
}
SAVE_RESULT = {
    "type": "object",
    "required": ["success", "errors"],
    "properties": {
        "id": {"type": ["string", "null"], "pattern": "^[0-9A-Za-z]{18}$"},
        "success": {"type": "boolean"},
        "created": {"type": "boolean"},
        "errors": {"type": "array", "items": ERROR},
    },
}
RESULTS = {"type": "array", "items": SAVE_RESULT}
ERROR_ARRAY = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["message", "errorCode"],
        "properties": {"message": {"type": "string"}, "errorCode": {"type": "string"}},
    },
}
TOKEN = {
    "type": "object",
    "required": [
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    ],
    "properties": {"token_type": {"const": "Bearer"}},
    "not": {"required": ["refresh_token"]},
}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, str]:
    return rsa_pem_pair()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def org(clock: Clock, rsa_pem: tuple[str, str]) -> SalesforceSandbox:
    return create_salesforce_sandbox(SalesforceSandboxConfig(jwt_public_key=rsa_pem[1]), now=clock)


@pytest.fixture
def http(org: SalesforceSandbox) -> httpx.Client:
    with sandbox_client(org.app) as client:
        yield client


def client_credentials(http: httpx.Client) -> httpx.Response:
    return http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client-id",
            "client_secret": "sandbox-client-secret",
        },
    )


@pytest.fixture
def auth(http: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client_credentials(http).json()['access_token']}"}


def provision(
    http: httpx.Client, auth: dict[str, str], full_name: str = f"Contact.{PATIENT}", **meta: Any
) -> httpx.Response:
    metadata = {
        "label": "Patient ID",
        "type": "Text",
        "length": 64,
        "externalId": True,
        "unique": True,
    } | meta
    return http.post(
        f"{V}/tooling/sobjects/CustomField",
        headers=auth,
        json={"FullName": full_name, "Metadata": metadata},
    )


def contact(pid: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, PATIENT: pid, "LastName": "Doe"} | fields


def upsert(
    http: httpx.Client,
    auth: dict[str, str],
    records: list[dict[str, Any]],
    *,
    obj: str = "Contact",
    all_or_none: bool = False,
) -> httpx.Response:
    return http.patch(
        f"{V}/composite/sobjects/{obj}/{PATIENT}",
        headers=auth,
        json={"allOrNone": all_or_none, "records": records},
    )


def jwt_assertion(private_pem: str, clock: Clock, **claims: Any) -> str:
    payload = {
        "iss": "sandbox-consumer-key",
        "sub": "integration@telecrm.example",
        "aud": "https://login.salesforce.com",
        "exp": int(clock.t) + 180,
    } | claims
    return jwt.encode(payload, private_pem, algorithm="RS256")


# -- auth ---------------------------------------------------------------------------------------
def test_jwt_bearer_flow_issues_a_session_without_refresh_token(http, rsa_pem, clock) -> None:
    answer = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt_assertion(rsa_pem[0], clock),
        },
    )
    assert answer.status_code == 200
    jsonschema.validate(answer.json(), TOKEN)
    assert answer.json()["instance_url"] == "http://sandbox"
    assert (
        http.get(
            f"{V}/limits", headers={"Authorization": f"Bearer {answer.json()['access_token']}"}
        ).status_code
        == 200
    )


def test_client_credentials_flow_issues_a_session(http) -> None:
    answer = client_credentials(http)
    assert answer.status_code == 200
    jsonschema.validate(answer.json(), TOKEN)


@pytest.mark.parametrize(
    "claims, error",
    [
        ({"aud": "https://test.salesforce.com"}, "invalid_grant"),
        ({"iss": "someone-else"}, "invalid_client_id"),
        ({"sub": "stranger@example.com"}, "invalid_grant"),
        ({"exp": 1}, "invalid_grant"),
    ],
)
def test_bad_jwt_assertion_is_refused_with_oauth_error(http, rsa_pem, clock, claims, error) -> None:
    answer = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt_assertion(rsa_pem[0], clock, **claims),
        },
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == error and answer.json()["error_description"]


def test_assertion_signed_by_another_key_is_refused(http, clock) -> None:
    pem = rsa_pem_pair.__wrapped__()[0]  # a fresh pair, not the one the org trusts
    answer = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt_assertion(pem, clock),
        },
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(http) -> None:
    answer = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client-id",
            "client_secret": "nope",
        },
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


def test_expired_session_answers_401_invalid_session_id(http, auth, clock) -> None:
    clock.t += 7200
    answer = http.get(f"{V}/limits", headers=auth)
    assert answer.status_code == 401
    assert answer.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_missing_bearer_token_answers_401(http) -> None:
    assert http.get(f"{V}/limits").status_code == 401


# -- collections upsert ---------------------------------------------------------------------------
def test_upsert_creates_then_updates_in_request_order(http, auth, org) -> None:
    assert provision(http, auth).status_code == 201
    first = upsert(http, auth, [contact("P-2"), contact("P-1")])
    assert first.status_code == 200
    jsonschema.validate(first.json(), RESULTS)
    assert [r["created"] for r in first.json()] == [True, True]
    second = upsert(http, auth, [contact("P-1", FirstName="Ann"), contact("P-3")])
    assert [r["created"] for r in second.json()] == [False, True]
    assert second.json()[0]["id"] == first.json()[1]["id"]
    assert second.json()[0]["id"].startswith("003")
    assert {r[PATIENT] for r in org.store.records["Contact"].values()} == {"P-1", "P-2", "P-3"}


def test_upsert_over_200_records_is_refused_whole(http, auth) -> None:
    provision(http, auth)
    answer = upsert(http, auth, [contact(f"P-{i}") for i in range(201)])
    assert answer.status_code == 400
    jsonschema.validate(answer.json(), ERROR_ARRAY)
    assert answer.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_upsert_reports_per_record_errors_in_place(http, auth) -> None:
    provision(http, auth)
    answer = upsert(
        http,
        auth,
        [
            contact("P-1", Email="not-an-email"),
            contact("P-2", Shoe_Size__c=9),
            {"attributes": {"type": "Contact"}, PATIENT: "P-3"},
            contact("P-4"),
        ],
    )
    jsonschema.validate(answer.json(), RESULTS)
    results = answer.json()
    assert results[0]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert results[0]["errors"][0]["fields"] == ["Email"]
    assert "not-an-email" in results[0]["errors"][0]["message"]  # Salesforce echoes values
    assert results[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert results[2]["errors"][0] == {
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [LastName]",
        "fields": ["LastName"],
    }
    assert results[3]["success"] is True


def test_upsert_by_a_field_not_marked_external_id_is_refused(http, auth) -> None:
    answer = http.patch(
        f"{V}/composite/sobjects/Contact/LastName", headers=auth, json={"records": [contact("P-1")]}
    )
    assert answer.status_code == 400 and answer.json()[0]["errorCode"] == "INVALID_FIELD"


def test_upsert_record_without_matching_type_attribute_is_a_malformed_request(http, auth) -> None:
    provision(http, auth)
    answer = upsert(http, auth, [{PATIENT: "P-1", "LastName": "Doe"}])
    assert answer.status_code == 400


def test_upsert_refuses_record_ids(http, auth) -> None:
    provision(http, auth)
    answer = upsert(http, auth, [contact("P-1", Id="003000000000001AAA")])
    assert answer.json()[0]["errors"][0]["fields"] == ["Id"]


def test_all_or_none_rolls_back_every_record_when_one_fails(http, auth, org) -> None:
    provision(http, auth)
    answer = upsert(http, auth, [contact("P-1"), contact("P-2", Email="bad")], all_or_none=True)
    results = answer.json()
    jsonschema.validate(results, RESULTS)
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert org.store.records["Contact"] == {}


def test_relationship_by_external_id_sets_the_lookup(http, auth, org) -> None:
    provision(http, auth)
    provision(http, auth, f"Account.{PATIENT}")
    account = upsert(
        http,
        auth,
        [{"attributes": {"type": "Account"}, PATIENT: "P-1", "Name": "Household"}],
        obj="Account",
    ).json()[0]
    answer = upsert(
        http,
        auth,
        [contact("P-1", Account={PATIENT: "P-1"}), contact("P-2", Account={PATIENT: "P-9"})],
    )
    assert answer.json()[0]["success"] is True
    assert answer.json()[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    created = org.store.records["Contact"][answer.json()[0]["id"]]
    assert created["AccountId"] == account["id"]


def test_two_records_sharing_an_external_id_fail_the_upsert(http, auth, org) -> None:
    provision(http, auth, unique=False)
    for _ in range(2):
        http.post("/_sandbox/records/Contact", json={"LastName": "Twin", PATIENT: "P-1"})
    answer = upsert(http, auth, [contact("P-1")])
    assert answer.json()[0]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"


def test_picklists_and_required_fields_of_opportunity_are_enforced(http, auth) -> None:
    provision(http, auth, f"Opportunity.{PATIENT}")
    base = {"attributes": {"type": "Opportunity"}, "Name": "Consult", "CloseDate": "2025-01-31"}
    answer = upsert(
        http,
        auth,
        [
            base | {PATIENT: "O-1", "StageName": "Qualification"},
            base | {PATIENT: "O-2", "StageName": "Maybe"},
        ],
        obj="Opportunity",
    )
    assert answer.json()[0]["success"] is True
    assert answer.json()[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


# -- update, delete, get ----------------------------------------------------------------------------
def test_update_by_id_delete_by_ids_and_get_not_found(http, auth) -> None:
    provision(http, auth)
    cid = upsert(http, auth, [contact("P-1")]).json()[0]["id"]
    updated = http.patch(
        f"{V}/composite/sobjects",
        headers=auth,
        json={
            "allOrNone": False,
            "records": [{"attributes": {"type": "Contact"}, "Id": cid, "FirstName": "Ann"}],
        },
    )
    jsonschema.validate(updated.json(), RESULTS)
    assert http.get(f"{V}/sobjects/Contact/{cid}", headers=auth).json()["FirstName"] == "Ann"
    deleted = http.delete(
        f"{V}/composite/sobjects", headers=auth, params={"ids": cid, "allOrNone": "false"}
    )
    assert deleted.json() == [{"id": cid, "success": True, "errors": []}]
    again = http.delete(f"{V}/composite/sobjects", headers=auth, params={"ids": cid})
    assert again.json()[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    missing = http.get(f"{V}/sobjects/Contact/{cid}", headers=auth)
    assert missing.status_code == 404 and missing.json()[0]["errorCode"] == "NOT_FOUND"


def test_soql_query_finds_records_by_external_id(http, auth) -> None:
    provision(http, auth)
    upsert(http, auth, [contact("P-1"), contact("P-2")])
    soql = f"SELECT Id, {PATIENT} FROM Contact WHERE {PATIENT} IN ('P-1', 'P-7')"
    body = http.get(f"{V}/query", headers=auth, params={"q": soql}).json()
    assert body["totalSize"] == 1 and body["done"] is True
    assert (
        body["records"][0][PATIENT] == "P-1"
        and body["records"][0]["attributes"]["type"] == "Contact"
    )


# -- limits and faults ---------------------------------------------------------------------------------
def test_every_answer_carries_api_usage_and_the_allocation_is_a_403(clock, rsa_pem) -> None:
    org = create_salesforce_sandbox(
        SalesforceSandboxConfig(daily_api_allocation=3, window_seconds=600), now=clock
    )
    with sandbox_client(org.app) as http:
        auth = {"Authorization": f"Bearer {client_credentials(http).json()['access_token']}"}
        seen = [
            http.get(f"{V}/limits", headers=auth).headers["Sforce-Limit-Info"] for _ in range(3)
        ]
        assert seen == ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]
        refused = http.get(f"{V}/limits", headers=auth)
        assert refused.status_code == 403
        assert refused.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
        assert refused.headers["Sforce-Limit-Info"] == "api-usage=3/3"
        assert org.stats.limit_refusals == 1
        clock.t += 601  # the rolling window moves on
        assert http.get(f"{V}/limits", headers=auth).status_code == 200


def test_error_fault_answers_5xx_and_touches_no_record(http, auth, org) -> None:
    provision(http, auth)
    org.faults.set(Faults(error_rate=1.0))
    answer = upsert(http, auth, [contact("P-1")])
    assert answer.status_code in (500, 503)
    assert answer.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert org.store.records["Contact"] == {}


def test_storm_fault_is_salesforce_403_never_429(http, auth, org) -> None:
    org.faults.set(Faults(storm_requests=2))
    codes = [http.get(f"{V}/limits", headers=auth).status_code for _ in range(3)]
    assert codes == [403, 403, 200]


def test_drop_fault_applies_the_write_then_cuts_the_connection(http, auth, org) -> None:
    provision(http, auth)
    org.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        upsert(http, auth, [contact("P-1")])
    assert len(org.store.records["Contact"]) == 1


def test_latency_fault_sleeps_on_the_injected_sleep(clock) -> None:
    slept: list[float] = []
    org = create_salesforce_sandbox(now=clock, sleep=slept.append)
    org.faults.set(Faults(latency_seconds=2.5))
    with sandbox_client(org.app) as http:
        auth = {"Authorization": f"Bearer {client_credentials(http).json()['access_token']}"}
        started = time.monotonic()
        assert http.get(f"{V}/limits", headers=auth).status_code == 200
        assert time.monotonic() - started < 2
    assert slept == [2.5]


# -- lead conversion (SOAP) --------------------------------------------------------------------------
def convert_envelope(token: str, lead_id: str, *, no_opportunity: bool = True) -> str:
    return (
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:urn="{PARTNER}"><soapenv:Header><urn:SessionHeader><urn:sessionId>{token}</urn:sessionId>'
        "</urn:SessionHeader></soapenv:Header><soapenv:Body><urn:convertLead><urn:leadConverts>"
        "<urn:convertedStatus>Closed - Converted</urn:convertedStatus>"
        f"<urn:doNotCreateOpportunity>{str(no_opportunity).lower()}</urn:doNotCreateOpportunity>"
        f"<urn:leadId>{lead_id}</urn:leadId></urn:leadConverts></urn:convertLead></soapenv:Body>"
        "</soapenv:Envelope>"
    )


def soap_result(answer: httpx.Response) -> dict[str, str | None]:
    node = ET.fromstring(answer.content).find(f".//{{{PARTNER}}}result")  # noqa: S314 - our sandbox
    assert node is not None
    return {
        name: node.findtext(f"{{{PARTNER}}}{name}")
        for name in ("accountId", "contactId", "opportunityId", "success")
    } | {"statusCode": node.findtext(f"{{{PARTNER}}}errors/{{{PARTNER}}}statusCode")}


@pytest.mark.parametrize("no_opportunity", [True, False])
def test_convert_lead_creates_account_and_contact_and_marks_the_lead(
    http, auth, org, no_opportunity
) -> None:
    lead = org.store.insert(
        "Lead", {"LastName": "Doe", "Company": "Doe Household", "Email": "d@example.com"}
    )
    token = auth["Authorization"][7:]
    answer = http.post(
        "/services/Soap/u/62.0",
        content=convert_envelope(token, lead["Id"], no_opportunity=no_opportunity),
        headers={"Content-Type": "text/xml", "SOAPAction": "convertLead"},
    )
    assert answer.status_code == 200
    result = soap_result(answer)
    assert result["success"] == "true"
    assert result["accountId"].startswith("001") and result["contactId"].startswith("003")
    assert (not result["opportunityId"]) is no_opportunity
    converted = org.store.records["Lead"][lead["Id"]]
    assert converted["IsConverted"] is True and converted["Status"] == "Closed - Converted"
    assert converted["ConvertedContactId"] == result["contactId"]
    assert org.store.records["Contact"][result["contactId"]]["Email"] == "d@example.com"
    again = soap_result(
        http.post(
            "/services/Soap/u/62.0",
            content=convert_envelope(token, lead["Id"]),
            headers={"Content-Type": "text/xml", "SOAPAction": "convertLead"},
        )
    )
    assert again["success"] == "false" and again["statusCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"


def test_soap_call_with_an_expired_session_is_a_fault(http, org) -> None:
    lead = org.store.insert("Lead", {"LastName": "Doe", "Company": "Doe"})
    answer = http.post(
        "/services/Soap/u/62.0",
        content=convert_envelope("stale", lead["Id"]),
        headers={"Content-Type": "text/xml", "SOAPAction": "convertLead"},
    )
    assert answer.status_code == 500
    assert b"<faultcode>sf:INVALID_SESSION_ID</faultcode>" in answer.content


# -- tooling ---------------------------------------------------------------------------------------
def test_tooling_creates_custom_fields_once(http, auth) -> None:
    first = provision(http, auth)
    assert first.status_code == 201 and first.json()["success"] is True
    duplicate = provision(http, auth)
    assert duplicate.status_code == 400
    assert duplicate.json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    soql = "SELECT Id FROM CustomField WHERE DeveloperName = 'Telecrm_Patient_Id' AND TableEnumOrId = 'Contact'"
    found = http.get(f"{V}/tooling/query", headers=auth, params={"q": soql}).json()
    assert found["size"] == 1 and found["records"][0]["Id"] == first.json()["id"]


def test_provisioned_picklist_and_number_fields_validate_values(http, auth) -> None:
    provision(
        http,
        auth,
        "Contact.Plan__c",
        type="Picklist",
        externalId=False,
        unique=False,
        valueSet={"valueSetDefinition": {"value": [{"fullName": "Basic"}, {"fullName": "Plus"}]}},
    )
    provision(http, auth)
    results = upsert(
        http, auth, [contact("P-1", Plan__c="Plus"), contact("P-2", Plan__c="Gold")]
    ).json()
    assert results[0]["success"] is True
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


# -- admin --------------------------------------------------------------------------------------------
def test_admin_endpoints_show_records_stats_and_reset(http, auth, org) -> None:
    provision(http, auth)
    upsert(http, auth, [contact("P-1")])
    assert [r[PATIENT] for r in http.get("/_sandbox/records/Contact").json()] == ["P-1"]
    stats = http.get("/_sandbox/stats").json()
    assert stats["api_requests"] == 2 and stats["token_requests"] == 1
    assert (
        stats["requests_by_path"][
            "PATCH /services/data/v{version}/composite/sobjects/{sobject}/{ext_field}"
        ]
        == 1
    )
    assert http.post("/_sandbox/faults", json={"storm_requests": 1}).status_code == 200
    assert http.get(f"{V}/limits", headers=auth).status_code == 403
    assert http.post("/_sandbox/faults", json={"bogus": 1}).status_code == 422
    http.post("/_sandbox/reset")
    assert http.get("/_sandbox/records/Contact").json() == []
    assert provision(http, auth).status_code == 201  # custom fields are gone too
