"""The CRMs the conformance suite runs against: how to build a provisioned harness for each, and
how to make its access tokens expire. Adding a CRM to telecrm adds one entry here, and the whole
suite (tests/sync/test_conformance.py) must pass for it unchanged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from tests.sync.harness import (
    DYNAMICS_ENV,
    SyncHarness,
    dynamics_harness,
    hubspot_harness,
    pipedrive_harness,
    salesforce_harness,
)


@dataclass(frozen=True)
class CrmKind:
    name: str
    make: Callable[[Runtime, FrozenClock], SyncHarness]  # a harness using the CRM's OAuth flow
    expire_tokens: Callable[[SyncHarness], None]  # every access token it issued stops working
    env: Callable[[str], dict[str, str]]  # `telecrm sync run` against the sandbox at this URL
    writes: Callable[[Any], int]  # write requests the sandbox has answered so far


def _hubspot(runtime: Runtime, clock: FrozenClock) -> SyncHarness:
    h = hubspot_harness(runtime, clock)
    h.env = {
        "TELECRM_HUBSPOT_URL": "http://hubspot",
        "TELECRM_HUBSPOT_CLIENT_ID": "sandbox-client-id",
        "TELECRM_HUBSPOT_CLIENT_SECRET": "sandbox-client-secret",
        "TELECRM_HUBSPOT_REFRESH_TOKEN": "sandbox-refresh-token",
    }
    return h


def _hubspot_expire(h: SyncHarness) -> None:
    h.clock.advance(timedelta(hours=2))  # HubSpot access tokens live 30 minutes


def _salesforce_expire(h: SyncHarness) -> None:
    h.sandbox.expire_sessions()


def _hubspot_env(url: str) -> dict[str, str]:
    return {"TELECRM_HUBSPOT_URL": url, "TELECRM_HUBSPOT_TOKEN": "pat-na1-sandbox"}


def _salesforce_env(url: str) -> dict[str, str]:
    return {
        "TELECRM_SALESFORCE_URL": url,
        "TELECRM_SALESFORCE_CLIENT_ID": "sandbox-client-id",
        "TELECRM_SALESFORCE_CLIENT_SECRET": "sandbox-client-secret",
    }


def _pipedrive(runtime: Runtime, clock: FrozenClock) -> SyncHarness:
    h = pipedrive_harness(runtime, clock)
    h.env = {
        "TELECRM_PIPEDRIVE_URL": "http://pipedrive",
        "TELECRM_PIPEDRIVE_CLIENT_ID": "sandbox-client-id",
        "TELECRM_PIPEDRIVE_CLIENT_SECRET": "sandbox-client-secret",
        "TELECRM_PIPEDRIVE_REFRESH_TOKEN": "sandbox-refresh-token",
    }
    return h


def _pipedrive_expire(h: SyncHarness) -> None:
    h.clock.advance(timedelta(hours=2))  # Pipedrive access tokens live an hour (§3.1)


def _pipedrive_env(url: str) -> dict[str, str]:
    return {"TELECRM_PIPEDRIVE_URL": url, "TELECRM_PIPEDRIVE_TOKEN": "pd-sandbox-api-token"}


def _dynamics_expire(h: SyncHarness) -> None:
    h.sandbox.expire_tokens()


def _dynamics_env(url: str) -> dict[str, str]:
    return {**DYNAMICS_ENV, "TELECRM_DYNAMICS_URL": url}


def _count(requests: dict[str, int], *fragments: str) -> int:
    return sum(n for k, n in requests.items() if any(f in k for f in fragments))


def _dynamics_baa(runtime: Runtime, clock: FrozenClock) -> SyncHarness:
    return dynamics_harness(runtime, clock, "dynamics-baa")  # all five custom tables, with PHI


KINDS: dict[str, CrmKind] = {
    "dynamics": CrmKind(
        "dynamics",
        dynamics_harness,
        _dynamics_expire,
        _dynamics_env,
        lambda sb: _count(sb.stats.requests, "$batch"),
    ),
    "dynamics-baa": CrmKind(
        "dynamics-baa",
        _dynamics_baa,
        _dynamics_expire,
        _dynamics_env,
        lambda sb: _count(sb.stats.requests, "$batch"),
    ),
    "hubspot": CrmKind(
        "hubspot",
        _hubspot,
        _hubspot_expire,
        _hubspot_env,
        lambda sb: _count(sb.stats.requests, "/batch/upsert"),
    ),
    "pipedrive": CrmKind(
        "pipedrive",
        _pipedrive,
        _pipedrive_expire,
        _pipedrive_env,
        lambda sb: _count(sb.stats.requests, "POST /api/v2/persons", "PATCH /api/v2/persons"),
    ),
    "salesforce": CrmKind(
        "salesforce",
        salesforce_harness,
        _salesforce_expire,
        _salesforce_env,
        lambda sb: _count(
            sb.stats.requests_by_path, "PATCH /services/data/v{version}/composite/sobjects/{"
        ),
    ),
}
