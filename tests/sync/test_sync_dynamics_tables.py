"""Dynamics 365's custom tables end to end: provisioned through the metadata API, filled by a
backfill with their lookups to contact, and kept from a tenant without a BAA when they carry PHI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.sandbox.faults import SandboxTransport
from telecrm.sync.credentials import CredentialStore
from telecrm.sync.destinations import open_connector
from telecrm.sync.plan import dry_run
from telecrm.sync.planner import relationship_id
from telecrm.sync.rate_gate import clock_sleep
from telecrm.sync.tables import sync_records
from tests.support.builders import CANARY_CONDITION, CANARY_MEDICATION, event, registration
from tests.sync.conftest import SIMULATED
from tests.sync.harness import SyncHarness, dynamics_harness

PATIENTS = sorted({e["patient"]["id"] for e in SIMULATED})[:40]
POPULATION = [e for e in SIMULATED if e["patient"]["id"] in set(PATIENTS)]
CUSTOM_SETS = (
    "telecrm_consultations",
    "telecrm_subscriptions",
    "telecrm_treatmentplans",
    "telecrm_prescriptions",
    "telecrm_providerrelationships",
)
CANARY_OUTCOME = "Canaryoutcome remission"
CANARY_PROVIDER = "prov_canary_9d1e"


def provision(h: SyncHarness) -> list[Any]:
    connector, _ = open_connector(
        h.mapping,
        h.runtime.engine,
        h.clock,
        clock_sleep(h.clock),
        client=h.client(),
        env=h.env,
        credentials=CredentialStore(h.runtime.engine, h.runtime.cipher),
    )
    tables = [t.to_custom_table() for t in h.mapping.custom_tables]
    return connector.provision(  # type: ignore[attr-defined, no-any-return]
        [c.to_custom_property() for c in h.mapping.custom_properties], tables
    )


def metadata_posts(h: SyncHarness) -> int:
    return sum(
        n
        for k, n in h.sandbox.stats.requests.items()
        if k.startswith("POST") and "Definitions" in k
    )


def test_provisioning_twice_creates_tables_lookups_columns_and_keys_once(
    runtime: Runtime, later: FrozenClock
) -> None:
    h = dynamics_harness(runtime, later, "dynamics-baa")
    first = provision(h)
    assert {s.action for s in first} == {"created"}, first
    assert [s.target for s in first[:5]] == [
        "table(telecrm_consultation)",
        "table(telecrm_subscription)",
        "table(telecrm_treatmentplan)",
        "table(telecrm_prescription)",
        "table(telecrm_providerrelationship)",
    ]
    assert "telecrm_prescriptions.lookup(telecrm_contactid)" in [s.target for s in first]
    posts = metadata_posts(h)
    second = provision(h)
    assert [(s.target, s.action) for s in second] == [(s.target, "exists") for s in first]
    assert metadata_posts(h) == posts  # the second run created nothing
    rel = h.sandbox.store.relationships["telecrm_contact_telecrm_prescription"]
    assert (rel.referenced, rel.referencing, rel.navigation) == (
        "contact",
        "telecrm_prescription",
        "telecrm_contactid",
    )


def test_a_baa_backfill_fills_all_five_tables_with_their_lookups_and_a_rerun_costs_nothing(
    runtime: Runtime, later: FrozenClock
) -> None:
    h = dynamics_harness(runtime, later, "dynamics-baa")
    h.provision()
    h.feed(POPULATION)
    planned = dry_run(runtime.engine, runtime.cipher(), h.mapping, everyone=True)
    report = h.sync()
    agreement = h.agreement()
    assert agreement.ok, agreement.summary()
    assert not agreement.duplicated
    assert report.calls == planned.calls(h.mapping)  # the estimate is the lower bound, met
    contacts = {r["contactid"]: r["telecrm_patientid"] for r in h.records("contacts")}
    for entity_set in CUSTOM_SETS:
        rows = h.records(entity_set)
        assert rows, entity_set
        for row in rows:  # every row hangs off its patient's contact
            assert row["_telecrm_contactid_value"] in contacts, entity_set
    by_plan = {r["telecrm_externalid"]: r for r in h.records("telecrm_treatmentplans")}
    assert {r.get("telecrm_status") for r in by_plan.values()} - {None} <= {
        "created",
        "updated",
        "completed",
        "discontinued",
    }
    h.feed([])
    assert h.sync().calls == 0


def test_a_provider_relationship_is_keyed_by_a_digest_never_by_the_provider_id(
    runtime: Runtime, later: FrozenClock
) -> None:
    h = dynamics_harness(runtime, later, "dynamics-baa")
    h.provision()
    start = later.now() - timedelta(days=5)
    h.feed(
        [
            registration("pat_rel", start),
            event("consultation.submitted", "pat_rel", start, {"consultation_id": "c1"}),
            event(
                "consultation.assigned",
                "pat_rel",
                start + timedelta(hours=1),
                {"consultation_id": "c1", "provider_id": CANARY_PROVIDER},
            ),
        ]
    )
    h.sync()
    [row] = h.records("telecrm_providerrelationships")
    key = relationship_id("pat_rel", CANARY_PROVIDER)
    assert row["telecrm_externalid"] == key and CANARY_PROVIDER not in key
    assert row["telecrm_providerid"] == CANARY_PROVIDER  # the value itself, under the BAA
    with runtime.engine.connect() as conn:
        keys = [k for (k,) in conn.execute(select(sync_records.c.record_key))]
    assert key in keys and not any(CANARY_PROVIDER in k for k in keys)
    assert relationship_id("pat_rel", CANARY_PROVIDER) == key  # stable across runs


def _plant_health_canaries(h: SyncHarness, later: FrozenClock) -> None:
    start = later.now() - timedelta(days=9)
    h.feed(
        [
            registration("pat_canary", start, data={"conditions": [CANARY_CONDITION]}),
            event(
                "consultation.submitted",
                "pat_canary",
                start + timedelta(days=1),
                {"consultation_id": "c1"},
            ),
            event(
                "consultation.accepted",
                "pat_canary",
                start + timedelta(days=1, hours=2),
                {"consultation_id": "c1", "provider_id": CANARY_PROVIDER},
            ),
            event(
                "prescription.approved",
                "pat_canary",
                start + timedelta(days=2),
                {
                    "prescription_id": "rx1",
                    "consultation_id": "c1",
                    "medication": CANARY_MEDICATION,
                },
            ),
            event(
                "treatment_plan.updated",
                "pat_canary",
                start + timedelta(days=2),
                {"treatment_plan_id": "tp1", "status": "created", "outcome": CANARY_OUTCOME},
            ),
            event(
                "subscription.started",
                "pat_canary",
                start + timedelta(days=3),
                {"subscription_id": "sub1", "tier": "standard", "amount": 99.0},
            ),
        ]
    )


def _recording(h: SyncHarness) -> list[bytes]:
    sent: list[bytes] = []

    class Recording(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = SandboxTransport(h.sandbox.app, base_url=h.base_url)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.url.raw_path + request.read())
            return self.inner.handle_request(request)

    h.client = lambda: httpx.Client(transport=Recording(), base_url=h.base_url)  # type: ignore[method-assign]
    return sent


def _carries(sent: list[bytes], canary: str) -> bool:
    variants = (canary, canary.replace(" ", "+"), canary.replace(" ", "%20"))
    return any(v.lower().encode() in body.lower() for body in sent for v in variants)


def test_no_health_value_of_the_custom_tables_reaches_dynamics_without_a_baa(
    runtime: Runtime, later: FrozenClock
) -> None:
    h = dynamics_harness(runtime, later, "dynamics")
    assert h.mapping.baa is False
    sent = _recording(h)
    h.provision()
    _plant_health_canaries(h, later)
    h.sync()
    assert h.agreement().ok
    assert h.records("telecrm_subscriptions") and h.records("telecrm_consultations")
    for canary in (CANARY_CONDITION, CANARY_MEDICATION, CANARY_OUTCOME, CANARY_PROVIDER):
        assert not _carries(sent, canary), canary
    assert not any(b"telecrm_prescriptions" in body for body in sent)


def test_under_the_baa_the_same_values_do_arrive(runtime: Runtime, later: FrozenClock) -> None:
    """The recording above sees PHI when it is sent: the BAA mapping sends it."""
    h = dynamics_harness(runtime, later, "dynamics-baa")
    sent = _recording(h)
    h.provision()
    _plant_health_canaries(h, later)
    h.sync()
    assert h.agreement().ok
    for canary in (CANARY_CONDITION, CANARY_MEDICATION, CANARY_OUTCOME, CANARY_PROVIDER):
        assert _carries(sent, canary), canary
    [plan] = h.records("telecrm_treatmentplans")
    assert plan["telecrm_outcome"] == CANARY_OUTCOME
