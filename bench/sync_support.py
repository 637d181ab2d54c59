"""Helpers shared by the CRM sync benchmarks: a simulated platform on SQLite, sandboxes served by
their own processes on loopback with real time and scaled limits, and sync workers wired to them."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from telecrm.bootstrap import Runtime, bootstrap
from telecrm.connectors.base import Connector
from telecrm.domain.clock import SystemClock, to_micros
from telecrm.ingest.bulk_import import import_file
from telecrm.profiles.tables import profiles
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate
from telecrm.sync.destinations import open_connector, url_override_name
from telecrm.sync.mapping import Mapping, load_mapping
from telecrm.sync.planner import mark_dirty
from telecrm.sync.rate_gate import DbCallGate
from telecrm.sync.worker import SyncWorker

HUBSPOT_TOKEN = "pat-na1-sandbox"  # noqa: S105 - the sandbox's default private-app token
SF_CLIENT = ("sandbox-client-id", "sandbox-client-secret")  # the sandbox's default client
PIPEDRIVE_TOKEN = "pd-sandbox-api-token"  # noqa: S105 - the sandbox's default API token
DYNAMICS_ENV = {  # the Dataverse sandbox's default tenant and application user
    "TELECRM_DYNAMICS_TENANT_ID": "00000000-0000-0000-0000-00000000e1d0",
    "TELECRM_DYNAMICS_CLIENT_ID": SF_CLIENT[0],
    "TELECRM_DYNAMICS_CLIENT_SECRET": SF_CLIENT[1],
}


def new_runtime(work: Path) -> Runtime:
    """A runtime on a fresh SQLite file, real clock (the sync worker waits for real)."""
    settings = Settings(
        home=work,
        database_url=f"sqlite:///{work / 'bench.db'}",
        master_key=generate_master_key(),
        embedded_worker=False,
    )
    return bootstrap(settings, clock=SystemClock())


def load_platform(rt: Runtime, work: Path, patients: int, months: int, seed: int) -> dict[str, Any]:
    """Simulate, bulk-import and project a platform; the timings of each step."""
    path = work / "events.jsonl"
    started = time.perf_counter()
    with path.open("wb") as fh:
        for e in generate(SimulationConfig(patients=patients, months=months, seed=seed)):
            fh.write(orjson.dumps(e) + b"\n")
    generated = time.perf_counter() - started
    started = time.perf_counter()
    report = import_file(path, rt.intake(), rt.clock, engine_connect=rt.engine.connect)
    imported = time.perf_counter() - started
    started = time.perf_counter()
    folded = rt.worker().drain(limit=1000)
    projected = time.perf_counter() - started
    path.unlink()
    return {
        "events": report.accepted,
        "rejected": report.rejected,
        "profiles": folded.patients,
        "generate_s": round(generated, 1),
        "import_s": round(imported, 1),
        "project_s": round(projected, 1),
    }


def patient_keys(rt: Runtime) -> list[str]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(profiles.c.patient_key).where(profiles.c.patient_id.is_not(None))
        )
        return sorted(r[0] for r in rows)


def mark_all(rt: Runtime, destination: str, keys: list[str]) -> int:
    with rt.engine.begin() as conn:
        return mark_dirty(conn, [destination], keys, to_micros(rt.clock.now()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RemoteSandbox:
    """A sandbox in its own process (`telecrm sandbox ...`) on a free loopback port.

    In its own process it shares no interpreter lock with telecrm, as a real CRM would not: what
    the benchmark times is telecrm. Records and counters are read over its admin endpoints.
    """

    def __init__(self, kind: str, scale: float) -> None:
        port = free_port()
        args = [sys.executable, "-m", "telecrm.cli", "sandbox", kind, "--port", str(port)]
        if kind == "hubspot":  # 100 requests per 10 s, 250,000 a day (private app, Starter)
            args += ["--burst", "100", "--window", str(10.0 / scale), "--daily", "250000"]
        elif kind == "salesforce":  # 100,000 requests per rolling 24 h (Enterprise base allocation)
            args += ["--allocation", "100000", "--window", str(86_400 / scale)]
        else:  # `telecrm sandbox pipedrive|dynamics` cannot scale windows (nor set the org URL)
            args = inline_sandbox(kind, port, scale)
        self.kind = kind
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(1000):
            try:
                httpx.get(f"{self.url}/_sandbox/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.02)  # waiting for a process to start, not a timer under test
        raise RuntimeError("sandbox did not start")

    def records(self, crm_object: str, view: str = "records") -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/_sandbox/{view}/{crm_object}", timeout=300).json()
        if isinstance(body, dict):  # HubSpot, Salesforce, Pipedrive: results; Dataverse: value
            return list(body["results"] if "results" in body else body["value"])
        return list(body)

    def flat(self, crm_object: str) -> list[dict[str, Any]]:
        """Pipedrive's records with custom fields by name (what the agreement check compares)."""
        return self.records(crm_object, "flat")

    @property
    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(**httpx.get(f"{self.url}/_sandbox/stats", timeout=30).json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# Pipedrive's daily budgets would stop a backfill of more than a few hundred patients on the Lite
# plan (30,000 tokens, 10,000 POST/PUT a day per user): the sandbox gets budgets no run reaches and
# the benchmark reports the tokens and writes it spent instead (what a plan must allow).
PIPEDRIVE_UNBOUNDED_DAY = 1_000_000_000
INLINE_SANDBOX = (
    "import json, sys; from {module} import {serve}; from {config_module} import {config}; "
    "{serve}('127.0.0.1', int(sys.argv[1]), {config}(**json.loads(sys.argv[2])))"
)


def inline_sandbox(kind: str, port: int, scale: float) -> list[str]:
    """argv serving a Pipedrive or Dataverse sandbox with its windows divided by `scale`."""
    if kind == "pipedrive":  # 20 requests (10 searches) per 2 s per api_token user
        module = config_module = "telecrm.sandbox.pipedrive"
        serve, config = "serve_pipedrive_sandbox", "PipedriveSandboxConfig"
        values: dict[str, Any] = {
            "window_seconds": 2.0 / scale,
            "daily_token_budget": PIPEDRIVE_UNBOUNDED_DAY,
            "daily_writes_api_token": PIPEDRIVE_UNBOUNDED_DAY,
        }
    elif kind == "dynamics":  # 6,000 requests and 1,200 s execution time per 300 s
        module, config_module = "telecrm.sandbox.dynamics", "telecrm.sandbox.dynamics_limits"
        serve, config = "serve_dynamics_sandbox", "DynamicsSandboxConfig"
        values = {
            "org_url": load_mapping("dynamics").connection["org_url"],  # the token scope names it
            "window_seconds": 300.0 / scale,
            "execution_seconds_per_window": 1200.0 / scale,
        }
    else:
        raise ValueError(kind)
    program = INLINE_SANDBOX.format(
        module=module, serve=serve, config_module=config_module, config=config
    )
    return [sys.executable, "-c", program, str(port), orjson.dumps(values).decode()]


def scaled_mapping(name: str, scale: float) -> Mapping:
    """The built-in mapping with its rate window divided by `scale` (daily caps unchanged)."""
    m = load_mapping(name)
    update: dict[str, Any] = {"per_seconds": m.limits.per_seconds / scale}
    if m.limits.search is not None:
        search = m.limits.search
        update["search"] = search.model_copy(update={"per_seconds": search.per_seconds / scale})
    if m.connector == "pipedrive":  # its 1,200 a day is the Lite budget: lifted, see above
        update["daily"] = None
    limits = m.limits.model_copy(update=update)
    return m.model_copy(update={"limits": limits})


def new_sandbox(kind: str, scale: float) -> RemoteSandbox:
    """A sandbox with the documented limits, its window divided by `scale`, real time."""
    return RemoteSandbox(kind, scale)


def env_for(mapping: Mapping, url: str) -> dict[str, str]:
    if mapping.connector == "hubspot":
        return {"TELECRM_HUBSPOT_TOKEN": HUBSPOT_TOKEN, url_override_name(mapping): url}
    if mapping.connector == "pipedrive":
        return {"TELECRM_PIPEDRIVE_TOKEN": PIPEDRIVE_TOKEN, url_override_name(mapping): url}
    if mapping.connector == "dynamics":
        return {**DYNAMICS_ENV, url_override_name(mapping): url}
    return {
        "TELECRM_SALESFORCE_CLIENT_ID": SF_CLIENT[0],
        "TELECRM_SALESFORCE_CLIENT_SECRET": SF_CLIENT[1],
        url_override_name(mapping): url,
    }


def open_worker(
    rt: Runtime, mapping: Mapping, url: str, *, per_round: int = 500
) -> tuple[SyncWorker, Connector, DbCallGate]:
    """What `sync_worker()` builds, over a real httpx.Client, with the round size exposed."""
    client = httpx.Client(timeout=30)
    connector, gate = open_connector(
        mapping, rt.engine, rt.clock, time.sleep, client=client, env=env_for(mapping, url)
    )
    worker = SyncWorker(
        rt.engine,
        mapping,
        connector,
        rt.cipher,
        rt.clock,
        time.sleep,
        gate=gate,
        patients_per_round=per_round,
    )
    return worker, connector, gate


def provision(rt: Runtime, mapping: Mapping, url: str) -> None:
    """Create the mapping's custom properties (ungated: setup, not part of any measurement)."""
    with httpx.Client(timeout=30) as client:
        connector, _ = open_connector(
            mapping, rt.engine, rt.clock, time.sleep, client=client,
            env=env_for(mapping, url), gated=False,
        )  # fmt: skip
        properties = [c.to_custom_property() for c in mapping.custom_properties]
        tables = [t.to_custom_table() for t in mapping.custom_tables]  # Dataverse's own tables
        steps = connector.provision(properties, **({"tables": tables} if tables else {}))  # type: ignore[attr-defined]
    bad = [s for s in steps if s.action not in ("created", "exists")]
    if bad:
        raise RuntimeError(f"provisioning failed: {bad}")


def crm_records(sandbox: RemoteSandbox) -> Any:
    """obj -> the records the sandbox holds (GET /_sandbox/records/{obj}; Pipedrive: /flat/)."""
    return sandbox.flat if sandbox.kind == "pipedrive" else sandbox.records


def held_counts(sandbox: RemoteSandbox, mapping: Mapping) -> dict[str, int]:
    out = {}
    for o in mapping.objects:
        rows = sandbox.records(o.crm_object)
        if mapping.connector == "salesforce":
            rows = [r for r in rows if not r.get("IsConverted")]
        out[o.crm_object] = len(rows)
    return out


def limit_refusals(sandbox: RemoteSandbox) -> int:
    stats = sandbox.stats
    hubspot_like = sandbox.kind in ("hubspot", "pipedrive")
    return int(stats.rate_limited if hubspot_like else stats.limit_refusals)


def refusals_in_requests(kind: str) -> bool:
    """Whether the sandbox's `api_requests` counts the requests it refused for the limits."""
    return kind in ("hubspot", "pipedrive")


def tokens_spent(sandbox: RemoteSandbox) -> int | None:
    """Pipedrive's token budget spent so far (the other sandboxes have no tokens)."""
    return int(sandbox.stats.tokens_spent) if sandbox.kind == "pipedrive" else None


def api_requests(sandbox: RemoteSandbox) -> int:
    return int(sandbox.stats.api_requests)


def lower_bound(mapping: Mapping, held: dict[str, int], conversions: int = 0) -> int:
    """Fewest calls that can write `held` into an empty CRM.

    HubSpot / Salesforce: full batches (100 / 200), plus HubSpot's association batches (one per
    100 links) and Salesforce's lead conversions (100 per SOAP call, then stamps).
    Pipedrive: no batch write and no upsert, so one write per record, plus one exact search per
    person or deal not yet known (all of them in an empty CRM: without it a re-sent create
    duplicates). Activities and notes have no search: a marker finds them, and one whose person
    was just created needs no lookup. A deal's person link rides in its own body: nothing here.
    Dynamics: full `$batch`es of 1,000 upserts per object; lookups (a case's customer, an
    opportunity's contact) are bound inside the upsert, so association batches (1,000 per call)
    count only for objects the mapping links with `associations:` (none in the built-in one)."""
    if mapping.connector == "pipedrive":
        marked = {"activities", "notes"}
        return sum(n if obj in marked else 2 * n for obj, n in held.items())
    size = {"hubspot": 100, "salesforce": 200, "dynamics": 1000}[mapping.connector]
    calls = sum(math.ceil(n / size) for n in held.values())
    if mapping.connector in ("hubspot", "dynamics"):
        calls += sum(
            math.ceil(held[o.crm_object] / size) for o in mapping.objects if o.associations
        )
    elif conversions:
        calls += math.ceil(conversions / 100) + math.ceil(2 * conversions / 200)
    return calls


# -- the naive baseline: one official-SDK call per record -----------------------------------------
def desired_for(rt: Runtime, mapping: Mapping, keys: list[str]) -> list[Any]:
    """The records telecrm's planner wants for these patients (what the naive client writes)."""
    from telecrm.profiles.codec import decode
    from telecrm.sync.planner import desired_records

    cipher = rt.cipher()
    out: list[Any] = []
    with rt.engine.connect() as conn:
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for row in conn.execute(select(profiles).where(profiles.c.patient_key.in_(part))):
                out.extend(desired_records(decode(row, cipher).profile, mapping))
    return out


def _retry_429(call: Any, pause: float) -> Any:
    """The simple retry a script would write: on 429 (or 403 limit), wait a bit and try again."""
    while True:
        try:
            return call()
        except Exception as exc:  # the SDKs raise their own ApiException / SalesforceError
            status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
            if status not in (429, 403):
                raise
            time.sleep(pause)


def naive_hubspot(url: str, mapping: Mapping, records: list[Any], pause: float) -> None:
    """hubspot-api-client: a one-input batch upsert per record and one association call per deal
    or ticket (the sandbox, like telecrm, speaks only the batch endpoints)."""
    from hubspot import HubSpot
    from hubspot.crm.associations.v4 import (
        BatchInputPublicDefaultAssociationMultiPost,
        PublicDefaultAssociationMultiPost,
    )
    from hubspot.crm.associations.v4.models import PublicObjectId
    from hubspot.crm.contacts import (
        BatchInputSimplePublicObjectBatchInputUpsert,
        SimplePublicObjectBatchInputUpsert,
    )

    from telecrm.connectors.hubspot import _wire_properties

    client = HubSpot(access_token=HUBSPOT_TOKEN, host=url)
    apis = {
        "contacts": client.crm.contacts,
        "deals": client.crm.deals,
        "tickets": client.crm.tickets,
    }
    assoc = client.crm.associations.v4.batch_api
    ids: dict[tuple[str, str], str] = {}
    for d in records:
        o = mapping.object(d.object)
        body = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[SimplePublicObjectBatchInputUpsert(
                id_property=o.id_property, id=d.key, properties=_wire_properties(d.properties)
            )]
        )  # fmt: skip
        answer = _retry_429(partial(apis[o.crm_object].batch_api.upsert, body), pause)
        ids[(d.object, d.key)] = answer.results[0].id
        for to, to_key in d.associations:
            link = BatchInputPublicDefaultAssociationMultiPost(
                inputs=[PublicDefaultAssociationMultiPost(
                    _from=PublicObjectId(id=ids[(d.object, d.key)]), to=PublicObjectId(id=ids[(to, to_key)])
                )]
            )  # fmt: skip
            target = mapping.object(to).crm_object
            _retry_429(partial(assoc.create_default, o.crm_object, target, link), pause)


def naive_salesforce(url: str, mapping: Mapping, records: list[Any], pause: float) -> None:
    """simple-salesforce: one upsert per record. The sandbox has no single-record route
    (PATCH /sobjects/{obj}/{field}/{value}, what `sf.Contact.upsert` calls), so each record goes
    through `sf.restful` to sObject Collections with a one-record list: one call per record."""
    from simple_salesforce import Salesforce

    token = httpx.post(
        f"{url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": SF_CLIENT[0],
              "client_secret": SF_CLIENT[1]},
    ).json()  # fmt: skip
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"])
    sf.base_url = sf.base_url.replace("https://", "http://")  # it assumes TLS; the sandbox is plain
    for d in records:
        o = mapping.object(d.object)
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": o.crm_object}, **_sf_values(d.properties),
                         o.id_property: d.key}],
        }  # fmt: skip
        path = f"composite/sobjects/{o.crm_object}/{o.id_property}"
        result = _retry_429(partial(sf.restful, path, method="PATCH", json=body), pause)
        if not result or not result[0].get("success"):
            raise RuntimeError(f"naive upsert refused: {result}")


def _sf_values(properties: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values, as the connector sends them (dates and datetimes as ISO strings)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in properties.items()}


# -- bench-side indexes for the sandboxes ---------------------------------------------------------
