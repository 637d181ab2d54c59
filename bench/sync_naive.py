"""The naive baselines for Pipedrive and Dynamics 365: one plain-httpx request (or two) per record.

Neither CRM has an official Python SDK among telecrm's dependencies (Pipedrive publishes Node and
PHP clients; Microsoft's Dataverse SDK is .NET), so the naive client is what a script would do
with httpx: for Pipedrive, an exact search on the id field and then a POST or PATCH per record;
for Dataverse, one `PATCH {set}({key}='…')` upsert per record, no `$batch`. On a 429 it waits a
tenth of the (scaled) window and tries again. Bodies are shaped with telecrm's own helpers, so
both sides write the same values; only the calls differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
from pydantic import SecretStr

from bench.sync_support import DYNAMICS_ENV, PIPEDRIVE_TOKEN
from telecrm.sync.mapping import Mapping


def _retry_429(call: Callable[[], httpx.Response], pause: float) -> httpx.Response:
    """The simple retry a script would write: on 429 wait a bit and try again; else must be 2xx."""
    while True:
        response = call()
        if response.status_code != 429:
            response.raise_for_status()
            return response
        time.sleep(pause)


def naive_pipedrive(url: str, mapping: Mapping, records: list[Any], pause: float) -> None:
    """Per record: GET /api/v2/{obj}/search (exact, on the id custom field), then PATCH the id it
    found or POST a new record; a deal carries its person's id in its own body (a script knows
    it: it just wrote the person). Field keys, pipeline and stage ids are looked up once (a few
    GETs, through telecrm's schema helper, counted with the rest)."""
    from telecrm.connectors.pipedrive import LINKS, PipedriveConnector
    from telecrm.connectors.pipedrive_auth import PipedriveConfig
    from telecrm.connectors.pipedrive_marked import MARKED_TEXT, PATHS

    headers = {"x-api-token": PIPEDRIVE_TOKEN}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        config = PipedriveConfig(base_url=url, api_token=SecretStr(PIPEDRIVE_TOKEN))
        shaper = PipedriveConnector(config, client)  # ungated: only its body builder is used
        ids: dict[tuple[str, str], int] = {}
        bodies = [_shape(shaper, mapping, d, pause) for d in records]  # lookups once, then cached
        for d, body in zip(records, bodies, strict=True):
            o = mapping.object(d.object)
            obj = o.crm_object
            for to, to_key in d.associations:
                body[LINKS[(obj, mapping.object(to).crm_object)]] = ids[(to, to_key)]
            if obj in MARKED_TEXT:  # no search endpoint: a script just creates them
                body["person_id"] = ids[("person", d.patient_key)]
                if "deal_id" in d.properties:
                    body["deal_id"] = ids[("deal", d.key)]
                path = PATHS[obj]
                answer = _retry_429(partial(client.post, path, json=body), pause)
                ids[(d.object, d.key)] = int(answer.json()["data"]["id"])
                continue
            if "person_id" in d.properties:
                body["person_id"] = ids[("person", d.patient_key)]
            params = {"term": d.key, "fields": "custom_fields", "exact_match": "true"}
            search = partial(client.get, f"/api/v2/{obj}/search", params=params)
            items = (_retry_429(search, pause).json().get("data") or {}).get("items") or []
            if items:
                write = partial(client.patch, f"/api/v2/{obj}/{items[0]['item']['id']}", json=body)
            else:
                write = partial(client.post, f"/api/v2/{obj}", json=body)
            answer = _retry_429(write, pause)
            ids[(d.object, d.key)] = int(answer.json()["data"]["id"])


def _shape(shaper: Any, mapping: Mapping, d: Any, pause: float) -> dict[str, Any]:
    """The v2 body telecrm would send; its first calls resolve field keys and the pipeline."""
    from telecrm.connectors.base import RateLimited
    from telecrm.connectors.pipedrive_marked import MARKED_TEXT

    o = mapping.object(d.object)
    while True:
        try:
            props = {k: v for k, v in d.properties.items() if k not in ("person_id", "deal_id")}
            if o.crm_object in MARKED_TEXT:
                props.pop(o.id_property, None)
            else:
                props[o.id_property] = d.key
            body, _, problem = shaper._body(o.crm_object, props)
        except RateLimited:
            time.sleep(pause)
            continue
        if problem is not None:
            raise RuntimeError(f"naive body refused: {problem}")
        return dict(body)


def naive_dynamics(url: str, mapping: Mapping, records: list[Any], pause: float) -> None:
    """One `PATCH /api/data/v9.2/{set}({id column}='key')` upsert per record (no `$batch`), after
    one client-credentials token request to the sandbox's Entra endpoint."""
    from telecrm.connectors.dynamics import LOOKUP_TARGETS, odata_key

    tenant = DYNAMICS_ENV["TELECRM_DYNAMICS_TENANT_ID"]
    form = {
        "grant_type": "client_credentials",
        "client_id": DYNAMICS_ENV["TELECRM_DYNAMICS_CLIENT_ID"],
        "client_secret": DYNAMICS_ENV["TELECRM_DYNAMICS_CLIENT_SECRET"],
        "scope": f"{mapping.connection['org_url']}/.default",
    }
    lookups = {
        **LOOKUP_TARGETS,
        **{t.contact_lookup: "contacts" for t in mapping.custom_tables},
    }
    with httpx.Client(base_url=url, timeout=30) as client:
        token = client.post(f"/{tenant}/oauth2/v2.0/token", data=form).json()["access_token"]
        client.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
                "Accept": "application/json",
            }
        )
        for d in records:
            o = mapping.object(d.object)
            path = f"/api/data/v9.2/{o.crm_object}({odata_key(o.id_property, d.key)})"
            body = {  # lookups as nav@odata.bind, as the connector writes them
                (f"{k}@odata.bind" if isinstance(v, dict) else k): (
                    f"/{lookups[k]}({odata_key(*next(iter(v.items())))})"
                    if isinstance(v, dict)
                    else v
                )
                for k, v in d.properties.items()
            }
            _retry_429(partial(client.patch, path, json=body), pause)


def naive_client(kind: str) -> str:
    return {
        "hubspot": "hubspot-api-client 12 (one-input batch upsert + one association call per link)",
        "salesforce": "simple-salesforce 1.12 (sf.restful to sObject Collections, one record per call)",
        "pipedrive": "plain httpx (no official Python SDK in our deps): exact search on the id "
        "field, then POST or PATCH, per record; a deal's person_id in its own body",
        "dynamics": "plain httpx (no official Python SDK in our deps): one PATCH upsert by "
        "alternate key per record, no $batch",
    }[kind]
