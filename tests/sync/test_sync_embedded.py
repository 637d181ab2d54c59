"""`telecrm serve` keeps configured CRMs in sync by itself: one outbox thread per destination."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest

from telecrm.bootstrap import EmbeddedWorker, Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.sandbox.hubspot import HubSpotSandboxConfig, create_hubspot_sandbox
from telecrm.sync.mapping import load_mapping
from tests.support.builders import customer_journey
from tests.support.live_server import live_server
from tests.sync.harness import hubspot_harness


def test_the_embedded_worker_syncs_new_patients_to_each_destination(
    runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = create_hubspot_sandbox(HubSpotSandboxConfig())
    with live_server(sandbox.app) as url:
        monkeypatch.setenv("TELECRM_HUBSPOT_URL", url)
        monkeypatch.setenv("TELECRM_HUBSPOT_TOKEN", "pat-na1-sandbox")
        h = hubspot_harness(runtime, clock)
        h.env["TELECRM_HUBSPOT_URL"] = url
        h.client = lambda: httpx.Client()  # type: ignore[method-assign]
        h.provision()
        runtime.use_mappings([load_mapping("hubspot")])
        worker = EmbeddedWorker(runtime, sweep_every_seconds=3600)
        worker.start()
        try:
            start = clock.now() - timedelta(days=6)
            runtime.intake().accept(
                [parse_event(e, now=clock.now()) for e in customer_journey("P-1", start)],
                source="webhook",
                actor="test",
            )
            runtime.work_available.set()
            deadline = time.monotonic() + 30
            while len(sandbox.records("deals")) < 1:  # waiting on worker threads, not a timer
                assert time.monotonic() < deadline, "the embedded worker never synced"
                time.sleep(0.05)
        finally:
            worker.stop()
            worker.join(timeout=10)
    (contact,) = sandbox.records("contacts")
    assert contact["properties"]["telecrm_patient_id"] == "P-1"
    from prometheus_client import generate_latest

    exposed = generate_latest(runtime.metrics.registry).decode()
    assert 'telecrm_sync_api_calls_total{destination="hubspot"}' in exposed
