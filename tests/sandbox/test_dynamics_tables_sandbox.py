"""The Dataverse sandbox creates tables and one-to-many relationships as the metadata Web API does.

Shapes from Microsoft's "Create and update table definitions using the Web API" and "Create and
update table relationships using the Web API" (MicrosoftDocs/powerapps-docs,
developer/data-platform/webapi/create-update-entity-*-using-web-api.md): EntityMetadata with its
required properties and one primary name StringAttributeMetadata; OneToManyRelationshipMetadata
with a LookupAttributeMetadata created by deep insert; definitions read back by name.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from telecrm.sandbox.dynamics import DynamicsSandbox, create_dynamics_sandbox
from telecrm.sandbox.faults import sandbox_client
from tests.sandbox.test_dynamics_sandbox import V, token_for, with_patient_key

NOT_FOUND_SEGMENT = "0x8006088a"
METADATA_EXISTS = "0x80044363"
INVALID_ARGUMENT = "0x80040203"


def label(text: str) -> dict[str, Any]:
    return {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}


def table(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "telecrm_Prescription",
        "DisplayName": label("Prescription"),
        "DisplayCollectionName": label("Prescriptions"),
        "OwnershipType": "UserOwned",
        "IsActivity": False,
        "HasActivities": False,
        "HasNotes": False,
        "Attributes": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "SchemaName": "telecrm_Name",
                "IsPrimaryName": True,
                "MaxLength": 100,
                "FormatName": {"Value": "Text"},
                "DisplayName": label("Name"),
            }
        ],
    }
    return body | overrides


def relationship(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": "telecrm_contact_telecrm_prescription",
        "ReferencedEntity": "contact",
        "ReferencedAttribute": "contactid",
        "ReferencingEntity": "telecrm_prescription",
        "ReferencingEntityNavigationPropertyName": "telecrm_contactid",
        "Lookup": {
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "SchemaName": "telecrm_ContactId",
            "DisplayName": label("Patient contact"),
        },
    }
    return body | overrides


@pytest.fixture
def env() -> DynamicsSandbox:
    sandbox = create_dynamics_sandbox(now=lambda: 1_700_000_000.0)
    with_patient_key(sandbox)
    return sandbox


@pytest.fixture
def http(env: DynamicsSandbox) -> httpx.Client:
    client = sandbox_client(env.app)
    client.headers["Authorization"] = "Bearer " + token_for(client).json()["access_token"]
    return client


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def test_before_provisioning_a_custom_table_is_resource_not_found(http) -> None:
    answer = http.patch(V + "telecrm_prescriptions(telecrm_externalid='rx1')", json={})
    assert error(answer) == (
        404,
        NOT_FOUND_SEGMENT,
        "Resource not found for the segment 'telecrm_prescriptions'.",
    )
    assert http.get(V + "EntityDefinitions(LogicalName='telecrm_prescription')").status_code == 404


def test_a_created_table_takes_upserts_by_its_key_with_its_contact_lookup(http, env) -> None:
    created = http.post(V + "EntityDefinitions", json=table())
    assert created.status_code == 204 and "EntityDefinitions(" in created.headers["OData-EntityId"]
    got = http.get(V + "EntityDefinitions(LogicalName='telecrm_prescription')").json()
    assert got["EntitySetName"] == "telecrm_prescriptions"
    assert got["PrimaryNameAttribute"] == "telecrm_name" and got["IsCustomEntity"] is True
    assert http.post(V + "RelationshipDefinitions", json=relationship()).status_code == 204
    read = http.get(
        V + "RelationshipDefinitions(SchemaName='telecrm_contact_telecrm_prescription')"
    )
    assert read.json()["ReferencingAttribute"] == "telecrm_contactid"
    base = V + "EntityDefinitions(LogicalName='telecrm_prescription')"
    column = {
        "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "SchemaName": "telecrm_ExternalId",
        "MaxLength": 100,
        "DisplayName": label("Rx ID"),
    }
    assert http.post(base + "/Attributes", json=column).status_code == 204
    key = {"SchemaName": "telecrm_externalid_key", "KeyAttributes": ["telecrm_externalid"]}
    assert http.post(base + "/Keys", json=key | {"DisplayName": label("Rx key")}).status_code == 204
    assert http.patch(V + "contacts(telecrm_patientid='P-1')", json={}).status_code == 204
    body = {
        "telecrm_name": "Prescription rx1",
        "telecrm_contactid@odata.bind": "/contacts(telecrm_patientid='P-1')",
    }
    answer = http.patch(V + "telecrm_prescriptions(telecrm_externalid='rx1')", json=body)
    assert answer.status_code == 204
    [row] = env.records("telecrm_prescriptions")
    [contact] = env.records("contacts")
    assert row["_telecrm_contactid_value"] == contact["contactid"]
    assert row["telecrm_externalid"] == "rx1"


def test_a_second_table_or_relationship_of_the_same_name_is_refused(http) -> None:
    assert http.post(V + "EntityDefinitions", json=table()).status_code == 204
    status, code, message = error(http.post(V + "EntityDefinitions", json=table()))
    assert (status, code) == (400, METADATA_EXISTS) and "already exists" in message
    assert http.post(V + "RelationshipDefinitions", json=relationship()).status_code == 204
    status, code, _ = error(http.post(V + "RelationshipDefinitions", json=relationship()))
    assert (status, code) == (400, METADATA_EXISTS)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (table(SchemaName="Prescription"), "not prefixed with the publisher prefix 'telecrm_'"),
        (table(Attributes=[]), "exactly one primary name attribute"),
        ({k: v for k, v in table().items() if k != "HasNotes"}, "HasNotes is required"),
        (table(OwnershipType="Everyone"), "not valid for OwnershipType"),
        (table(DisplayName={}), "DisplayName needs a LocalizedLabel"),
    ],
)
def test_an_invalid_table_definition_gets_an_odata_error(http, body, fragment) -> None:
    status, code, message = error(http.post(V + "EntityDefinitions", json=body))
    assert status == 400 and code.startswith("0x") and fragment in message


def test_a_column_named_like_the_table_id_is_refused(http) -> None:
    http.post(V + "EntityDefinitions", json=table())
    column = {
        "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "SchemaName": "telecrm_PrescriptionId",
        "MaxLength": 100,
        "DisplayName": label("Rx ID"),
    }
    base = V + "EntityDefinitions(LogicalName='telecrm_prescription')"
    assert error(http.post(base + "/Attributes", json=column))[:2] == (400, METADATA_EXISTS)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (relationship(ReferencingEntity="telecrm_nothing"), 404, "telecrm_nothing"),
        (relationship(ReferencedAttribute="fullname"), 400, "primary key"),
        (relationship(Lookup={"SchemaName": "telecrm_x"}), 400, "LookupAttributeMetadata"),
        (relationship(SchemaName="contact_rx"), 400, "publisher prefix"),
        (
            relationship(
                **{"@odata.type": "Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata"}
            ),
            400,
            "OneToManyRelationshipMetadata",
        ),
    ],
)
def test_an_invalid_relationship_gets_an_odata_error(http, body, status, fragment) -> None:
    http.post(V + "EntityDefinitions", json=table())
    got_status, code, message = error(http.post(V + "RelationshipDefinitions", json=body))
    assert (got_status, code[:2]) == (status, "0x") and fragment in message
    missing = http.get(
        V + "RelationshipDefinitions(SchemaName='telecrm_contact_telecrm_prescription')"
    )
    assert missing.status_code == 404
