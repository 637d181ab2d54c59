"""A worker killed mid-batch, and workers racing: the CRM still ends equal to the source, once each.

The killed worker is a real process (`telecrm sync run`) talking to a sandbox on a real socket;
SIGKILL gives it no chance to clean up. Its leases expire and the next worker finishes the job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.sync.tables import sync_dirty
from tests.support.builders import MASTER_KEY, customer_journey, registration
from tests.support.live_server import live_server
from tests.sync.harness import hubspot_harness

PATIENTS = 450


def population(now: datetime) -> list[dict]:
    start = now - timedelta(days=10)
    events = [registration(f"pat_{i:04d}", start) for i in range(PATIENTS - 50)]
    events += [e for i in range(50) for e in customer_journey(f"cus_{i:04d}", start)]
    return events


class HoldAfter:
    """An ASGI wrapper that lets the first `allowed` contact batches through, then holds the rest.

    A held request waits until `release()`, then gets a 503 without reaching the CRM: the worker is
    parked on a request the CRM never saw, so the kill lands mid-backfill however busy the machine.
    """

    def __init__(self, app, allowed: int) -> None:
        self.app, self.allowed = app, allowed
        self.seen = 0
        self.held = threading.Semaphore(0)
        self._released = threading.Event()
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/contacts/batch/upsert"):
            with self._lock:
                self.seen += 1
                hold = self.seen > self.allowed
            if hold:
                self.held.release()
                while not self._released.is_set():
                    await asyncio.sleep(0.01)
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)

    def release(self) -> None:
        self._released.set()


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    runtime: Runtime, clock: FrozenClock, tmp_path
) -> None:
    clock.set(datetime.now(UTC))  # the killed process runs on the real clock
    hub = hubspot_harness(runtime, clock)
    hub.provision()
    hub.feed(population(clock.now()))
    gate = HoldAfter(hub.sandbox.app, allowed=2)
    with live_server(gate) as url:
        env = {
            **os.environ,
            "TELECRM_DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
            "TELECRM_MASTER_KEY": MASTER_KEY,
            "TELECRM_HOME": str(tmp_path),
            "TELECRM_DESTINATIONS": "hubspot",
            "TELECRM_HUBSPOT_URL": url,
            "TELECRM_HUBSPOT_TOKEN": "pat-na1-sandbox",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "telecrm.cli", "sync", "run", "hubspot", "--lease", "30"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Waiting on another process, not a timer: two batches written, the third parked.
            assert gate.held.acquire(timeout=60), "the worker never reached its third batch"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            gate.release()
            if proc.poll() is None:
                proc.kill()
    written_before = len(hub.sandbox.records("contacts"))
    assert 0 < written_before < PATIENTS  # killed in the middle, with some records in the CRM
    assert hub.sync().patients == 0  # the dead worker's leases still hold
    clock.advance(timedelta(seconds=90))  # ...until they expire (30 s after the claim)
    hub.sync()
    agreement = hub.agreement()
    assert agreement.ok, agreement.summary()
    assert len(hub.sandbox.records("contacts")) == PATIENTS
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one() == 0


def test_two_workers_racing_share_the_work_and_write_each_record_once(
    runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    hub = hubspot_harness(runtime, clock)
    hub.provision()
    hub.feed(population(clock.now()))
    workers = [hub.worker(), hub.worker()]
    for w in workers:
        w._per_round = 50
    reports = []
    barrier = threading.Barrier(2)

    def work(w) -> None:
        barrier.wait()
        reports.append(w.drain())

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(r.patients for r in reports) == PATIENTS  # no patient claimed twice
    assert all(r.patients > 0 for r in reports) or runtime.engine.dialect.name == "sqlite"
    agreement = hub.agreement()
    assert agreement.ok and not agreement.duplicated, agreement.summary()
    expected_records = PATIENTS + 50  # contacts and deals
    assert sum(r.written for r in reports) == expected_records
