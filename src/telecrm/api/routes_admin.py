"""`/v1/` reads that name no patient field: sync status, dead letters, journeys, segments, funnels,
the audit log and API clients. Aggregates, configuration, ids and codes; never a field value."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select
from starlette.responses import JSONResponse

from telecrm.api.access import AccessControl, PatientAccess
from telecrm.api.pagination import Cursor, PageSize, decode_cursor, encode_cursor
from telecrm.api.problems import Problem
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import from_micros, to_micros
from telecrm.domain.events import ID_PATTERN
from telecrm.journeys.segments import load_segments
from telecrm.journeys.stats import journey_stats
from telecrm.profiles.views import stats
from telecrm.security.clients import list_clients
from telecrm.security.roles import Permission, visible_fields
from telecrm.store.engine import read_only
from telecrm.sync.plan import status_of
from telecrm.sync.tables import sync_dead_letters

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,59}$"
DESTINATION_PATTERN = r"^[A-Za-z0-9_:.\-]{1,40}$"
_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token (problem+json, WWW-Authenticate: Bearer)"},
    403: {"description": "The client's role may not do this"},
    422: {"description": "A parameter or the cursor is invalid"},
}


def _iso(us: int | None) -> str | None:
    return None if us is None else from_micros(int(us)).isoformat()


def build_admin_router(runtime: Runtime, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=_REFUSALS)

    def require(permission: Permission) -> Any:
        return Depends(access.require(permission))

    @router.get("/sync/status", tags=["sync"], summary="Where each CRM destination stands")
    def sync_status(_: Any = require(Permission.SYNC_READ)) -> JSONResponse:
        now_us = to_micros(runtime.clock.now())
        out = []
        for mapping in runtime.mappings():
            s = status_of(runtime.engine, mapping, now_us)
            out.append(
                {
                    "destination": s.destination,
                    "connector": mapping.connector,
                    "baa": mapping.baa,
                    "dirty": s.dirty,
                    "due": s.due,
                    "in_flight": s.leased,
                    "records": s.records,
                    "open_dead_letters": s.dead_letters,
                    "api_calls": s.calls,
                    "limit_refusals": s.refusals,
                    "paused_until": _iso(s.paused_until_us) if s.paused_until_us > now_us else None,
                    "crm_usage": {"used": s.crm_usage[0], "max": s.crm_usage[1]}
                    if s.crm_usage
                    else None,
                }
            )
        return JSONResponse({"destinations": out})

    @router.get(
        "/sync/dead-letters",
        tags=["sync"],
        summary="Records a CRM refused or telecrm gave up on: codes and ids, never values",
    )
    def dead_letters(
        destination: Annotated[str | None, Query(pattern=DESTINATION_PATTERN)] = None,
        status: Literal["open", "retried", "resolved", "all"] = "open",
        cursor: str | None = Cursor,
        limit: int = PageSize,
        _: Any = require(Permission.SYNC_READ),
    ) -> JSONResponse:
        after = decode_cursor(cursor, 1)
        letters = sync_dead_letters.c
        query = select(sync_dead_letters).order_by(letters.id).limit(limit + 1)
        if destination is not None:
            query = query.where(letters.destination == destination)
        if status != "all":
            query = query.where(letters.status == status)
        if after is not None:
            query = query.where(letters.id > after[0])
        with read_only(runtime.engine).connect() as conn:
            rows = conn.execute(query).all()
        page = rows[:limit]
        return JSONResponse(
            {
                "dead_letters": [
                    {
                        "id": r.id,
                        "destination": r.destination,
                        "object": r.object,
                        "record_key": r.record_key,
                        "patient_id": r.patient_key,
                        "code": r.code,
                        "detail": r.detail,
                        "attempts": r.attempts,
                        "status": r.status,
                        "first_failed_at": _iso(r.first_failed_us),
                        "last_failed_at": _iso(r.last_failed_us),
                    }
                    for r in page
                ],
                "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None,
            }
        )

    @router.get("/journeys", tags=["journeys"], summary="The journeys that run, and their version")
    def journeys(_: Any = require(Permission.JOURNEYS_READ)) -> JSONResponse:
        from telecrm.journeys.registry import JourneyRegistry

        loaded = runtime.journeys().registry.loaded
        with read_only(runtime.engine).connect() as conn:
            versions = JourneyRegistry.latest_versions(conn)
        return JSONResponse(
            {
                "journeys": [
                    {
                        "name": name,
                        "version": versions.get(name),
                        "digest": lj.digest[:12],
                        "definition": lj.journey.model_dump(
                            mode="json", by_alias=True, exclude_none=True
                        ),
                    }
                    for name, lj in sorted(loaded.items())
                ]
            }
        )

    @router.get(
        "/journeys/{name}/stats",
        tags=["journeys"],
        summary="Entries by group, conversion against the holdout, exits, messages per step",
    )
    def journey_statistics(
        name: Annotated[str, Path(pattern=NAME_PATTERN)],
        _: Any = require(Permission.JOURNEYS_READ),
    ) -> JSONResponse:
        with read_only(runtime.engine).connect() as conn:
            s = journey_stats(conn, name)
        if not s.groups and name not in runtime.journeys().registry.loaded:
            raise Problem(404, "unknown_journey", "Unknown journey", "no journey has this name")
        return JSONResponse(s.as_json())

    @router.get("/segments", tags=["journeys"], summary="Named segments journeys filter on")
    def segments(_: Any = require(Permission.SEGMENTS_READ)) -> JSONResponse:
        found = load_segments(runtime.settings.journeys_dir)
        return JSONResponse(
            {
                "segments": [
                    {
                        "name": name,
                        "conditions": [
                            c.model_dump(mode="json", by_alias=True, exclude_none=True)
                            for c in conditions
                        ],
                    }
                    for name, conditions in sorted(found.items())
                ]
            }
        )

    @router.get(
        "/funnels", tags=["analytics"], summary="Patients per lifecycle stage and the 4 funnels"
    )
    def funnels(_: Any = require(Permission.FUNNELS_READ)) -> JSONResponse:
        with read_only(runtime.engine).connect() as conn:
            s = stats(conn)
        return JSONResponse(
            {
                "patients_by_stage": s.patients_by_stage,
                "funnels": [
                    {
                        "name": f.funnel.name,
                        "from": f.funnel.start,
                        "to": f.funnel.end,
                        "entered": f.entered,
                        "converted": f.converted,
                        "rate": f.rate,
                    }
                    for f in s.funnels
                ],
            }
        )

    @router.get(
        "/audit",
        tags=["compliance"],
        summary="Audit entries, newest first: who read, wrote or disclosed what, and why",
    )
    def audit(
        record_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        cursor: str | None = Cursor,
        limit: int = PageSize,
        who: PatientAccess = Depends(access.patient_access(Permission.AUDIT_READ)),
    ) -> JSONResponse:
        from telecrm.security.audit import audit_rows

        before = decode_cursor(cursor, 1)
        with runtime.engine.begin() as conn:
            rows = audit_rows(
                conn, record_id=record_id, limit=limit + 1, before_seq=before[0] if before else None
            )
            access.record_read(
                conn,
                who,
                record_type="audit_log",
                record_ids=[record_id] if record_id else [],
                fields=[],
            )
        page = rows[:limit]
        entries = [{k: v for k, v in r.items() if k != "at_us"} for r in page]
        return JSONResponse(
            {
                "entries": entries,
                "next_cursor": encode_cursor(page[-1]["seq"]) if len(rows) > limit else None,
            }
        )

    @router.get("/clients", tags=["admin"], summary="API clients and their roles (no secrets)")
    def clients(_: Any = require(Permission.CLIENTS_READ)) -> JSONResponse:
        with read_only(runtime.engine).connect() as conn:
            found = list_clients(conn)
        return JSONResponse(
            {
                "clients": [
                    {
                        "client_id": c.client_id,
                        "name": c.name,
                        "role": c.role.value,
                        "created_at": _iso(c.created_us),
                        "disabled": c.disabled,
                        "visible_fields": sorted(visible_fields(c.role)),
                    }
                    for c in found
                ]
            }
        )

    return router
