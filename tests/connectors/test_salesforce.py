"""The Salesforce connector against the sandbox org, in process: batching, errors, auth, conversion."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
    CustomProperty,
    LeadConversion,
    RateLimited,
    RecordWrite,
    TransientFailure,
)
from telecrm.connectors.salesforce import SalesforceConnector, parse_limit_info
from telecrm.connectors.salesforce_auth import SalesforceConfig
from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.salesforce import (
    SalesforceSandbox,
    SalesforceSandboxConfig,
    create_salesforce_sandbox,
)
from tests.support.keys import rsa_pem_pair

PATIENT = "Telecrm_Patient_Id__c"
CANARY = "canary-phi-7781@example.com"
EXTERNAL_ID = {
    "label": "Patient ID",
    "type": "Text",
    "length": 64,
    "externalId": True,
    "unique": True,
}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class CountingGate:
    def __init__(self) -> None:
        self.turns = 0
        self.observed: list[tuple[int, str | None]] = []

    def wait_turn(self) -> None:
        self.turns += 1

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append(
            (status, {k.lower(): v for k, v in headers.items()}.get("sforce-limit-info"))
        )

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        return None


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, str]:
    return rsa_pem_pair()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def org(clock: Clock, rsa_pem: tuple[str, str]) -> SalesforceSandbox:
    sandbox = create_salesforce_sandbox(
        SalesforceSandboxConfig(jwt_public_key=rsa_pem[1]), now=clock
    )
    for obj in ("Contact", "Account", "Lead"):
        sandbox.store.create_custom_field(f"{obj}.{PATIENT}", EXTERNAL_ID)
    return sandbox


def cc_config(**overrides: Any) -> SalesforceConfig:
    return SalesforceConfig(
        login_url="http://sandbox",
        client_id="sandbox-client-id",
        client_secret="sandbox-client-secret",
        **overrides,
    )


def jwt_config(private_pem: str) -> SalesforceConfig:
    return SalesforceConfig(
        login_url="http://sandbox",
        consumer_key="sandbox-consumer-key",
        username="integration@telecrm.example",
        private_key=private_pem,
        audience="https://login.salesforce.com",
    )


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def crm(org: SalesforceSandbox, clock: Clock, sent: list[httpx.Request]) -> SalesforceConnector:
    client = sandbox_client(org.app, event_hooks={"request": [sent.append]})
    connector = SalesforceConnector(cc_config(), client, now=clock)
    yield connector
    connector.close()
    client.close()


def patients(n: int, **props: Any) -> list[RecordWrite]:
    return [RecordWrite(f"P-{i}", {"LastName": f"Doe{i}"} | props) for i in range(n)]


def test_450_records_are_three_calls_all_accepted_and_a_rerun_updates(crm, org) -> None:
    first = crm.write("Contact", PATIENT, patients(450))
    assert crm.stats.by_endpoint == {"composite/sobjects upsert": 3}
    assert [o.outcome for o in first] == ["accepted"] * 450 and all(o.created for o in first)
    assert [o.key for o in first] == [f"P-{i}" for i in range(450)]
    again = crm.write("Contact", PATIENT, patients(450, FirstName="Ann"))
    assert not any(o.created for o in again)
    assert [o.crm_id for o in again] == [o.crm_id for o in first]
    assert len(org.store.records["Contact"]) == 450


def test_upsert_bodies_follow_the_documented_shape(crm, sent) -> None:
    crm.write(
        "Contact", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "Id": "003000000000001AAA"})]
    )
    upsert = next(r for r in sent if r.method == "PATCH")
    assert upsert.url.path == f"/services/data/v62.0/composite/sobjects/Contact/{PATIENT}"
    body = json.loads(upsert.content)
    assert body["allOrNone"] is False
    assert body["records"] == [
        {"attributes": {"type": "Contact"}, "LastName": "Doe", PATIENT: "P-1"}
    ]
    assert upsert.headers["authorization"].startswith("Bearer ")


def test_rejections_map_to_their_keys_with_codes_and_field_names_only(crm) -> None:
    records = [
        RecordWrite("P-1", {"LastName": "Doe", "Email": CANARY.replace("@", " at ")}),
        RecordWrite("P-2", {"LastName": "Doe", "Email": CANARY}),
        RecordWrite("P-3", {"Email": CANARY}),
        RecordWrite("P-4", {"LastName": "Doe", "Unknown__c": CANARY}),
    ]
    outcomes = {o.key: o for o in crm.write("Contact", PATIENT, records)}
    assert (outcomes["P-1"].outcome, outcomes["P-1"].code, outcomes["P-1"].detail) == (
        "rejected",
        "INVALID_EMAIL_ADDRESS",
        "Email",
    )
    assert outcomes["P-2"].outcome == "accepted"
    assert (outcomes["P-3"].code, outcomes["P-3"].detail) == ("REQUIRED_FIELD_MISSING", "LastName")
    assert outcomes["P-4"].code == "INVALID_FIELD"
    assert "canary" not in repr(list(outcomes.values()))


def test_no_phi_value_reaches_an_exception(org, crm) -> None:
    org.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as failed:
        crm.write("Contact", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "Email": CANARY})])
    assert "canary" not in str(failed.value) + repr(failed.value.detail)


def test_limit_exceeded_403_is_rate_limited_for_the_day(org, crm) -> None:
    org.faults.set(Faults(storm_requests=1))
    with pytest.raises(RateLimited) as refused:
        crm.write("Contact", PATIENT, patients(2))
    assert refused.value.daily and refused.value.status == 403 and refused.value.retry_after
    assert crm.stats.limit_refusals == 1


def test_allocation_spent_in_the_org_is_rate_limited(clock) -> None:
    org = create_salesforce_sandbox(SalesforceSandboxConfig(daily_api_allocation=1), now=clock)
    org.store.create_custom_field(f"Contact.{PATIENT}", EXTERNAL_ID)
    with sandbox_client(org.app) as client:
        crm = SalesforceConnector(cc_config(), client, now=clock)
        crm.write("Contact", PATIENT, patients(1))
        with pytest.raises(RateLimited):
            crm.write("Contact", PATIENT, patients(1))


def test_server_errors_and_dropped_connections_are_transient(org, crm) -> None:
    org.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as failed:
        crm.write("Contact", PATIENT, patients(1))
    assert failed.value.retryable and failed.value.status in (500, 503)
    org.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(TransientFailure) as dropped:
        crm.write("Contact", PATIENT, patients(1))
    assert dropped.value.code == "CONNECTION"
    assert len(org.store.records["Contact"]) == 1  # the org applied it all the same


@pytest.mark.parametrize("flow", ["client_credentials", "jwt_bearer"])
def test_expired_session_is_renewed_transparently(org, clock, rsa_pem, flow) -> None:
    config = cc_config() if flow == "client_credentials" else jwt_config(rsa_pem[0])
    with sandbox_client(org.app) as client:
        crm = SalesforceConnector(config, client, now=clock)
        crm.write("Contact", PATIENT, patients(1))
        clock.t += 7201
        assert crm.write("Contact", PATIENT, patients(1))[0].outcome == "accepted"
    assert crm.stats.token_calls == 2 and crm.stats.calls == 3


def test_bad_credentials_are_auth_failed(org, clock) -> None:
    with sandbox_client(org.app) as client:
        config = SalesforceConfig(
            login_url="http://sandbox", client_id="sandbox-client-id", client_secret="wrong"
        )
        crm = SalesforceConnector(config, client, now=clock)
        with pytest.raises(AuthFailed) as refused:
            crm.write("Contact", PATIENT, patients(1))
    assert refused.value.code == "invalid_client" and not refused.value.retryable


def test_update_mode_writes_existing_records_and_reports_absent_ones_missing(crm, org) -> None:
    crm.write("Contact", PATIENT, patients(2))
    outcomes = crm.write(
        "Contact",
        PATIENT,
        [RecordWrite("P-1", {"FirstName": "Ann"}), RecordWrite("P-o'brien", {"FirstName": "Bo"})],
        mode="update",
    )
    assert [(o.key, o.outcome) for o in outcomes] == [("P-1", "accepted"), ("P-o'brien", "missing")]
    assert len(org.store.records["Contact"]) == 2
    assert crm.stats.by_endpoint["query"] == 1


def test_archive_deletes_by_crm_id_and_reports_gone_ones_missing(crm, org) -> None:
    written = crm.write("Contact", PATIENT, patients(2))
    archived = crm.archive("Contact", [RecordWrite(o.key, {}, o.crm_id) for o in written])
    assert [o.outcome for o in archived] == ["accepted", "accepted"]
    again = crm.archive(
        "Contact", [RecordWrite("P-0", {}, written[0].crm_id), RecordWrite("P-9", {})]
    )
    assert [o.outcome for o in again] == ["missing", "missing"]
    assert org.store.records["Contact"] == {}


def test_associate_sets_the_lookup_on_the_child(crm, org) -> None:
    account = crm.write("Account", PATIENT, [RecordWrite("P-1", {"Name": "Household"})])[0]
    person = crm.write("Contact", PATIENT, patients(1))[0]
    outcome = crm.associate(
        "Contact", "Account", [AssociationWrite("P-0", person.crm_id, account.crm_id)]
    )
    assert outcome[0].outcome == "accepted"
    assert org.store.records["Contact"][person.crm_id]["AccountId"] == account.crm_id


def test_converted_lead_becomes_the_contact_that_later_upserts_update(crm, org) -> None:
    lead = crm.write("Lead", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "Company": "Doe"})])[
        0
    ]
    converted = crm.convert_leads([LeadConversion("P-1", lead.crm_id)])
    assert converted[0].ok and converted[0].contact_crm_id.startswith("003")
    assert converted[0].account_crm_id.startswith("001")
    after = crm.write(
        "Contact", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "FirstName": "Jo"})]
    )[0]
    assert after.crm_id == converted[0].contact_crm_id and after.created is False
    assert len(org.store.records["Contact"]) == 1
    assert org.store.records["Opportunity"] == {}  # doNotCreateOpportunity
    assert org.store.records["Account"][converted[0].account_crm_id][PATIENT] == "P-1"


def test_converting_again_after_a_lost_answer_is_safe(crm, org) -> None:
    lead = crm.write("Lead", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "Company": "Doe"})])[
        0
    ]
    org.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(TransientFailure):
        crm.convert_leads([LeadConversion("P-1", lead.crm_id)])
    org.faults.set(Faults())
    retried = crm.convert_leads([LeadConversion("P-1", lead.crm_id)])
    assert retried[0].ok and len(org.store.records["Contact"]) == 1


def test_converting_an_unknown_lead_fails_that_conversion_only(crm) -> None:
    lead = crm.write("Lead", PATIENT, [RecordWrite("P-1", {"LastName": "Doe", "Company": "Doe"})])[
        0
    ]
    results = crm.convert_leads(
        [LeadConversion("P-9", "00Q8d0000000zzzAAA"), LeadConversion("P-1", lead.crm_id)]
    )
    assert [r.ok for r in results] == [False, True]
    assert results[0].code == "INVALID_CROSS_REFERENCE_KEY"


def test_provision_creates_fields_once_then_reports_them_existing(clock) -> None:
    org = create_salesforce_sandbox(now=clock)
    wanted = [
        CustomProperty("Contact", PATIENT, "Patient ID", "string", unique=True),
        CustomProperty(
            "Contact", "Telecrm_Plan__c", "Plan", "enumeration", options=("Basic", "Plus")
        ),
        CustomProperty("Contact", "Telecrm_Visits__c", "Visits", "number"),
        CustomProperty("Contact", "Telecrm_Consent__c", "Consent", "bool"),
    ]
    with sandbox_client(org.app) as client:
        crm = SalesforceConnector(cc_config(), client, now=clock)
        assert [s.action for s in crm.provision(wanted)] == ["created"] * 4
        assert [s.action for s in crm.provision(wanted)] == ["exists"] * 4
        out = crm.write(
            "Contact",
            PATIENT,
            [
                RecordWrite(
                    "P-1",
                    {
                        "LastName": "Doe",
                        "Telecrm_Plan__c": "Plus",
                        "Telecrm_Visits__c": 3,
                        "Telecrm_Consent__c": True,
                    },
                )
            ],
        )
    assert out[0].outcome == "accepted"


def test_gate_takes_one_turn_per_api_call_and_sees_the_usage_header(org, clock) -> None:
    gate = CountingGate()
    with sandbox_client(org.app) as client:
        crm = SalesforceConnector(cc_config(), client, gate=gate, now=clock)
        crm.write("Contact", PATIENT, patients(450))
        crm.write("Contact", PATIENT, patients(3), mode="update")
        lead = crm.write(
            "Lead", PATIENT, [RecordWrite("P-L", {"LastName": "Doe", "Company": "Doe"})]
        )[0]
        crm.convert_leads([LeadConversion("P-L", lead.crm_id)])
    assert gate.turns == crm.stats.calls == 3 + 2 + 1 + 2
    assert crm.stats.token_calls == 1
    assert all(info and info.startswith("api-usage=") for _, info in gate.observed)
    assert parse_limit_info(gate.observed[-1][1]) == (8, 100_000)


def test_parse_limit_info_reads_usage_and_ignores_other_parts() -> None:
    assert parse_limit_info("api-usage=18/100000; api-bursts=1/750") == (18, 100000)
    assert parse_limit_info("per-app-api-usage=17/250(appName=x)") is None
    assert parse_limit_info(None) is None


def mocked(handler: Any) -> SalesforceConnector:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/services/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "instance_url": "http://org"})
        return handler(request)

    return SalesforceConnector(cc_config(), httpx.Client(transport=httpx.MockTransport(route)))


def test_a_locked_row_makes_the_call_transient() -> None:
    crm = mocked(
        lambda r: httpx.Response(
            200,
            json=[
                {"id": "0038d0000000001AAA", "success": True, "errors": [], "created": True},
                {
                    "success": False,
                    "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "x", "fields": []}],
                },
            ],
        )
    )
    with pytest.raises(TransientFailure) as locked:
        crm.write("Contact", PATIENT, patients(2))
    assert locked.value.code == "UNABLE_TO_LOCK_ROW"


def test_a_whole_call_400_is_batch_rejected_without_its_message() -> None:
    crm = mocked(
        lambda r: httpx.Response(
            400,
            json=[
                {
                    "message": f"Cannot deserialize instance of date from VALUE_STRING value {CANARY}",
                    "errorCode": "JSON_PARSER_ERROR",
                }
            ],
        )
    )
    with pytest.raises(BatchRejected) as rejected:
        crm.write("Contact", PATIENT, patients(2))
    assert rejected.value.code == "JSON_PARSER_ERROR" and "canary" not in str(rejected.value)
