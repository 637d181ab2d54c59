"""The connector conformance suite: the same tests, unchanged, for every CRM telecrm syncs to,
each against its sandbox over HTTP, on SQLite and PostgreSQL (tests/sync/conformance.py lists
the CRMs). What a user of any destination can count on:

- a backfill ends with the CRM holding exactly what the source says, each record once, and a
  second run costs no call at all;
- 5xx answers, cut connections and 429 storms change nothing in the end: agreement, no duplicate,
  nothing left in dead letters or queued;
- expired access tokens are renewed, and no record is lost to an authorization failure;
- no health value ever reaches a destination without a BAA, in any request;
- a worker killed in the middle of a batch loses and duplicates nothing: another one finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import delete, func, select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.sandbox.faults import Faults, SandboxTransport
from telecrm.sync.tables import rate_budgets, sync_dead_letters, sync_dirty
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_MEDICATION,
    MASTER_KEY,
    event,
    registration,
)
from tests.support.live_server import live_server
from tests.sync.conformance import KINDS, CrmKind
from tests.sync.conftest import SIMULATED
from tests.sync.harness import SyncHarness

# The first 60 simulated patients: every object kind, a few rounds' worth of batches.
PATIENTS = sorted({e["patient"]["id"] for e in SIMULATED})[:60]
POPULATION = [e for e in SIMULATED if e["patient"]["id"] in set(PATIENTS)]


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> CrmKind:
    return KINDS[request.param]


@pytest.fixture
def crm(kind: CrmKind, runtime: Runtime, later: FrozenClock) -> SyncHarness:
    h = kind.make(runtime, later)
    h.provision()
    return h


def _left(h: SyncHarness) -> tuple[int, int]:
    with h.runtime.engine.connect() as conn:
        letters = conn.execute(select(func.count()).select_from(sync_dead_letters)).scalar_one()
        dirty = conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one()
    return letters, dirty


def test_a_backfill_agrees_and_a_second_run_costs_nothing(crm: SyncHarness) -> None:
    crm.feed(POPULATION)
    first = crm.sync()
    agreement = crm.agreement()
    assert agreement.ok, agreement.summary()
    assert not agreement.duplicated
    assert first.written == agreement.expected > len(PATIENTS)
    crm.feed([])
    assert crm.sync().calls == 0
    assert _left(crm) == (0, 0)


def test_faults_and_limit_storms_end_in_agreement_without_duplicates(crm: SyncHarness) -> None:
    crm.feed(POPULATION)
    crm.sandbox.faults.set(Faults(error_rate=0.2, drop_rate=0.1, storm_requests=3, seed=7))
    for _ in range(20):  # deferred patients come back after their backoff
        crm.sync()
        crm.clock.advance(timedelta(minutes=5))
    agreement = crm.agreement()
    assert agreement.ok, agreement.summary()
    assert not agreement.duplicated
    assert _left(crm) == (0, 0)


def test_expired_tokens_are_renewed_and_no_record_is_lost(kind: CrmKind, crm: SyncHarness) -> None:
    worker = crm.worker()
    crm.feed([registration("P-1", crm.clock.now() - timedelta(days=1))])
    assert worker.drain().written >= 1
    kind.expire_tokens(crm)
    crm.feed([registration("P-2", crm.clock.now() - timedelta(minutes=5))])
    assert worker.drain().written >= 1
    assert crm.agreement().ok
    assert _left(crm) == (0, 0)


@pytest.fixture(params=sorted(k for k in KINDS if not k.endswith("-baa")))
def crm_without_baa(
    request: pytest.FixtureRequest, runtime: Runtime, later: FrozenClock
) -> SyncHarness:
    h = KINDS[request.param].make(runtime, later)
    h.provision()
    return h


def test_no_health_value_leaves_for_a_destination_without_a_baa(
    crm_without_baa: SyncHarness,
) -> None:
    crm = crm_without_baa
    assert crm.mapping.baa is False
    sent: list[bytes] = []

    class Recording(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = SandboxTransport(crm.sandbox.app, base_url=crm.base_url)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.url.raw_path + request.read())
            return self.inner.handle_request(request)

    crm.client = lambda: httpx.Client(transport=Recording(), base_url=crm.base_url)  # type: ignore[method-assign]
    start = crm.clock.now() - timedelta(days=9)
    crm.feed(
        [
            registration("pat_canary", start, data={"conditions": [CANARY_CONDITION]}),
            event(
                "consultation.submitted",
                "pat_canary",
                start + timedelta(days=1),
                {"consultation_id": "c1", "medications": [CANARY_MEDICATION]},
            ),
        ]
    )
    crm.sync()
    assert crm.agreement().ok
    assert sent
    for canary in (CANARY_CONDITION, CANARY_MEDICATION):
        for variant in (canary, canary.replace(" ", "+"), canary.replace(" ", "%20")):
            assert not any(variant.lower().encode() in body.lower() for body in sent), canary


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    kind: CrmKind, runtime: Runtime, clock: FrozenClock, tmp_path
) -> None:
    clock.set(datetime.now(UTC))  # the killed process runs on the real clock
    crm = kind.make(runtime, clock)
    crm.provision()
    start = clock.now() - timedelta(days=10)
    crm.feed([registration(f"pat_{i:04d}", start) for i in range(450)])
    crm.sandbox.faults.set(Faults(latency_seconds=0.4))  # a slow CRM: batches take a while
    with runtime.engine.begin() as conn:
        # Provisioning spent budget on the test's frozen clock; the process runs on the real one.
        conn.execute(delete(rate_budgets))
    with live_server(crm.sandbox.app) as url:
        env = {
            **os.environ,
            **kind.env(url),
            "TELECRM_DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
            "TELECRM_MASTER_KEY": MASTER_KEY,
            "TELECRM_HOME": str(tmp_path),
            "TELECRM_DESTINATIONS": crm.mapping.path,  # the very file: a destination has variants
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "telecrm.cli",
                "sync",
                "run",
                crm.mapping.destination,
                "--lease",
                "30",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while kind.writes(crm.sandbox) < 1:  # waiting on another process, not a timer
                assert proc.poll() is None, "the worker finished before it could be killed"
                assert time.monotonic() < deadline, "the worker never reached the CRM"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    crm.sandbox.faults.set(Faults())
    clock.advance(timedelta(seconds=90))  # the dead worker's leases expire (30 s after the claim)
    crm.sync()
    agreement = crm.agreement()
    assert agreement.ok, agreement.summary()
    assert not agreement.duplicated
    assert _left(crm) == (0, 0)
