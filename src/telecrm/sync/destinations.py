"""From a mapping and the environment to a live connector, its shared call budget and a worker.

Credentials never live in a mapping file: its `connection:` block names the environment variables
that hold them. `TELECRM_<DESTINATION>_URL` overrides the API base URL (the demo and the tests
point it at a sandbox).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Mapping as EnvMapping
from pathlib import Path

import httpx
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine

from telecrm.connectors.base import Connector
from telecrm.connectors.dynamics import DynamicsConnector
from telecrm.connectors.dynamics_auth import DynamicsConfig
from telecrm.connectors.hubspot import HubSpotConnector
from telecrm.connectors.hubspot_auth import HubSpotConfig
from telecrm.connectors.pipedrive import PipedriveConnector
from telecrm.connectors.pipedrive_auth import PipedriveConfig
from telecrm.connectors.salesforce import SalesforceConnector
from telecrm.connectors.salesforce_auth import SalesforceConfig
from telecrm.domain.clock import Clock
from telecrm.security.envelope import FieldCipher
from telecrm.security.secret_files import resolve_secret
from telecrm.sync.credentials import CredentialStore
from telecrm.sync.mapping import Mapping
from telecrm.sync.rate_gate import DbCallGate
from telecrm.sync.worker import SyncWorker


class DestinationNotConfigured(ValueError):
    """The environment lacks what a destination needs; the message says which variables."""


def url_override_name(mapping: Mapping) -> str:
    return f"TELECRM_{mapping.destination.upper().replace('-', '_')}_URL"


def _env(mapping: Mapping, env: EnvMapping[str, str], key: str) -> str | None:
    # The variable itself, or the file its NAME_FILE twin points at (security/secret_files.py).
    name = mapping.connection.get(key)
    return resolve_secret(name, env) if name else None


def hubspot_config(mapping: Mapping, env: EnvMapping[str, str]) -> HubSpotConfig:
    base = env.get(url_override_name(mapping)) or mapping.connection.get(
        "base_url", "https://api.hubapi.com"
    )
    token = _env(mapping, env, "token_env")
    try:
        if token:
            return HubSpotConfig(base_url=base, private_app_token=SecretStr(token))
        return HubSpotConfig(
            base_url=base,
            client_id=_env(mapping, env, "client_id_env"),
            client_secret=_secret(_env(mapping, env, "client_secret_env")),
            refresh_token=_secret(_env(mapping, env, "refresh_token_env")),
        )
    except ValidationError:
        names = [mapping.connection.get(k, "?") for k in ("token_env", "client_id_env")]
        raise DestinationNotConfigured(
            f"{mapping.destination}: no HubSpot credentials: set {names[0]} (a private-app token), "
            f"or {names[1]} with the client secret and refresh token variables of the mapping"
        ) from None


def salesforce_config(mapping: Mapping, env: EnvMapping[str, str]) -> SalesforceConfig:
    login = env.get(url_override_name(mapping)) or mapping.connection.get(
        "login_url", "https://login.salesforce.com"
    )
    client_id = _env(mapping, env, "client_id_env")
    username = _env(mapping, env, "username_env")
    key_file = _env(mapping, env, "private_key_file_env")
    try:
        if username and key_file:
            key = Path(key_file).read_text(encoding="utf-8")
            return SalesforceConfig(
                login_url=login,
                consumer_key=client_id,
                username=username,
                private_key=SecretStr(key),
            )
        return SalesforceConfig(
            login_url=login,
            client_id=client_id,
            client_secret=_secret(_env(mapping, env, "client_secret_env")),
        )
    except (ValidationError, OSError):
        c = mapping.connection
        raise DestinationNotConfigured(
            f"{mapping.destination}: no Salesforce credentials: set {c.get('client_id_env')} and "
            f"{c.get('client_secret_env')} (client credentials), or {c.get('client_id_env')}, "
            f"{c.get('username_env')} and {c.get('private_key_file_env')} (JWT bearer)"
        ) from None


def pipedrive_config(mapping: Mapping, env: EnvMapping[str, str]) -> PipedriveConfig:
    base = env.get(url_override_name(mapping)) or mapping.connection.get(
        "base_url", "https://api.pipedrive.com"
    )
    token = _env(mapping, env, "token_env")
    try:
        if token:
            return PipedriveConfig(base_url=base, api_token=SecretStr(token))
        return PipedriveConfig(
            base_url=base,
            client_id=_env(mapping, env, "client_id_env"),
            client_secret=_secret(_env(mapping, env, "client_secret_env")),
            refresh_token=_secret(_env(mapping, env, "refresh_token_env")),
            # Pipedrive's token endpoint is its own host; behind an override (a sandbox, a
            # proxy) it is the same host's /oauth/token.
            **(
                {"token_url": f"{base.rstrip('/')}/oauth/token"}
                if env.get(url_override_name(mapping))
                else {}
            ),
        )
    except ValidationError:
        names = [mapping.connection.get(k, "?") for k in ("token_env", "client_id_env")]
        raise DestinationNotConfigured(
            f"{mapping.destination}: no Pipedrive credentials: set {names[0]} (an API token), or "
            f"{names[1]} with the client secret and refresh token variables of the mapping"
        ) from None


def dynamics_config(mapping: Mapping, env: EnvMapping[str, str]) -> DynamicsConfig:
    c = mapping.connection
    try:
        config = DynamicsConfig(
            org_url=c.get("org_url", ""),
            tenant_id=_env(mapping, env, "tenant_id_env") or "",
            client_id=_env(mapping, env, "client_id_env") or "",
            client_secret=SecretStr(_env(mapping, env, "client_secret_env") or ""),
            solution_unique_name=c.get("solution"),
        )
    except ValidationError:
        config = None
    if config is None or not (config.tenant_id and config.client_id and config.client_secret):
        raise DestinationNotConfigured(
            f"{mapping.destination}: no Dynamics 365 credentials: set {c.get('tenant_id_env')}, "
            f"{c.get('client_id_env')} and {c.get('client_secret_env')} (an Entra ID app "
            "registration with an application user in the environment)"
        )
    override = env.get(url_override_name(mapping))
    return config.pointed_at(override) if override else config


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


def open_connector(
    mapping: Mapping,
    engine: Engine,
    clock: Clock,
    sleep: Callable[[float], None],
    *,
    client: httpx.Client | None = None,
    env: EnvMapping[str, str] | None = None,
    gated: bool = True,
    credentials: CredentialStore | None = None,
) -> tuple[Connector, DbCallGate]:
    env = os.environ if env is None else env
    gate = DbCallGate(engine, mapping.destination, mapping.limits, clock, sleep)
    now = lambda: clock.now().timestamp()  # noqa: E731
    connector: Connector
    if mapping.connector == "hubspot":
        connector = HubSpotConnector(
            hubspot_config(mapping, env), client, gate=gate if gated else None, now=now
        )
    elif mapping.connector == "pipedrive":
        config = pipedrive_config(mapping, env)
        on_refresh = None
        if credentials is not None and config.uses_oauth:
            # Refresh tokens are single-use: start from the newest one we were handed.
            newest = credentials.get(mapping.destination, "refresh_token")
            if newest:
                config = config.model_copy(update={"refresh_token": SecretStr(newest)})
            dest = mapping.destination

            def on_refresh(token: str) -> None:
                credentials.put(dest, "refresh_token", token)

        search = mapping.limits.search
        search_gate = (
            DbCallGate(engine, f"{mapping.destination}:search", search, clock, sleep)
            if search is not None and gated
            else None
        )
        id_fields: dict[str, str] = {}
        for o in mapping.objects:  # to find a linked record by our key
            id_fields.setdefault(o.crm_object, o.id_property)
        connector = PipedriveConnector(
            config, client, gate=gate if gated else None, now=now, on_refresh=on_refresh,
            id_fields=id_fields, search_gate=search_gate,
        )  # fmt: skip
    elif mapping.connector == "dynamics":
        connector = DynamicsConnector(
            dynamics_config(mapping, env),
            client,
            gate=gate if gated else None,
            now=now,
            lookups={t.contact_lookup: "contacts" for t in mapping.custom_tables},
        )
    else:
        connector = SalesforceConnector(
            salesforce_config(mapping, env), client, gate=gate if gated else None, now=now
        )
    return connector, gate


def sync_worker(
    mapping: Mapping,
    engine: Engine,
    cipher: Callable[[], FieldCipher],
    clock: Clock,
    sleep: Callable[[float], None],
    *,
    client: httpx.Client | None = None,
    env: EnvMapping[str, str] | None = None,
    lease_seconds: float = 300.0,
    patients_per_round: int = 5000,
) -> SyncWorker:
    connector, gate = open_connector(
        mapping,
        engine,
        clock,
        sleep,
        client=client,
        env=env,
        credentials=CredentialStore(engine, cipher),
    )
    return SyncWorker(
        engine,
        mapping,
        connector,
        cipher,
        clock,
        sleep,
        gate=gate,
        lease_seconds=lease_seconds,
        patients_per_round=patients_per_round,
    )
