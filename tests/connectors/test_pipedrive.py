"""The Pipedrive connector against the Pipedrive sandbox, in process: upserts, errors, auth, setup."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    ConfigurationError,
    CustomProperty,
    RateLimited,
    RecordWrite,
    TransientFailure,
)
from telecrm.connectors.pipedrive import PipedriveConfig, PipedriveConnector
from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.pipedrive import (
    PipedriveSandbox,
    PipedriveSandboxConfig,
    create_pipedrive_sandbox,
)

BASE = "http://sandbox"
CANARY = "canary-pd@example.com"
ID = "telecrm_patient_id"
PROPERTIES = [
    CustomProperty("persons", ID, "telecrm patient ID", "string", unique=True),
    CustomProperty("persons", "telecrm_lifecycle_stage", "Lifecycle stage", "enumeration",
                   options=("Lead", "Customer")),
    CustomProperty("persons", "telecrm_churn_risk", "Churn risk", "number"),
    CustomProperty("deals", "telecrm_consultation_id", "telecrm consultation ID", "string", unique=True),
]  # fmt: skip
BIG_BUDGET = {"daily_token_budget": 10_000_000, "burst_api_token": 100_000, "burst_search": 100_000}


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
        self.observed: list[tuple[int, str | None]] = []

    def wait_turn(self) -> None:
        self.turns += 1

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append((status, headers.get("x-ratelimit-remaining")))

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        return None


class Rig:
    """A sandbox, a connector wired to it, and every request the connector sent."""

    def __init__(self, config: PipedriveConfig | None = None, **sandbox_config: Any) -> None:
        self.clock = FakeClock()
        self.sandbox: PipedriveSandbox = create_pipedrive_sandbox(
            PipedriveSandboxConfig(**{**BIG_BUDGET, **sandbox_config}),
            now=self.clock.now,
            sleep=self.clock.sleep,
        )
        self.sent: list[httpx.Request] = []
        client = sandbox_client(
            self.sandbox.app, base_url=BASE, event_hooks={"request": [self.sent.append]}
        )
        self.gate = CountingGate()
        self.connector = PipedriveConnector(
            config or PipedriveConfig(base_url=BASE, api_token="pd-sandbox-api-token"),
            client, gate=self.gate, now=self.clock.now,
        )  # fmt: skip

    def count(self, method: str, path_end: str) -> int:
        return sum(1 for r in self.sent if r.method == method and r.url.path.endswith(path_end))

    def persons(self) -> dict[str, dict[str, Any]]:
        key = self.sandbox.field_key("persons", ID)
        return {r["custom_fields"][key]: r for r in self.sandbox.records("persons")}


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    rig.connector.provision(PROPERTIES)
    rig.sent.clear()
    rig.gate = rig.connector._gate = CountingGate()
    yield rig
    rig.connector.close()


def patient(i: int, **extra: Any) -> RecordWrite:
    return RecordWrite(
        f"P-{i:04d}", {"name": f"Patient {i}", "telecrm_churn_risk": i / 10, **extra}
    )


def upsert(connector: PipedriveConnector, *records: RecordWrite) -> list[Any]:
    return [o for r in records for o in connector.write("persons", ID, [r])]


# -- writes -----------------------------------------------------------------------------------------
def test_upsert_creates_then_updates_the_same_person_searching_once(rig: Rig) -> None:
    [created] = upsert(rig.connector, patient(1, telecrm_lifecycle_stage="Lead"))
    assert created.outcome == "accepted" and created.created is True and created.crm_id
    [updated] = upsert(rig.connector, patient(1, telecrm_lifecycle_stage="Customer"))
    assert (updated.outcome, updated.created, updated.crm_id) == ("accepted", False, created.crm_id)
    assert list(rig.persons()) == ["P-0001"]
    stage_key = rig.sandbox.field_key("persons", "telecrm_lifecycle_stage")
    field = next(f for f in rig.sandbox.store.fields["persons"] if f["key"] == stage_key)
    customer = {o["label"]: o["id"] for o in field["options"]}["Customer"]
    assert rig.persons()["P-0001"]["custom_fields"][stage_key] == customer
    assert rig.count("GET", "/persons/search") == 1
    assert rig.count("POST", "/api/v2/persons") == 1 and rig.count("PATCH", created.crm_id) == 1


def test_a_person_made_elsewhere_is_found_by_search_and_updated(rig: Rig) -> None:
    other = Rig()  # e.g. an earlier telecrm install: same company, connector without the id
    other.sandbox = rig.sandbox
    other_connector = PipedriveConnector(
        PipedriveConfig(base_url=BASE, api_token="pd-sandbox-api-token"),
        sandbox_client(rig.sandbox.app, base_url=BASE),
    )
    [first] = upsert(other_connector, patient(7))
    [again] = upsert(rig.connector, patient(7, name="Renamed"))
    assert again.crm_id == first.crm_id and again.created is False
    assert rig.persons()["P-0007"]["name"] == "Renamed" and len(rig.persons()) == 1


def test_a_known_crm_id_skips_the_search(rig: Rig) -> None:
    [made] = upsert(rig.connector, patient(2))
    fresh = PipedriveConnector(
        PipedriveConfig(base_url=BASE, api_token="pd-sandbox-api-token"),
        sandbox_client(rig.sandbox.app, base_url=BASE, event_hooks={"request": [rig.sent.append]}),
    )
    rig.sent.clear()
    record = RecordWrite("P-0002", {"name": "Known"}, crm_id=made.crm_id)
    [outcome] = fresh.write("persons", ID, [record])
    assert outcome.crm_id == made.crm_id and rig.count("GET", "/search") == 0


def test_1000_records_cost_1000_writes_plus_one_search_each_only_the_first_time(rig: Rig) -> None:
    records = [patient(i) for i in range(1000)]
    before = rig.connector.stats.calls
    first = upsert(rig.connector, *records)
    assert all(o.outcome == "accepted" and o.created for o in first)
    assert rig.connector.stats.calls - before == 1 + 1000 + 1000  # field list, searches, creates
    before = rig.connector.stats.calls
    again = upsert(rig.connector, *records)
    assert all(o.outcome == "accepted" and not o.created for o in again)
    assert rig.connector.stats.calls - before == 1000  # one PATCH each, no search
    assert len(rig.persons()) == 1000
    assert rig.gate.turns == len(rig.sent) and len(rig.gate.observed) == len(rig.sent)


def test_update_mode_reports_an_absent_person_as_missing(rig: Rig) -> None:
    [outcome] = rig.connector.write("persons", ID, [patient(3)], mode="update")
    assert outcome.outcome == "missing" and rig.persons() == {}


def test_a_rejected_record_is_rejected_alone_with_field_names_and_no_value(rig: Rig) -> None:
    bad_email = RecordWrite("P-0100", {"name": "x", "email": CANARY.replace("@", " at ")})
    bad_number = RecordWrite("P-0101", {"name": "x", "telecrm_churn_risk": CANARY})
    bad_option = RecordWrite("P-0102", {"name": "x", "telecrm_lifecycle_stage": CANARY})
    outcomes = upsert(rig.connector, patient(1), bad_email, bad_number, bad_option, patient(2))
    assert [(o.key, o.outcome) for o in outcomes] == [
        ("P-0001", "accepted"), ("P-0100", "rejected"), ("P-0101", "rejected"),
        ("P-0102", "rejected"), ("P-0002", "accepted"),
    ]  # fmt: skip
    assert [o.detail for o in outcomes[1:4]] == [
        "fields: email", "fields: telecrm_churn_risk", "fields: telecrm_lifecycle_stage",
    ]  # fmt: skip
    assert outcomes[3].code == "INVALID_OPTION"
    assert "canary" not in repr(outcomes).lower()
    assert any("canary" in r.content.decode() for r in rig.sent)  # the values did go out


def test_a_dropped_create_is_transient_and_the_retry_finds_the_record(rig: Rig) -> None:
    def drop_the_create(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/api/v2/persons":
            rig.sandbox.faults.set(Faults(drop_rate=1.0))

    rig.connector.write("persons", ID, [patient(9)])
    rig.connector._client.event_hooks["request"].append(drop_the_create)
    with pytest.raises(TransientFailure) as caught:
        rig.connector.write("persons", ID, [patient(10)])  # searched, created, answer lost
    assert caught.value.code == "CONNECTION" and caught.value.retryable
    rig.connector._client.event_hooks["request"].remove(drop_the_create)
    rig.sandbox.faults.set(Faults())
    [outcome] = rig.connector.write("persons", ID, [patient(10)])
    assert outcome.outcome == "accepted" and outcome.created is False
    assert sorted(rig.persons()) == ["P-0009", "P-0010"]  # no duplicate


def test_a_person_deleted_in_pipedrive_is_created_again(rig: Rig) -> None:
    [made] = upsert(rig.connector, patient(4))
    rig.sandbox.store.delete("persons", int(made.crm_id))
    [again] = upsert(rig.connector, patient(4))
    assert again.created is True and again.crm_id != made.crm_id and len(rig.persons()) == 1


def test_a_mapping_field_missing_in_pipedrive_is_a_configuration_error(rig: Rig) -> None:
    with pytest.raises(ConfigurationError) as caught:
        rig.connector.write("persons", ID, [RecordWrite("P-1", {"name": "x", "shoe_size": 44})])
    assert caught.value.code == "FIELD_MISSING" and "persons.shoe_size" in caught.value.detail


# -- deals, links, archive --------------------------------------------------------------------------
def test_deals_go_to_the_telecrm_pipeline_stage_by_name_and_link_to_their_person(rig: Rig) -> None:
    [person] = upsert(rig.connector, patient(5))
    deal = RecordWrite("C-1", {"title": "Consultation C-1", "pipeline_id": "telecrm consultations",
                               "stage_id": "paid", "status": "won", "value": 120.0})  # fmt: skip
    [made] = rig.connector.write("deals", "telecrm_consultation_id", [deal])
    assert made.crm_id and person.crm_id
    [linked] = rig.connector.associate(
        "deals", "persons", [AssociationWrite("C-1", made.crm_id, person.crm_id)]
    )
    assert linked.outcome == "accepted"
    [stored] = rig.sandbox.records("deals")
    stage = rig.sandbox.store.stages[stored["stage_id"]]
    pipeline = rig.sandbox.store.pipelines[stored["pipeline_id"]]
    assert (stage["name"], pipeline["name"]) == ("paid", "telecrm consultations")
    assert stored["person_id"] == int(person.crm_id) and stored["status"] == "won"


def test_archive_deletes_and_reports_unknown_records_as_missing(rig: Rig) -> None:
    [made] = upsert(rig.connector, patient(6))
    outcomes = rig.connector.archive("persons", [RecordWrite("P-0006", {}, crm_id=made.crm_id),
                                                 RecordWrite("ghost", {})])  # fmt: skip
    assert [o.outcome for o in outcomes] == ["accepted", "missing"] and rig.persons() == {}


# -- limits and failures ----------------------------------------------------------------------------
def test_a_429_storm_is_rate_limited_with_retry_after(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(storm_requests=5))
    with pytest.raises(RateLimited) as caught:
        upsert(rig.connector, patient(1))
    assert caught.value.retry_after == 2.0 and not caught.value.daily
    assert rig.connector.stats.limit_refusals == 1 and rig.gate.observed[-1] == (429, "0")


def test_a_spent_daily_budget_is_rate_limited_daily() -> None:
    rig = Rig(daily_token_budget=15)
    with pytest.raises(RateLimited) as caught:
        rig.connector.provision(PROPERTIES[:1])  # 20 tokens for the field list: over budget
    assert caught.value.daily and caught.value.code == "DAILY_BUDGET"
    assert caught.value.retry_after and caught.value.retry_after > 3600


def test_server_errors_are_transient(rig: Rig) -> None:
    rig.sandbox.faults.set(Faults(error_rate=1.0))
    with pytest.raises(TransientFailure) as caught:
        upsert(rig.connector, patient(1))
    assert caught.value.status in (500, 502, 503) and caught.value.retryable


def test_a_wrong_api_token_is_auth_failed() -> None:
    rig = Rig(PipedriveConfig(base_url=BASE, api_token="wrong"))
    with pytest.raises(AuthFailed) as caught:
        rig.connector.provision(PROPERTIES)
    assert caught.value.code == "INVALID_TOKEN" and not caught.value.retryable


def oauth_config(refresh_token: str = "sandbox-refresh-token") -> PipedriveConfig:  # noqa: S107
    return PipedriveConfig(
        base_url=BASE, client_id="sandbox-client-id", client_secret="sandbox-client-secret",
        refresh_token=refresh_token, token_url=f"{BASE}/oauth/token",
    )  # fmt: skip


def test_oauth_refreshes_before_expiry_and_keeps_the_new_refresh_token() -> None:
    rig = Rig(oauth_config())
    rig.connector.provision(PROPERTIES)
    first_refresh = rig.connector.refresh_token
    assert first_refresh != "sandbox-refresh-token" and rig.connector.stats.token_calls == 1
    rig.clock.t += 3600  # the access token has expired
    upsert(rig.connector, patient(1))
    assert rig.connector.stats.token_calls == 2 and rig.connector.refresh_token != first_refresh
    assert all(r.headers.get("authorization", "").startswith("Bearer ") for r in rig.sent
               if not r.url.path.endswith("/oauth/token"))  # fmt: skip


def test_a_401_refreshes_once_then_is_auth_failed() -> None:
    rig = Rig(oauth_config())
    rig.connector.provision(PROPERTIES)
    rig.sandbox.access_tokens.clear()  # the company revoked the access token
    upsert(rig.connector, patient(1))  # refreshed once, then succeeded
    assert rig.connector.stats.token_calls == 2
    rig.sandbox.access_tokens.clear()
    rig.sandbox.refresh_tokens.clear()  # and now the app is uninstalled
    with pytest.raises(AuthFailed) as caught:
        upsert(rig.connector, patient(2))
    assert caught.value.code == "invalid_grant"


# -- provisioning -----------------------------------------------------------------------------------
def test_provision_twice_creates_then_finds_everything() -> None:
    rig = Rig()
    first = rig.connector.provision(PROPERTIES)
    assert {s.action for s in first} == {"created"}
    assert [s.target for s in first if s.target.startswith("deals.")] == [
        "deals.telecrm_consultation_id", "deals.pipeline.telecrm consultations",
        "deals.stage.submitted", "deals.stage.assigned", "deals.stage.accepted",
        "deals.stage.prescribed", "deals.stage.paid",
    ]  # fmt: skip
    second = rig.connector.provision(PROPERTIES)
    assert [s.target for s in second] == [s.target for s in first]
    assert {s.action for s in second} == {"exists"}
    assert len(rig.sandbox.store.pipelines) == 2  # Pipedrive's default and ours


def test_provision_reports_a_field_of_another_type_as_failed() -> None:
    rig = Rig()
    rig.connector.provision([CustomProperty("persons", "telecrm_churn_risk", "Churn", "string")])
    [step] = rig.connector.provision(PROPERTIES[2:3])
    assert step.action == "failed" and "varchar" in step.detail


def test_no_canary_value_reaches_an_exception() -> None:
    rig = Rig()
    rig.connector.provision(PROPERTIES)
    errors: list[Exception] = []
    for faults in (Faults(error_rate=1.0), Faults(storm_requests=1), Faults(drop_rate=1.0)):
        rig.sandbox.faults.set(faults)
        try:
            upsert(
                rig.connector, RecordWrite(f"P-{len(errors)}", {"name": CANARY, "email": CANARY})
            )
        except Exception as exc:
            errors.append(exc)
    assert len(errors) == 3
    assert all("canary" not in f"{e!r} {e}".lower() for e in errors)
