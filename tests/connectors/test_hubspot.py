"""The HubSpot connector against the HubSpot sandbox, in process: outcomes, errors, auth, provisioning."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
    CustomProperty,
    RateLimited,
    RecordWrite,
    TransientFailure,
)
from telecrm.connectors.hubspot import HubSpotConfig, HubSpotConnector
from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_hubspot_sandbox
from tests.sandbox.hubspot_contract import fits

BASE = "http://sandbox"
CANARY = "canary-phi-7781@example.com"
PATIENT_ID = CustomProperty("contacts", "telecrm_patient_id", "Patient ID", "string", unique=True)
DEAL_ID = CustomProperty("deals", "telecrm_deal_id", "Deal ID", "string", unique=True)
PROPERTIES = [
    PATIENT_ID,
    CustomProperty(
        "contacts", "telecrm_stage", "Stage", "enumeration", options=("lead", "patient")
    ),
    CustomProperty("contacts", "telecrm_visits", "Visits", "number"),
    CustomProperty("contacts", "telecrm_dob", "Birth date", "date", sensitive=True),
    CustomProperty("contacts", "telecrm_consented", "Consented", "bool"),
    DEAL_ID,
]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class CountingGate:
    def __init__(self) -> None:
        self.turns = 0
        self.observed: list[int] = []

    def wait_turn(self) -> None:
        self.turns += 1

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append(status)

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        return None


class Rig:
    """A sandbox, a connector wired to it, and every request the connector sent."""

    def __init__(self, config: HubSpotConfig | None = None, **sandbox_config: Any) -> None:
        self.clock = FakeClock()
        self.sandbox: HubSpotSandbox = create_hubspot_sandbox(
            HubSpotSandboxConfig(**sandbox_config), now=self.clock.now, sleep=self.clock.sleep
        )
        self.sent: list[httpx.Request] = []
        client = sandbox_client(
            self.sandbox.app, base_url=BASE, event_hooks={"request": [self.sent.append]}
        )
        self.gate = CountingGate()
        self.connector = HubSpotConnector(
            config or HubSpotConfig(base_url=BASE, private_app_token="pat-na1-sandbox"),
            client,
            gate=self.gate,
            now=self.clock.now,
        )

    def bodies(self, path_end: str) -> list[Any]:
        return [json.loads(r.content) for r in self.sent if r.url.path.endswith(path_end)]


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    rig.connector.provision(PROPERTIES)
    yield rig
    rig.connector.close()


def patients(n: int, start: int = 0) -> list[RecordWrite]:
    return [
        RecordWrite(
            f"p{i:04d}",
            {"email": f"p{i}@example.com", "telecrm_visits": i, "telecrm_consented": True},
        )
        for i in range(start, start + n)
    ]


def upsert_all(rig: Rig, records: list[RecordWrite]) -> list[Any]:
    out = []
    for i in range(0, len(records), rig.connector.batch_max("contacts")):
        out += rig.connector.write("contacts", "telecrm_patient_id", records[i : i + 100])
    return out


# -- writes -----------------------------------------------------------------------------------------
def test_upserting_250_records_takes_3_calls_and_all_are_accepted(rig: Rig) -> None:
    before = rig.connector.stats.calls
    outcomes = upsert_all(rig, patients(250))
    assert rig.connector.stats.calls - before == 3
    assert [o.key for o in outcomes] == [f"p{i:04d}" for i in range(250)]
    assert all(o.outcome == "accepted" and o.created and o.crm_id for o in outcomes)
    stored = {
        r["properties"]["telecrm_patient_id"]: r["id"] for r in rig.sandbox.records("contacts")
    }
    assert stored == {o.key: o.crm_id for o in outcomes}
    for body in rig.bodies("/batch/upsert"):
        fits("contacts", "BatchInputSimplePublicObjectBatchInputUpsert", body)


def test_rerun_updates_the_same_records(rig: Rig) -> None:
    first = upsert_all(rig, patients(120))
    again = upsert_all(rig, patients(120))
    assert all(o.outcome == "accepted" and o.created is False for o in again)
    assert [o.crm_id for o in again] == [o.crm_id for o in first]
    assert len(rig.sandbox.records("contacts")) == 120


def test_rejections_map_to_their_keys_with_codes_and_no_phi(rig: Rig) -> None:
    records = [
        *patients(2),
        RecordWrite("bad-email", {"email": CANARY.replace("@", " at ")}),
        RecordWrite("bad-stage", {"telecrm_stage": CANARY}),
        RecordWrite("bad-prop", {"not_a_property": CANARY}),
        RecordWrite("bad-number", {"telecrm_visits": CANARY}),
    ]
    outcomes = {o.key: o for o in rig.connector.write("contacts", "telecrm_patient_id", records)}
    assert outcomes["p0000"].outcome == outcomes["p0001"].outcome == "accepted"
    assert {k: (o.outcome, o.code) for k, o in outcomes.items() if k.startswith("bad")} == {
        "bad-email": ("rejected", "INVALID_EMAIL"),
        "bad-stage": ("rejected", "INVALID_OPTION"),
        "bad-prop": ("rejected", "PROPERTY_DOESNT_EXIST"),
        "bad-number": ("rejected", "INVALID_DECIMAL"),
    }
    assert outcomes["bad-stage"].detail == "properties: telecrm_stage"
    assert "canary" not in repr(list(outcomes.values())).lower()
    assert "canary" in rig.sent[-1].content.decode()  # the sandbox did see (and echo) the value


def test_update_mode_reports_absent_records_as_missing(rig: Rig) -> None:
    rig.connector.write("contacts", "telecrm_patient_id", patients(1))
    records = [RecordWrite("p0000", {"city": "Reno"}), RecordWrite("ghost", {"city": "Reno"})]
    outcomes = rig.connector.write("contacts", "telecrm_patient_id", records, mode="update")
    assert [(o.key, o.outcome) for o in outcomes] == [("p0000", "accepted"), ("ghost", "missing")]
    fits("contacts", "BatchInputSimplePublicObjectBatchInput", rig.bodies("/batch/update")[0])
    assert len(rig.sandbox.records("contacts")) == 1


def test_whole_batch_refusal_is_batch_rejected_without_values(rig: Rig) -> None:
    with pytest.raises(BatchRejected) as caught:  # firstname is no unique-value property: 400
        rig.connector.write("contacts", "firstname", [RecordWrite(CANARY, {"firstname": CANARY})])
    assert caught.value.code == "VALIDATION_ERROR" and caught.value.status == 400
    assert "canary" not in str(caught.value) and not caught.value.retryable


def test_a_record_missing_from_the_answer_is_transient_never_accepted(rig: Rig) -> None:
    def drop_one_result(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/batch/upsert"):
            response.read()
            body = response.json()
            body["results"] = body["results"][1:]
            response._content = json.dumps(body).encode()

    rig.connector._client.event_hooks["response"] = [drop_one_result]
    with pytest.raises(TransientFailure) as caught:
        rig.connector.write("contacts", "telecrm_patient_id", patients(3))
    assert caught.value.code == "INCOMPLETE_RESPONSE"


# -- failures ---------------------------------------------------------------------------------------
def test_rate_limit_is_rate_limited_with_retry_after() -> None:
    rig = Rig(burst_limit=1)
    with pytest.raises(RateLimited) as caught:
        rig.connector.provision([PATIENT_ID])
    assert caught.value.code == "TEN_SECONDLY_ROLLING" and caught.value.retry_after == 10.0
    assert not caught.value.daily and rig.connector.stats.limit_refusals == 1


def test_daily_limit_waits_until_next_utc_midnight() -> None:
    rig = Rig(daily_limit=1)
    rig.clock.t = 1_700_006_400.0 - 3600  # 23:00 UTC
    with pytest.raises(RateLimited) as caught:
        rig.connector.provision([PATIENT_ID])
    assert caught.value.daily and caught.value.retry_after == pytest.approx(3600)


@pytest.mark.parametrize(
    "fault", [Faults(error_rate=1.0), Faults(drop_rate=1.0), Faults(storm_requests=1)]
)
def test_server_errors_drops_and_storms_are_retryable(rig: Rig, fault: Faults) -> None:
    rig.sandbox.faults.set(fault)
    with pytest.raises(TransientFailure) as caught:
        rig.connector.write("contacts", "telecrm_patient_id", patients(2))
    assert caught.value.retryable


def test_private_token_refused_is_auth_failed_at_once() -> None:
    rig = Rig(HubSpotConfig(base_url=BASE, private_app_token="pat-revoked"))
    with pytest.raises(AuthFailed):
        rig.connector.write("contacts", "email", [RecordWrite("a@example.com", {})])
    assert rig.connector.stats.calls == 1


REFRESH_TOKEN = "sandbox-refresh-token"


def oauth_config(refresh_token: str = REFRESH_TOKEN) -> HubSpotConfig:
    return HubSpotConfig(
        base_url=BASE, client_id="sandbox-client-id", client_secret="sandbox-client-secret",
        refresh_token=refresh_token,
    )  # fmt: skip


def test_oauth_token_is_refreshed_before_expiry_mid_run() -> None:
    rig = Rig(oauth_config())
    rig.connector.provision(PROPERTIES)
    upsert_all(rig, patients(100))
    assert rig.connector.stats.token_calls == 1
    rig.clock.t += 1600  # inside the refresh margin of the 1800 s token
    upsert_all(rig, patients(100, start=100))
    assert rig.connector.stats.token_calls == 2 and rig.sandbox.stats.unauthorized == 0
    assert len(rig.sandbox.records("contacts")) == 200


def test_oauth_401_refreshes_once_and_retries() -> None:
    rig = Rig(oauth_config())
    rig.connector.provision(PROPERTIES)
    rig.sandbox.access_tokens.clear()  # HubSpot revoked the token early
    outcomes = upsert_all(rig, patients(5))
    assert all(o.outcome == "accepted" for o in outcomes)
    assert rig.connector.stats.token_calls == 2 and rig.sandbox.stats.unauthorized == 1


def test_bad_refresh_token_is_auth_failed() -> None:
    rig = Rig(oauth_config(refresh_token="revoked"))
    with pytest.raises(AuthFailed) as caught:
        rig.connector.provision([PATIENT_ID])
    assert caught.value.code == "BAD_REFRESH_TOKEN" and "revoked" not in str(caught.value)


# -- archive, associate, provision, gate ------------------------------------------------------------
def test_archive_by_crm_id(rig: Rig) -> None:
    [written] = rig.connector.write("contacts", "telecrm_patient_id", patients(1))
    records = [RecordWrite(written.key, {}, crm_id=written.crm_id), RecordWrite("never-synced", {})]
    outcomes = rig.connector.archive("contacts", records)
    assert [o.outcome for o in outcomes] == ["accepted", "missing"]
    assert rig.sandbox.records("contacts") == []
    fits("contacts", "BatchInputSimplePublicObjectId", rig.bodies("/batch/archive")[0])


def test_associate_links_contacts_to_deals(rig: Rig) -> None:
    [contact] = rig.connector.write("contacts", "telecrm_patient_id", patients(1))
    [deal] = rig.connector.write(
        "deals",
        "telecrm_deal_id",
        [RecordWrite("d1", {"dealname": "Visit", "dealstage": "closedwon"})],
    )
    assert contact.crm_id and deal.crm_id
    links = [
        AssociationWrite(contact.key, contact.crm_id, deal.crm_id),
        AssociationWrite("p9", contact.crm_id, "424242"),
    ]
    outcomes = rig.connector.associate("contacts", "deals", links)
    assert [o.outcome for o in outcomes] == ["accepted", "rejected"]
    assert rig.sandbox.associations("contacts", contact.crm_id, "deals") == [deal.crm_id]
    assert rig.connector.associate("contacts", "deals", links[:1])[0].outcome == "accepted"
    fits(
        "associations",
        "BatchInputPublicDefaultAssociationMultiPost",
        rig.bodies("/associate/default")[0],
    )


def test_provision_twice_creates_nothing_the_second_time() -> None:
    rig = Rig()
    first = rig.connector.provision(PROPERTIES)
    assert [s.action for s in first] == ["created"] * (2 + len(PROPERTIES))
    second = rig.connector.provision(PROPERTIES)
    assert [s.action for s in second] == ["exists"] * (2 + len(PROPERTIES))
    creates = [
        json.loads(r.content)
        for r in rig.sent
        if r.method == "POST" and r.url.path.startswith("/crm/v3/properties/")
    ]
    for body in creates:
        if "type" in body:
            fits("properties", "PropertyCreate", body, extra_keys=frozenset({"dataSensitivity"}))
        else:
            fits("properties", "PropertyGroupCreate", body)
    stored = rig.sandbox.store.properties["contacts"]
    assert stored["telecrm_dob"]["dataSensitivity"] == "sensitive"
    assert stored["telecrm_patient_id"]["hasUniqueValue"] is True


def test_gate_is_asked_once_per_api_call(rig: Rig) -> None:
    upsert_all(rig, patients(150))
    assert rig.gate.turns == rig.connector.stats.calls == len(rig.sent)
    assert len(rig.gate.observed) == rig.gate.turns
