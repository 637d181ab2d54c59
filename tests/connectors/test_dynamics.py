"""The Dataverse connector against the sandbox environment, in process: batches, errors, auth, provisioning."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    ConfigurationError,
    ConnectorError,
    CustomProperty,
    RateLimited,
    RecordOutcome,
    RecordWrite,
    TransientFailure,
)
from telecrm.connectors.dynamics import DynamicsConnector, odata_key
from telecrm.connectors.dynamics_auth import DynamicsConfig
from telecrm.sandbox.dynamics import DynamicsSandbox, DynamicsSandboxConfig, create_dynamics_sandbox
from telecrm.sandbox.faults import Faults, sandbox_client

MAPPINGS = Path(__file__).resolve().parents[2] / "src" / "telecrm" / "connectors" / "mappings"

PATIENT = "telecrm_patientid"
CANARY = "canary-dyn@example.com"
PROPERTIES = [
    CustomProperty("contacts", PATIENT, "telecrm patient ID", "string", unique=True),
    CustomProperty("contacts", "telecrm_leadscore", "Lead score", "number"),
    CustomProperty(
        "contacts",
        "telecrm_lifecyclestage",
        "Lifecycle stage",
        "enumeration",
        options=("Lead", "Customer"),
    ),
    CustomProperty(
        "opportunities", "telecrm_consultationid", "telecrm consultation ID", "string", unique=True
    ),
]


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
        self.observed.append((status, headers.get("x-ms-ratelimit-burst-remaining-xrm-requests")))

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        return None


def config(**overrides: Any) -> DynamicsConfig:
    return DynamicsConfig(
        org_url="https://telecrm-sandbox.crm.dynamics.com",
        tenant_id="00000000-0000-0000-0000-00000000e1d0",
        client_id="sandbox-client-id",
        client_secret="sandbox-client-secret",
        **overrides,
    ).pointed_at("http://sandbox")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def env(clock: Clock) -> DynamicsSandbox:
    return create_dynamics_sandbox(now=clock)


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def crm(
    env: DynamicsSandbox, clock: Clock, sent: list[httpx.Request]
) -> Iterator[DynamicsConnector]:
    client = sandbox_client(env.app, event_hooks={"request": [sent.append]})
    connector = DynamicsConnector(config(), client, now=clock)
    steps = connector.provision(PROPERTIES)
    assert {s.action for s in steps} == {"created"}, steps
    connector.stats.by_endpoint.clear()
    connector.stats.calls = 0
    yield connector
    client.close()


def patients(n: int, **props: Any) -> list[RecordWrite]:
    return [
        RecordWrite(f"P-{i}", {PATIENT: f"P-{i}", "lastname": f"Doe{i}"} | props) for i in range(n)
    ]


def no_canary(*things: Any) -> None:
    for thing in things:
        assert CANARY not in repr(thing) and CANARY not in str(thing)


def test_provision_twice_is_created_then_exists_with_the_alternate_key(env, clock) -> None:
    connector = DynamicsConnector(
        config(solution_unique_name="telecrm"), sandbox_client(env.app), now=clock
    )
    first = connector.provision(PROPERTIES)
    assert [(s.target, s.action) for s in first] == [
        ("contacts.telecrm_patientid", "created"),
        ("contacts.key(telecrm_patientid)", "created"),
        ("contacts.telecrm_leadscore", "created"),
        ("contacts.telecrm_lifecyclestage", "created"),
        ("opportunities.telecrm_consultationid", "created"),
        ("opportunities.key(telecrm_consultationid)", "created"),
    ]
    assert {s.action for s in connector.provision(PROPERTIES)} == {"exists"}
    assert env.store.keys["contact"]["telecrm_patientid_key"].attributes == (PATIENT,)


def test_provision_reports_a_key_still_indexing(clock) -> None:
    env = create_dynamics_sandbox(DynamicsSandboxConfig(key_activation_seconds=120), now=clock)
    steps = DynamicsConnector(config(), sandbox_client(env.app), now=clock).provision(
        PROPERTIES[:1]
    )
    assert steps[1].action == "created" and steps[1].detail == "index Pending"


def test_provision_of_an_unprefixed_column_fails_with_the_code_only(env, clock) -> None:
    bad = CustomProperty("contacts", "patientnumber", "Patient number", "string")
    [step] = DynamicsConnector(config(), sandbox_client(env.app), now=clock).provision([bad])
    assert step.action == "failed" and step.detail.startswith("0x")


def test_upserting_twice_keeps_one_record_per_key_in_one_batch_call_each(crm, env, sent) -> None:
    first = crm.write("contacts", PATIENT, patients(3))
    again = crm.write("contacts", PATIENT, patients(3, firstname="Ann"))
    assert [o.outcome for o in first + again] == ["accepted"] * 6
    assert [o.key for o in again] == ["P-0", "P-1", "P-2"]
    assert [o.crm_id for o in again] == [o.crm_id for o in first] and all(o.crm_id for o in first)
    assert len(env.records("contacts")) == 3 and crm.stats.calls == 2
    assert {r["firstname"] for r in env.records("contacts")} == {"Ann"}
    batch = sent[-1]
    assert batch.url.path == "/api/data/v9.2/$batch"
    assert batch.headers["Prefer"] == "odata.continue-on-error"
    assert batch.content.count(b"boundary=changeset_") == 3  # one change set per record


def test_more_records_than_the_batch_size_take_more_batches(crm, env) -> None:
    small = DynamicsConnector(config(batch_size=2), crm.client, now=crm._tokens.now)
    outcomes = small.write("contacts", PATIENT, patients(5))
    assert small.batch_max("contacts") == 2 and small.stats.by_endpoint == {
        "$batch contacts upsert": 3
    }
    assert [o.key for o in outcomes] == [f"P-{i}" for i in range(5)]


def test_a_bad_record_is_rejected_alone_with_code_and_column_names_only(crm, env) -> None:
    records = patients(3)
    records[1] = RecordWrite(
        "P-1", {PATIENT: "P-1", "emailaddress1": CANARY, "telecrm_leadscore": CANARY}
    )
    records[2] = RecordWrite("P-2", {PATIENT: "P-2", "firstname": "x" * 60})
    outcomes = crm.write("contacts", PATIENT, records)
    assert [o.outcome for o in outcomes] == ["accepted", "rejected", "rejected"]
    assert (outcomes[1].code, outcomes[1].detail) == ("0x0", "telecrm_leadscore")
    assert (outcomes[2].code, outcomes[2].detail) == ("0x80044331", "firstname")
    assert sorted(r[PATIENT] for r in env.records("contacts")) == ["P-0"]
    no_canary(outcomes)


def test_update_mode_reports_absent_records_missing_and_creates_nothing(crm, env) -> None:
    crm.write("contacts", PATIENT, patients(1))
    outcomes = crm.write("contacts", PATIENT, patients(2, firstname="Bo"), mode="update")
    assert [o.outcome for o in outcomes] == ["accepted", "missing"]
    assert len(env.records("contacts")) == 1


def test_relations_bind_the_lookup_by_alternate_key_and_associate_links_later(crm, env) -> None:
    [contact] = crm.write("contacts", PATIENT, patients(1))
    opportunity = RecordWrite(
        "C-1",
        {
            "telecrm_consultationid": "C-1",
            "name": "Consultation C-1",
            "parentcontactid": {PATIENT: "P-0"},
        },
    )
    [opp] = crm.write("opportunities", "telecrm_consultationid", [opportunity])
    assert opp.outcome == "accepted"
    assert env.records("opportunities")[0]["_parentcontactid_value"] == contact.crm_id
    plain = crm.write(
        "opportunities", "telecrm_consultationid", [RecordWrite("C-2", {"name": "C-2"})]
    )
    assert plain[0].crm_id is not None and contact.crm_id is not None
    links = [AssociationWrite("C-2", plain[0].crm_id, contact.crm_id)]
    assert [o.outcome for o in crm.associate("opportunities", "contacts", links)] == ["accepted"]
    assert all(r["_parentcontactid_value"] == contact.crm_id for r in env.records("opportunities"))
    with pytest.raises(ConfigurationError):
        crm.associate("contacts", "incidents", links)


def test_archive_deletes_by_id_and_a_second_time_is_missing(crm, env) -> None:
    written = crm.write("contacts", PATIENT, patients(2))
    gone = [RecordWrite(o.key, {}, o.crm_id) for o in written] + [RecordWrite("P-9", {})]
    assert [o.outcome for o in crm.archive("contacts", gone)] == ["accepted", "accepted", "missing"]
    assert [o.outcome for o in crm.archive("contacts", gone)] == ["missing"] * 3
    assert env.records("contacts") == []


def test_429_is_rate_limited_with_retry_after(crm, env) -> None:
    env.faults.set(Faults(storm_requests=1))
    with pytest.raises(RateLimited) as caught:
        crm.write("contacts", PATIENT, patients(1, emailaddress1=CANARY))
    assert caught.value.retry_after == 30.0 and caught.value.code == "0x80072322"
    assert crm.stats.limit_refusals == 1 and not caught.value.daily
    no_canary(caught.value, caught.value.detail)


def test_the_service_protection_window_is_honoured_through_retry_after(clock) -> None:
    env = create_dynamics_sandbox(DynamicsSandboxConfig(requests_per_window=5), now=clock)
    crm = DynamicsConnector(config(), sandbox_client(env.app), now=clock)
    crm.provision(PROPERTIES[:1])  # 3 GETs + 2 POSTs: the window is full
    with pytest.raises(RateLimited) as caught:
        crm.write("contacts", PATIENT, patients(1))
    clock.t += caught.value.retry_after or 0
    assert crm.write("contacts", PATIENT, patients(1))[0].outcome == "accepted"


def test_a_cut_connection_is_transient_and_the_retry_does_not_duplicate(crm, env) -> None:
    env.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        crm.write("contacts", PATIENT, patients(2, emailaddress1=CANARY))
    assert caught.value.code == "CONNECTION"
    env.faults.set(Faults())
    assert [o.outcome for o in crm.write("contacts", PATIENT, patients(2))] == ["accepted"] * 2
    assert len(env.records("contacts")) == 2
    no_canary(caught.value)


def test_server_errors_are_transient(crm, env) -> None:
    env.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        crm.write("contacts", PATIENT, patients(1))
    assert caught.value.status in (500, 502, 503) and caught.value.code == "0x80040216"


def test_an_expiring_token_is_renewed_before_use_and_a_revoked_one_after_a_401(
    crm, env, clock
) -> None:
    crm.write("contacts", PATIENT, patients(1))
    tokens = crm.stats.token_calls
    clock.t += 3400  # inside the refresh margin of a 3,599-s token
    crm.write("contacts", PATIENT, patients(1))
    assert crm.stats.token_calls == tokens + 1 and env.stats.unauthorized == 0
    env.expire_tokens()
    assert crm.write("contacts", PATIENT, patients(1))[0].outcome == "accepted"
    assert crm.stats.token_calls == tokens + 2 and env.stats.unauthorized == 1


def test_a_401_after_a_fresh_token_is_auth_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(
                200, json={"token_type": "Bearer", "expires_in": 3599, "access_token": "t"}
            )
        return httpx.Response(401)

    crm = DynamicsConnector(config(), httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(AuthFailed):
        crm.write("contacts", PATIENT, patients(1))
    assert crm.stats.token_calls == 2


def test_a_wrong_secret_is_auth_failed_without_the_secret(env, clock) -> None:
    bad = config().model_copy(update={"client_secret": SecretStr("not-the-secret")})
    crm = DynamicsConnector(bad, sandbox_client(env.app), now=clock)
    with pytest.raises(AuthFailed) as caught:
        crm.write("contacts", PATIENT, patients(1))
    assert caught.value.code == "invalid_client" and "not-the-secret" not in str(caught.value)


def test_no_application_user_is_a_configuration_error(clock) -> None:
    env = create_dynamics_sandbox(DynamicsSandboxConfig(application_user=False), now=clock)
    with pytest.raises(ConfigurationError) as caught:
        DynamicsConnector(config(), sandbox_client(env.app), now=clock).write(
            "contacts", PATIENT, patients(1)
        )
    assert caught.value.code == "0x80072560"


def test_every_data_call_waits_at_the_gate_and_every_call_reports_to_it(env, clock) -> None:
    gate = CountingGate()
    crm = DynamicsConnector(config(), sandbox_client(env.app), gate=gate, now=clock)
    crm.provision(PROPERTIES[:1])
    provisioning_calls = crm.stats.calls
    # Metadata calls do not wait for the $batch budget, but the gate sees their answers (429s).
    assert gate.turns == 0 and len(gate.observed) == provisioning_calls > 0
    crm.write("contacts", PATIENT, patients(2))
    assert gate.turns == crm.stats.calls - provisioning_calls and crm.stats.token_calls == 1
    assert all(remaining is not None for _, remaining in gate.observed)


def test_key_values_are_quoted_and_escaped_in_the_url(crm, env) -> None:
    assert odata_key(PATIENT, "O'Brien/1") == "telecrm_patientid='O''Brien%2F1'"
    [o] = crm.write("contacts", PATIENT, [RecordWrite("O'Brien/1", {"lastname": "O'Brien"})])
    assert o.outcome == "accepted" and env.records("contacts")[0][PATIENT] == "O'Brien/1"


def test_nothing_raised_or_returned_carries_the_canary(crm, env) -> None:
    seen: list[RecordOutcome | ConnectorError] = []
    bad = [
        RecordWrite(
            "P-1", {"emailaddress1": CANARY, "telecrm_leadscore": CANARY, "firstname": CANARY * 3}
        )
    ]
    seen += crm.write("contacts", PATIENT, bad)
    seen += crm.write("contacts", PATIENT, bad, mode="update")
    for faults in (Faults(storm_requests=1), Faults(error_rate=1.0), Faults(drop_rate=1.0)):
        env.faults.set(faults)
        with pytest.raises(ConnectorError) as caught:
            crm.write("contacts", PATIENT, bad)
        seen.append(caught.value)
    no_canary(*seen, *(getattr(s, "detail", "") for s in seen))


@pytest.mark.parametrize("name", ["dynamics", "dynamics-baa"])
def test_the_built_in_mappings_name_only_columns_and_lookups_the_environment_has(
    env, clock, name
) -> None:
    """After `provision`, every property of the mapping is a column or a lookup of its table."""
    from telecrm.connectors.dynamics import TABLES
    from telecrm.sync.mapping import load_mapping

    m = load_mapping(name)
    tables = [t.to_custom_table() for t in m.custom_tables]
    connector = DynamicsConnector(
        config(),
        sandbox_client(env.app),
        now=clock,
        lookups={t.contact_lookup: "contacts" for t in tables},
    )
    steps = connector.provision([c.to_custom_property() for c in m.custom_properties], tables)
    assert {s.action for s in steps} == {"created"}, steps
    for o in m.objects:
        table = env.store.table_by_set(o.crm_object)
        assert TABLES[o.crm_object] == table.logical
        for prop, spec in o.properties.items():
            if spec.relation is not None:
                target = m.object(spec.relation).crm_object
                assert table.lookups[prop][1] == env.store.table_by_set(target).logical
                assert connector.lookups[prop] == target
            else:
                assert prop in table.columns, (o.name, prop)


def test_writing_to_a_table_not_provisioned_halts_with_a_configuration_error(crm) -> None:
    record = RecordWrite("rx1", {"telecrm_externalid": "rx1"})
    with pytest.raises(ConfigurationError) as info:
        crm.write("telecrm_prescriptions", "telecrm_externalid", [record])
    assert info.value.code == "0x8006088a" and "crm provision" in info.value.detail


def test_custom_tables_are_provisioned_once_and_take_upserts_with_their_lookup(env, clock) -> None:
    from telecrm.connectors.base import CustomTable

    rx = CustomTable(
        "telecrm_prescription", "Prescription", "Prescriptions", "telecrm_name", "telecrm_contactid"
    )
    columns = [
        *PROPERTIES[:1],
        CustomProperty("telecrm_prescriptions", "telecrm_externalid", "Rx ID", "string", True),
        CustomProperty("telecrm_prescriptions", "telecrm_refills", "Refills", "number"),
    ]
    connector = DynamicsConnector(
        config(solution_unique_name="telecrm"),
        sandbox_client(env.app),
        now=clock,
        lookups={"telecrm_contactid": "contacts"},
    )
    first = connector.provision(columns, [rx])
    assert [(s.target, s.action) for s in first] == [
        ("table(telecrm_prescription)", "created"),
        ("telecrm_prescriptions.lookup(telecrm_contactid)", "created"),
        ("contacts.telecrm_patientid", "created"),
        ("contacts.key(telecrm_patientid)", "created"),
        ("telecrm_prescriptions.telecrm_externalid", "created"),
        ("telecrm_prescriptions.key(telecrm_externalid)", "created"),
        ("telecrm_prescriptions.telecrm_refills", "created"),
    ]
    posts = connector.stats.by_endpoint.copy()
    assert {s.action for s in connector.provision(columns, [rx])} == {"exists"}
    assert {k: n for k, n in connector.stats.by_endpoint.items() if k.startswith("POST")} == {
        k: n for k, n in posts.items() if k.startswith("POST")
    }
    connector.write("contacts", PATIENT, [RecordWrite("P-1", {PATIENT: "P-1"})])
    row = {"telecrm_externalid": "rx1", "telecrm_refills": 2, "telecrm_contactid": {PATIENT: "P-1"}}
    [outcome] = connector.write(
        "telecrm_prescriptions", "telecrm_externalid", [RecordWrite("rx1", row)]
    )
    assert outcome.outcome == "accepted"
    [contact] = env.records("contacts")
    assert (
        env.records("telecrm_prescriptions")[0]["_telecrm_contactid_value"] == contact["contactid"]
    )
