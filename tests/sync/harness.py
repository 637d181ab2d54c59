"""A runtime wired to a CRM sandbox: events in, the projection run, the sync worker over HTTP."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import httpx

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.sandbox.faults import sandbox_client
from telecrm.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_hubspot_sandbox
from telecrm.sandbox.salesforce import (
    SalesforceSandbox,
    SalesforceSandboxConfig,
    create_salesforce_sandbox,
)
from telecrm.sync.agreement import Agreement, check_agreement
from telecrm.sync.credentials import CredentialStore
from telecrm.sync.destinations import open_connector, sync_worker, url_override_name
from telecrm.sync.mapping import Mapping, load_mapping
from telecrm.sync.rate_gate import clock_sleep
from telecrm.sync.worker import SyncReport, SyncWorker

HUBSPOT_TOKEN = "pat-na1-sandbox"


def hubspot_sandbox(clock: FrozenClock, **config: Any) -> HubSpotSandbox:
    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    return create_hubspot_sandbox(
        HubSpotSandboxConfig(**config), now=lambda: clock.now().timestamp(), sleep=sleep
    )


def hubspot_env(mapping: Mapping, base_url: str = "http://hubspot") -> dict[str, str]:
    return {"TELECRM_HUBSPOT_TOKEN": HUBSPOT_TOKEN, url_override_name(mapping): base_url}


class SyncHarness:
    def __init__(
        self,
        runtime: Runtime,
        clock: FrozenClock,
        mapping: Mapping,
        sandbox: Any,
        env: dict[str, str],
        base_url: str,
    ) -> None:
        self.runtime, self.clock, self.mapping, self.sandbox = runtime, clock, mapping, sandbox
        self.env, self.base_url = env, base_url
        self.records = (
            sandbox.records
            if hasattr(sandbox, "records")
            else (lambda obj: list(sandbox.store.records.get(obj, {}).values()))
        )
        runtime.use_mappings([mapping])

    def client(self) -> httpx.Client:
        return sandbox_client(self.sandbox.app, base_url=self.base_url)

    def provision(self) -> None:
        connector, _ = open_connector(
            self.mapping,
            self.runtime.engine,
            self.clock,
            clock_sleep(self.clock),
            client=self.client(),
            env=self.env,
            credentials=CredentialStore(self.runtime.engine, self.runtime.cipher),
        )
        properties = [c.to_custom_property() for c in self.mapping.custom_properties]
        tables = [t.to_custom_table() for t in self.mapping.custom_tables]
        steps = connector.provision(properties, **({"tables": tables} if tables else {}))  # type: ignore[attr-defined]
        assert all(s.action in ("created", "exists") for s in steps), steps

    def feed(self, raw_events: Iterable[dict[str, Any]]) -> None:
        now = self.clock.now()
        self.runtime.intake().accept(
            [parse_event(e, now=now) for e in raw_events], source="webhook", actor="test"
        )
        self.runtime.worker().drain()

    def worker(self, **kwargs: Any) -> SyncWorker:
        return sync_worker(
            self.mapping,
            self.runtime.engine,
            self.runtime.cipher,
            self.clock,
            clock_sleep(self.clock),
            client=self.client(),
            env=self.env,
            **kwargs,
        )

    def sync(self, **kwargs: Any) -> SyncReport:
        return self.worker(**kwargs).drain()

    def agreement(self) -> Agreement:
        return check_agreement(
            self.runtime.engine, self.runtime.cipher(), self.mapping, self.records
        )


def hubspot_harness(
    runtime: Runtime, clock: FrozenClock, mapping: str | Mapping = "hubspot", **config: Any
) -> SyncHarness:
    m = load_mapping(mapping) if isinstance(mapping, str) else mapping
    return SyncHarness(
        runtime, clock, m, hubspot_sandbox(clock, **config), hubspot_env(m), "http://hubspot"
    )


def salesforce_sandbox(clock: FrozenClock, **config: Any) -> SalesforceSandbox:
    return create_salesforce_sandbox(
        SalesforceSandboxConfig(**config),
        now=lambda: clock.now().timestamp(),
        sleep=lambda seconds: clock.advance(timedelta(seconds=seconds)),
    )


def salesforce_harness(
    runtime: Runtime, clock: FrozenClock, mapping: str | Mapping = "salesforce", **config: Any
) -> SyncHarness:
    m = load_mapping(mapping) if isinstance(mapping, str) else mapping
    env = {
        "TELECRM_SALESFORCE_CLIENT_ID": "sandbox-client-id",
        "TELECRM_SALESFORCE_CLIENT_SECRET": "sandbox-client-secret",
        url_override_name(m): "http://salesforce",
    }
    return SyncHarness(
        runtime, clock, m, salesforce_sandbox(clock, **config), env, "http://salesforce"
    )


def pipedrive_harness(
    runtime: Runtime, clock: FrozenClock, mapping: str | Mapping = "pipedrive", **config: Any
) -> SyncHarness:
    from telecrm.sandbox.pipedrive import PipedriveSandboxConfig, create_pipedrive_sandbox

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    m = load_mapping(mapping) if isinstance(mapping, str) else mapping
    sandbox = create_pipedrive_sandbox(
        PipedriveSandboxConfig(**config), now=lambda: clock.now().timestamp(), sleep=sleep
    )
    env = {
        "TELECRM_PIPEDRIVE_TOKEN": "pd-sandbox-api-token",
        url_override_name(m): "http://pipedrive",
    }
    h = SyncHarness(runtime, clock, m, sandbox, env, "http://pipedrive")
    h.records = sandbox.flat_records  # custom fields by name: what the agreement compares
    return h


DYNAMICS_ENV = {
    "TELECRM_DYNAMICS_TENANT_ID": "00000000-0000-0000-0000-00000000e1d0",
    "TELECRM_DYNAMICS_CLIENT_ID": "sandbox-client-id",
    "TELECRM_DYNAMICS_CLIENT_SECRET": "sandbox-client-secret",
}


def dynamics_harness(
    runtime: Runtime, clock: FrozenClock, mapping: str | Mapping = "dynamics", **config: Any
) -> SyncHarness:
    from telecrm.sandbox.dynamics import create_dynamics_sandbox
    from telecrm.sandbox.dynamics_limits import DynamicsSandboxConfig

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    m = load_mapping(mapping) if isinstance(mapping, str) else mapping
    config.setdefault("org_url", m.connection["org_url"])  # the token's scope names the org
    sandbox = create_dynamics_sandbox(
        DynamicsSandboxConfig(**config), now=lambda: clock.now().timestamp(), sleep=sleep
    )
    env = {**DYNAMICS_ENV, url_override_name(m): "http://dynamics"}
    return SyncHarness(runtime, clock, m, sandbox, env, "http://dynamics")
