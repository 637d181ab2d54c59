"""PHI discipline on the way out: canary health values never reach a CRM without a BAA, nor a log
line or a dead letter; identifying values reach only the properties the mapping names."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.domain.fields import FIELDS, phi_fields
from telecrm.domain.profile import Profile
from telecrm.observability.logs import configure_logging
from telecrm.sandbox.faults import Faults, SandboxTransport
from telecrm.sync.mapping import load_mapping
from telecrm.sync.planner import desired_records
from telecrm.sync.tables import sync_dead_letters
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_MEDICATION,
    customer_journey,
    event,
    registration,
)
from tests.sync.harness import SyncHarness, hubspot_harness, salesforce_harness

HEALTH_CANARIES = (CANARY_CONDITION, CANARY_MEDICATION)


class Recording(httpx.BaseTransport):
    """Keeps every request body the connector sent, then forwards it to the sandbox."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.bodies = inner, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read().decode("utf-8", "replace") + str(request.url))
        return self.inner.handle_request(request)


def recorded(h: SyncHarness) -> Recording:
    recording = Recording(SandboxTransport(h.sandbox.app, base_url=h.base_url))
    h.client = lambda: httpx.Client(transport=recording, base_url=h.base_url)  # type: ignore[method-assign]
    return recording


def plant(h: SyncHarness, now: datetime) -> None:
    start = now - timedelta(days=8)
    journey = customer_journey("pat_canary", start)
    journey[0] = registration(
        "pat_canary", start, data={"email": CANARY_EMAIL, "conditions": [CANARY_CONDITION]}
    )
    h.feed(
        [
            *journey,
            event(
                "consultation.submitted",
                "pat_canary",
                start + timedelta(days=5),
                {"consultation_id": "c2", "medications": [CANARY_MEDICATION]},
            ),
        ]
    )


@pytest.mark.parametrize(
    "make", [hubspot_harness, salesforce_harness], ids=["hubspot", "salesforce"]
)
def test_no_health_value_reaches_a_crm_without_a_baa(
    runtime: Runtime, clock: FrozenClock, make: Any
) -> None:
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    h = make(runtime, clock)
    h.provision()
    sent = recorded(h)
    plant(h, clock.now())
    h.sandbox.faults.set(Faults(error_rate=0.3, seed=2))
    for _ in range(10):
        h.sync()
        clock.advance(timedelta(minutes=5))
    assert h.agreement().ok
    held = [h.records(o.crm_object) for o in h.mapping.objects]
    everything = "".join(sent.bodies) + repr(held)
    assert CANARY_EMAIL in everything  # contact details are PII the mapping sends on purpose
    for canary in HEALTH_CANARIES:
        assert canary not in everything


def test_refusals_and_faults_log_no_identifying_value(runtime: Runtime, clock: FrozenClock) -> None:
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        text = (
            Path(load_mapping("hubspot").path)
            .read_text()
            .replace(
                "      email: {field: email}",
                "      email: {field: email}\n      not_a_property: {field: first_name}",
            )
        )
        h = hubspot_harness(runtime, clock, load_mapping("bad.yaml", text=text))
        h.provision()
        plant(h, clock.now())
        h.sandbox.faults.set(Faults(error_rate=0.5, storm_requests=2, seed=3))
        for _ in range(6):
            h.sync()
            clock.advance(timedelta(minutes=5))
    finally:
        configure_logging("WARNING")  # back to stderr: later log lines must not land on stdout
    with runtime.engine.connect() as conn:
        letters = [repr(tuple(r)) for r in conn.execute(select(sync_dead_letters))]
    assert letters  # the unknown property was refused, record by record
    for text_out in (stream.getvalue(), *letters):
        for canary in (CANARY_EMAIL, *HEALTH_CANARIES):
            assert canary not in text_out


values = st.text(alphabet="abcdefghij", min_size=1, max_size=8)
DEFAULTS = [load_mapping("hubspot"), load_mapping("salesforce")]


@settings(max_examples=80, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(sorted(FIELDS)), values, max_size=20),
    rank=st.integers(min_value=-1, max_value=6),
)
def test_default_mappings_never_plan_a_phi_field_whatever_the_profile_holds(
    fields: dict[str, Any], rank: int
) -> None:
    p = Profile("P-1", values=dict(fields), max_rank=rank)
    for mapping in DEFAULTS:
        for record in desired_records(p, mapping):
            assert not set(record.fields) & phi_fields()
            specs = mapping.object(record.object).properties
            for name in record.properties:
                source = specs[name].field
                assert source is None or source not in phi_fields()
