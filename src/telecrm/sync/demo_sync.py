"""The demo's CRM part: both sandboxes on loopback, provisioned, backfilled under faults, checked.

Runs HubSpot and Salesforce sandboxes on free ports with their documented limits, provisions the
custom properties, backfills every patient through the same worker `telecrm sync run` uses (with
HubSpot answering 429 storms and 5xx on purpose), then shows what it cost against the lower bound,
that a second run costs nothing, that a refused PHI mapping never loads, and the agreement check.
"""

from __future__ import annotations

import math
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
from telecrm.sync.plan import BATCH_MAX
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


def _records(base_url: str, kind: str) -> Callable[[str], list[dict[str, Any]]]:
    def fetch(crm_object: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{base_url}/_sandbox/records/{crm_object}", timeout=60).json()
        rows = body.get("results", body) if isinstance(body, dict) else body
        return list(rows)

    return fetch


def demo_crm_sync(rt: Runtime, console: Console) -> bool:
    """Returns whether every destination agreed with the source."""
    hubspot = create_hubspot_sandbox(HubSpotSandboxConfig())
    salesforce = create_salesforce_sandbox(SalesforceSandboxConfig())
    ok = True
    with serve_on_loopback(hubspot.app) as hs_url, serve_on_loopback(salesforce.app) as sf_url:
        env = {
            "TELECRM_HUBSPOT_TOKEN": "pat-na1-sandbox",
            "TELECRM_SALESFORCE_CLIENT_ID": "sandbox-client-id",
            "TELECRM_SALESFORCE_CLIENT_SECRET": "sandbox-client-secret",
        }
        mappings = [load_mapping("hubspot"), load_mapping("salesforce")]
        env[url_override_name(mappings[0])] = hs_url
        env[url_override_name(mappings[1])] = sf_url
        rt.use_mappings(mappings)
        with rt.engine.begin() as conn:
            keys = [
                k
                for (k,) in conn.execute(
                    select(profiles.c.patient_key).where(profiles.c.patient_id.is_not(None))
                )
            ]
            mark_dirty(conn, [m.destination for m in mappings], keys, to_micros(rt.clock.now()))
        table = Table(
            "destination", "records", "API calls", "lower bound", "limit refusals",
            "5xx absorbed", "re-run calls", "agreement",
            title=f"CRM sync of {len(keys):,} patients (sandboxes with the documented limits)",
        )  # fmt: skip
        for m, url, sandbox in ((mappings[0], hs_url, hubspot), (mappings[1], sf_url, salesforce)):
            connector, gate = open_connector(m, rt.engine, rt.clock, time.sleep, env=env)
            connector.provision([c.to_custom_property() for c in m.custom_properties])  # type: ignore[attr-defined]
            provision_calls = connector.stats.calls
            if m.connector == "hubspot":
                sandbox.faults.set(HUBSPOT_FAULTS)
            worker = SyncWorker(rt.engine, m, connector, rt.cipher, rt.clock, time.sleep, gate=gate)
            report = _drain(worker, len(keys), console)
            if m.connector == "hubspot":
                sandbox.faults.set(Faults())
            for _ in range(5):  # patients deferred by the injected faults come back after backoff
                if not _due_later(worker, rt):
                    break
                time.sleep(1.0)
                report.add(worker.drain())
            with rt.engine.begin() as conn:
                mark_dirty(conn, [m.destination], keys, to_micros(rt.clock.now()))
            rerun = worker.drain()
            agreement = check_agreement(rt.engine, rt.cipher(), m, _records(url, m.connector))
            ok = ok and agreement.ok
            calls = connector.stats.calls - provision_calls - rerun.calls
            table.add_row(
                m.destination,
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
        "lower bound = records ÷ the API's batch maximum (HubSpot 100, Salesforce 200) per object, "
        "plus HubSpot's association batches; every record is upserted by its external id, so "
        "retries after 429s, 5xx and cut connections never duplicate one",
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
    """Records ÷ the batch maximum, per object, plus HubSpot's association batches."""
    from sqlalchemy import func

    from telecrm.sync.tables import sync_records

    size = BATCH_MAX[m.connector]
    with read_only(rt.engine).connect() as conn:
        held: dict[str, int] = dict(
            conn.execute(
                select(sync_records.c.object, func.count())
                .where(sync_records.c.destination == m.destination)
                .group_by(sync_records.c.object)
            ).all()
        )
    bound = 0
    for o in m.objects:
        batches = math.ceil(held.get(o.name, 0) / size)
        bound += batches * (2 if o.associations and m.connector == "hubspot" else 1)
    return bound


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
