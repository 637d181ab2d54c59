"""The demo's CRM part: both sandboxes on loopback, provisioned, backfilled under faults, checked.

Runs HubSpot and Salesforce sandboxes on free ports with their documented limits, provisions the
custom properties, backfills every patient through the same worker `telecrm sync run` uses (with
HubSpot answering 429 storms and 5xx on purpose), then shows what it cost against the lower bound,
that a second run costs nothing, that a refused PHI mapping never loads, and the agreement check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import to_micros
from telecrm.profiles.tables import profiles
from telecrm.sandbox.faults import Faults
from telecrm.sandbox.hubspot import HubSpotSandboxConfig, create_hubspot_sandbox
from telecrm.sandbox.salesforce import SalesforceSandboxConfig, create_salesforce_sandbox
from telecrm.store.engine import read_only
from telecrm.sync.agreement import check_agreement
from telecrm.sync.destinations import open_connector, url_override_name
from telecrm.sync.mapping import Mapping, MappingError, load_mapping
from telecrm.sync.plan import estimate_calls
from telecrm.sync.planner import mark_dirty
from telecrm.sync.worker import SyncReport, SyncWorker

HUBSPOT_FAULTS = Faults(error_rate=0.05, storm_requests=3, seed=1)  # shown, then absorbed


@contextmanager
def serve_on_loopback(
    app: Any, port: int | None = None, *, lifespan: Literal["on", "off"] = "off"
) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port unless given) for the length of the block."""
    import socket

    import uvicorn

    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan=lifespan,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _records(
    base_url: str, kind: str, view: str = "records"
) -> Callable[[str], list[dict[str, Any]]]:
    def fetch(crm_object: str) -> list[dict[str, Any]]:
        body: Any = httpx.get(f"{base_url}/_sandbox/{view}/{crm_object}", timeout=60).json()
        if isinstance(
            body, dict
        ):  # HubSpot/Pipedrive {"results": [...]}, Dataverse {"value": [...]}
            body = body.get("results", body.get("value", []))
        return list(body)

    return fetch


PIPEDRIVE_PATIENTS = 300  # no batch API: a call per record, ~10 requests/s (see the note printed)
PIPEDRIVE_TIME_SCALE = 10.0


def _pipedrive_demo_mapping() -> Mapping:
    """Pipedrive's mapping with its request window shortened 10x for the demo, said on screen."""
    m = load_mapping("pipedrive")
    update: dict[str, Any] = {
        "per_seconds": m.limits.per_seconds / PIPEDRIVE_TIME_SCALE,
        "daily": None,
    }
    if m.limits.search is not None:  # the searches' own window, shortened the same
        search = m.limits.search
        update["search"] = search.model_copy(
            update={"per_seconds": search.per_seconds / PIPEDRIVE_TIME_SCALE}
        )
    limits = m.limits.model_copy(update=update)
    return m.model_copy(update={"limits": limits})


def demo_crm_sync(rt: Runtime, console: Console) -> bool:
    """Returns whether every destination agreed with the source."""
    from telecrm.sandbox.dynamics import create_dynamics_sandbox
    from telecrm.sandbox.dynamics_limits import DynamicsSandboxConfig
    from telecrm.sandbox.pipedrive import PipedriveSandboxConfig, create_pipedrive_sandbox

    mappings = [
        load_mapping("hubspot"),
        load_mapping("salesforce"),
        _pipedrive_demo_mapping(),
        load_mapping("dynamics-baa"),  # said on screen: configured as covered by Microsoft's BAA
    ]
    sandboxes: list[Any] = [
        create_hubspot_sandbox(HubSpotSandboxConfig()),
        create_salesforce_sandbox(SalesforceSandboxConfig()),
        # Its window shortened like the mapping's: the same limits, 10x faster (said on screen).
        create_pipedrive_sandbox(PipedriveSandboxConfig(window_seconds=2.0 / PIPEDRIVE_TIME_SCALE)),
        create_dynamics_sandbox(DynamicsSandboxConfig(org_url=mappings[3].connection["org_url"])),
    ]
    ok = True
    with (
        serve_on_loopback(sandboxes[0].app) as hs_url,
        serve_on_loopback(sandboxes[1].app) as sf_url,
        serve_on_loopback(sandboxes[2].app) as pd_url,
        serve_on_loopback(sandboxes[3].app) as dy_url,
    ):
        urls = [hs_url, sf_url, pd_url, dy_url]
        env = {
            "TELECRM_HUBSPOT_TOKEN": "pat-na1-sandbox",
            "TELECRM_SALESFORCE_CLIENT_ID": "sandbox-client-id",
            "TELECRM_SALESFORCE_CLIENT_SECRET": "sandbox-client-secret",
            "TELECRM_PIPEDRIVE_TOKEN": "pd-sandbox-api-token",
            "TELECRM_DYNAMICS_TENANT_ID": sandboxes[3].config.tenant_id,
            "TELECRM_DYNAMICS_CLIENT_ID": "sandbox-client-id",
            "TELECRM_DYNAMICS_CLIENT_SECRET": "sandbox-client-secret",
        }
        for m, url in zip(mappings, urls, strict=True):
            env[url_override_name(m)] = url
        rt.use_mappings(mappings)
        with rt.engine.begin() as conn:
            keys = [
                k
                for (k,) in conn.execute(
                    select(profiles.c.patient_key)
                    .where(profiles.c.patient_id.is_not(None))
                    .order_by(profiles.c.patient_key)
                )
            ]
            now_us = to_micros(rt.clock.now())
            mark_dirty(
                conn, [m.destination for m in mappings if m.connector != "pipedrive"], keys, now_us
            )
            mark_dirty(conn, ["pipedrive"], keys[:PIPEDRIVE_PATIENTS], now_us)
        table = Table(
            "CRM",
            "patients",
            "records",
            "calls",
            "lower bound",
            "refused",
            "5xx",
            "re-run",
            "agreement",
            title="CRM sync (sandboxes with the documented limits)",
        )
        for m, url, sandbox in zip(mappings, urls, sandboxes, strict=True):
            subset = keys[:PIPEDRIVE_PATIENTS] if m.connector == "pipedrive" else keys
            connector, gate = open_connector(m, rt.engine, rt.clock, time.sleep, env=env)
            properties = [c.to_custom_property() for c in m.custom_properties]
            tables = [t.to_custom_table() for t in m.custom_tables]  # Dataverse's custom tables
            connector.provision(properties, **({"tables": tables} if tables else {}))  # type: ignore[attr-defined]
            provision_calls = connector.stats.calls
            if m.connector == "hubspot":
                sandbox.faults.set(HUBSPOT_FAULTS)
            worker = SyncWorker(rt.engine, m, connector, rt.cipher, rt.clock, time.sleep, gate=gate)
            report = _drain(worker, len(subset), console)
            if m.connector == "hubspot":
                sandbox.faults.set(Faults())
            for _ in range(5):  # patients deferred by the injected faults come back after backoff
                if not _due_later(worker, rt):
                    break
                time.sleep(1.0)
                report.add(worker.drain())
            with rt.engine.begin() as conn:
                mark_dirty(conn, [m.destination], subset, to_micros(rt.clock.now()))
            rerun = worker.drain()
            records = (
                _records(url, "pipedrive", "flat")
                if m.connector == "pipedrive"
                else _records(url, m.connector)
            )
            agreement = check_agreement(rt.engine, rt.cipher(), m, records, patients=set(subset))
            ok = ok and agreement.ok
            calls = connector.stats.calls - provision_calls - rerun.calls
            table.add_row(
                m.destination,
                f"{len(subset):,}",
                f"{report.written:,}",
                f"{calls:,}",
                f"{_lower_bound(rt, m):,}",
                str(connector.stats.limit_refusals),
                str(getattr(sandbox.stats, "errors_sent", 0)),
                str(rerun.calls),
                "[green]ok[/]" if agreement.ok else f"[red]{agreement.summary()}[/]",
            )
            connector.close()
    console.print(table)
    console.print(
        "lower bound = records ÷ the API's batch maximum per object (HubSpot 100, Salesforce "
        "200, Dynamics 1,000 per $batch, Pipedrive 1: it has no batch API and no upsert, so a "
        "search per new person or deal too; its activities and notes carry a marker instead), plus the association calls where links are separate; every "
        "record is upserted by its external id, so retries after 429s, 5xx and cut connections "
        f"never duplicate one. Pipedrive: the first {PIPEDRIVE_PATIENTS} patients, its request "
        f"window shortened {PIPEDRIVE_TIME_SCALE:g}x (at its real ~10 requests/s a backfill of "
        "every patient takes a while; docs/benchmarks.md measures it)",
        highlight=False,
    )
    console.print(
        "Dynamics configured as covered by a BAA (mappings/dynamics-baa.yaml): its five custom "
        "tables (treatment plans, prescriptions, consultations, subscriptions, provider "
        "relationships) were created through the metadata API and filled, each row linked to "
        "its contact; without a BAA (dynamics.yaml) only consultations and subscriptions go",
        highlight=False,
    )
    try:
        load_mapping("my-hubspot.yaml", text=_phi_mapping_text())
    except MappingError as exc:
        console.print(
            f"a mapping that sends PHI to a destination without a BAA is [red]refused[/]: {exc}",
            highlight=False,
        )
    return ok


def _phi_mapping_text() -> str:
    from telecrm.sync.mapping import BUILTIN_DIR

    text = (BUILTIN_DIR / "hubspot.yaml").read_text()
    return text.replace(
        "      telecrm_churn_risk: {from: churn_risk}",
        "      telecrm_churn_risk: {from: churn_risk}\n      telecrm_conditions: {field: conditions, transform: join}",
    )


def _due_later(worker: SyncWorker, rt: Runtime) -> bool:
    from telecrm.sync.tables import sync_dirty

    with read_only(rt.engine).connect() as conn:
        return (
            conn.execute(
                select(sync_dirty.c.patient_key)
                .where(sync_dirty.c.destination == worker.destination)
                .limit(1)
            ).first()
            is not None
        )


def _lower_bound(rt: Runtime, m: Mapping) -> int:
    """The fewest calls that write what the CRM holds now, all of it new (a backfill)."""
    from sqlalchemy import func

    from telecrm.sync.tables import sync_records

    with read_only(rt.engine).connect() as conn:
        held: dict[str, int] = dict(
            conn.execute(
                select(sync_records.c.object, func.count())
                .where(sync_records.c.destination == m.destination)
                .group_by(sync_records.c.object)
            ).all()
        )
    return estimate_calls(m, held, held)


def _drain(worker: SyncWorker, total: int, console: Console) -> SyncReport:
    with Progress(
        TextColumn(f"[bold]sync → {worker.destination}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("sync", total=total)
        return worker.drain(on_round=lambda r: bar.update(task, advance=r.patients))
