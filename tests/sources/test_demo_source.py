"""`telecrm demo --source database`: the platform's PostgreSQL, read by the database source,
gives the same profiles, stages and funnels as the same world sent as webhooks.

The webhook side is built here, on its own: the simulator's events, filtered by this file's list
of what the platform's tables record, posted as signed webhooks to a second runtime's store."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import func, select

from telecrm.api.app import create_app
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.profiles.tables import profiles
from telecrm.profiles.views import stats
from telecrm.settings import Settings
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.sources.demo_source import compare_with_webhooks, load_from_platform_database
from tests.sources.conftest import sql
from tests.support.builders import MASTER_KEY, SECRET, SignedClient

# Ends 2026-03-01, the day before the test clock (2026-03-02): customers still active and
# customers long gone (at_risk, churned) both occur.
WORLD = SimulationConfig(patients=300, months=6, seed=23, start=date(2025, 9, 1))

# Written out here rather than imported, so the check does not share the demo's definition.
TABLES_RECORD = {
    "patient.registered",
    "consultation.submitted",
    "consultation.assigned",
    "consultation.accepted",
    "prescription.approved",
    "order.paid",
    "subscription.started",
    "subscription.cancelled",
    "support_ticket.created",
}
PLAN_STATUSES_RECORDED = {"created", "completed"}


def _in_tables(event: dict[str, Any]) -> bool:
    if not (event.get("patient") or {}).get("id"):
        return False
    if event["type"] == "treatment_plan.updated":
        return event["data"]["status"] in PLAN_STATUSES_RECORDED
    return event["type"] in TABLES_RECORD


def _numbers(rt: Runtime) -> tuple[int, dict[str, int], list[tuple[str, int, int]]]:
    live = profiles.c.merged_into.is_(None) & profiles.c.deleted.is_(False)
    with rt.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(profiles).where(live)).scalar_one()
        s = stats(conn)
    return (
        int(count),
        s.patients_by_stage,
        [(f.funnel.name, f.entered, f.converted) for f in s.funnels],
    )


def _through_webhooks(tmp_path: Path, clock: FrozenClock) -> Runtime:
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'webhooks.db'}",
        master_key=SecretStr(MASTER_KEY),
        webhook_secrets=[SecretStr(SECRET)],
        embedded_worker=False,
    )
    ref = bootstrap(settings, clock=clock)
    wire = [e for e in generate(WORLD) if _in_tables(e)]
    with TestClient(create_app(ref, embedded_worker=False)) as client:
        signed = SignedClient(client, clock.now())
        for i in range(0, len(wire), 250):
            response = signed.post({"events": wire[i : i + 250]})
            assert response.status_code < 300, response.json()
    ref.worker().drain()
    ref.sweep().run()
    return ref


def test_the_database_source_gives_the_same_profiles_stages_and_funnels_as_webhooks(
    runtime: Runtime, platform_url: str, clock: FrozenClock, tmp_path: Path
) -> None:
    quiet = Console(file=io.StringIO(), width=200)
    load = load_from_platform_database(runtime, WORLD, quiet, platform_url)
    assert not load.report.stopped
    runtime.worker().drain()
    runtime.sweep().run()
    from_database = _numbers(runtime)
    through_webhooks = _numbers(_through_webhooks(tmp_path / "webhooks", clock))

    (patients,) = sql(platform_url, "SELECT count(*) FROM patients")[0]
    assert from_database[0] == through_webhooks[0] == patients > 0
    assert from_database[1] == through_webhooks[1]
    assert from_database[2] == through_webhooks[2]
    reached = [stage for stage, n in from_database[1].items() if n]
    assert {"churned", "active_customer"} <= set(reached) and len(reached) >= 4
    # And the demo's own side-by-side check says the same.
    assert compare_with_webhooks(runtime, WORLD, quiet, tmp_path / "demo-ref" / "ref.db")
