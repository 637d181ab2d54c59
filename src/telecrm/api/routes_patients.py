"""`/v1/patients`: one profile, search by email or phone, a timeline, the accounting of disclosures,
the right-of-access export.

Every read is audited (who, which patient, which sensitive fields, why). Search is a POST with a
JSON body, as FHIR's `POST _search` is, so an email or phone never sits in a URL, where access
logs and proxies would keep it; it goes through the blind index, never a scan.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select
from starlette.responses import HTMLResponse, JSONResponse, Response

from telecrm.api.access import BREAK_GLASS_HEADER, REASON_HEADER, AccessControl, PatientAccess
from telecrm.api.pagination import (
    Cursor,
    PageSize,
    decode_cursor,
    encode_cursor,
    invalid_cursor,
)
from telecrm.api.patient_views import (
    EVENT,
    STAGE,
    live_profile,
    profile_json,
    sensitive,
    timeline_page,
)
from telecrm.api.problems import Problem
from telecrm.api.routes_events import read_limited
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import to_micros
from telecrm.domain.events import ID_PATTERN
from telecrm.domain.identity import InvalidIdentity, normalise_email, normalise_phone
from telecrm.profiles.tables import profiles
from telecrm.security.roles import Permission, may

MAX_SEARCH_BODY = 4096
MAX_MATCHES = 10  # an email or phone is shared by a handful of profiles at most
PatientId = Annotated[str, Path(pattern=ID_PATTERN, description="The platform's patient id")]

_READ_HEADERS = (
    f"Care coordinators send `{REASON_HEADER}: <why>` (3-64 characters, audited), or "
    f"`{BREAK_GLASS_HEADER}: <why>` for an emergency read of every field (audited and alerted)."
)
_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token (problem+json, WWW-Authenticate: Bearer)"},
    403: {"description": "The client's role may not do this"},
    422: {"description": "A parameter, the reason or the cursor is invalid"},
}


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(min_length=3, max_length=254)] | None = None
    phone: Annotated[str, Field(min_length=3, max_length=32)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give exactly one of email or phone")
        return self


def _unknown_patient() -> Problem:
    return Problem(404, "unknown_patient", "Unknown patient", "no patient has this id")


async def search_body(request: Request) -> SearchRequest:
    """The search body, read with a size limit and validated; values are never echoed back."""
    body = await read_limited(request, MAX_SEARCH_BODY)
    try:
        return SearchRequest.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise Problem(422, "invalid_request", "Invalid request", "the body is not JSON") from None
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "body", "msg": e["msg"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise Problem(
            422,
            "invalid_request",
            "Invalid request",
            'the body must be {"email": ...} or {"phone": ...}',
            errors=errors,
        ) from None


def build_patients_router(runtime: Runtime, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/v1/patients", tags=["patients"], responses=_REFUSALS)
    reader = access.patient_access(Permission.PATIENT_READ)
    searcher = access.patient_access(Permission.PATIENT_SEARCH)
    compliance = access.patient_access(Permission.DISCLOSURES_READ)

    def cipher_for(who: PatientAccess) -> Any:
        # Keys before any transaction (opening the keyring may need its own).
        return runtime.cipher() if who.sees_identifying_values else None

    @router.post(
        "/search",
        summary="Find patients by email or phone (exact, through the blind index)",
        description='Body: {"email": "..."} or {"phone": "..."}. ' + _READ_HEADERS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SearchRequest.model_json_schema()}},
            }
        },
    )
    def search(
        who: PatientAccess = Depends(searcher), body: SearchRequest = Depends(search_body)
    ) -> JSONResponse:
        index = runtime.blind_index()
        try:
            if body.email is not None:
                column, key_field = profiles.c.email_bidx, "email"
                digest = index.email(normalise_email(body.email))
            else:
                column, key_field = profiles.c.phone_bidx, "phone"
                digest = index.phone(normalise_phone(str(body.phone)))
        except InvalidIdentity as exc:
            raise Problem(422, f"invalid_{key_field}", "Invalid search", str(exc)) from None
        shows_profile = may(who.principal.role, Permission.PATIENT_READ)
        cipher = cipher_for(who) if shows_profile else None
        with runtime.engine.begin() as conn:
            rows = conn.execute(
                select(profiles)
                .where(column == digest, profiles.c.merged_into.is_(None))
                .order_by(profiles.c.patient_key)
                .limit(MAX_MATCHES)
            ).all()
            found = [
                profile_json(row, cipher, who.fields)
                if shows_profile
                else {"patient_id": row.patient_key}
                for row in rows
            ]
            shown = {name for p in found for name in p.get("fields", {})}
            access.record_read(
                conn,
                who,
                record_type="profile",
                record_ids=[p["patient_id"] for p in found],
                fields=[key_field, *sensitive(sorted(shown - {key_field}))],
                outcome="ok" if found else "not_found",
            )
        return JSONResponse({"patients": found})

    @router.get(
        "/{patient_id}",
        summary="One patient's profile: only the fields the client's role may see",
        description=_READ_HEADERS,
    )
    def get_patient(patient_id: PatientId, who: PatientAccess = Depends(reader)) -> JSONResponse:
        cipher = cipher_for(who)
        with runtime.engine.begin() as conn:
            row = live_profile(conn, patient_id)
            body = None if row is None else profile_json(row, cipher, who.fields)
            access.record_read(
                conn,
                who,
                record_type="profile",
                record_ids=[patient_id],
                fields=sensitive(list(body["fields"])) if body else [],
                outcome="ok" if body else "not_found",
            )
        if body is None:
            raise _unknown_patient()
        return JSONResponse(body)

    @router.get(
        "/{patient_id}/timeline",
        summary="A patient's events and stage changes, oldest first (keyset pages)",
        description="Event types and times for every role that may read patients; an event's "
        "data only for a role that may see every field the event sets. " + _READ_HEADERS,
    )
    def timeline(
        patient_id: PatientId,
        cursor: str | None = Cursor,
        limit: int = PageSize,
        who: PatientAccess = Depends(reader),
    ) -> JSONResponse:
        after = decode_cursor(cursor, 3)
        if after is not None and after[1] not in (EVENT, STAGE):
            raise invalid_cursor()
        cipher = cipher_for(who)
        with runtime.engine.begin() as conn:
            row = live_profile(conn, patient_id)
            items: list[dict[str, Any]] = []
            next_key = None
            shown: set[str] = set()
            if row is not None:
                items, next_key, shown = timeline_page(
                    conn,
                    patient_id,
                    after=after,
                    limit=limit,
                    cipher=None if row.deleted else cipher,
                    allowed=who.fields,
                )
            access.record_read(
                conn,
                who,
                record_type="events",
                record_ids=[patient_id],
                fields=sensitive(sorted(shown)),
                outcome="ok" if row is not None else "not_found",
            )
        if row is None:
            raise _unknown_patient()
        return JSONResponse(
            {
                "patient_id": patient_id,
                "items": items,
                "next_cursor": encode_cursor(*next_key) if next_key else None,
            }
        )

    @router.get(
        "/{patient_id}/disclosures",
        summary="The accounting of disclosures of one patient (compliance), oldest first",
        description="Who received which fields of the patient, when and why: field names, "
        "data point titles and destinations, never a value.",
    )
    def patient_disclosures(
        patient_id: PatientId,
        cursor: str | None = Cursor,
        limit: int = PageSize,
        who: PatientAccess = Depends(compliance),
    ) -> JSONResponse:
        from telecrm.security.disclosures import disclosures_for

        after = decode_cursor(cursor, 2)
        with runtime.engine.begin() as conn:
            known = live_profile(conn, patient_id) is not None
            listed = [
                d
                for d in disclosures_for(conn, patient_id)
                if after is None or (to_micros(d.at), d.id) > after
            ]
            page = listed[:limit]
            access.record_read(
                conn,
                who,
                record_type="disclosures",
                record_ids=[patient_id],
                fields=[],
                outcome="ok" if known or listed else "not_found",
            )
        if not known and not listed and after is None:
            raise _unknown_patient()
        last = page[-1] if len(listed) > limit else None
        return JSONResponse(
            {
                "patient_id": patient_id,
                "disclosures": [d.to_json() for d in page],
                "next_cursor": encode_cursor(to_micros(last.at), last.id) if last else None,
            }
        )

    exporter = access.patient_access(Permission.EXPORT)

    @router.get(
        "/{patient_id}/export",
        summary="A patient's whole record for a right-of-access request (compliance)",
        description="The designated record set, decrypted: profile, facts and scores, records, "
        "the event timeline, stage history, messages, consent, journeys and disclosures "
        "(45 CFR 164.524). `format=json` (schema_version 1) or `format=html`, a page the "
        f"patient can be handed. Needs `{REASON_HEADER}` (e.g. the request's number); audited "
        "as an export.",
    )
    def patient_export(
        request: Request,
        patient_id: PatientId,
        format: Literal["json", "html"] = Query("json"),
        who: PatientAccess = Depends(exporter),
    ) -> Response:
        from telecrm.security.export import export_patient, render_export_html

        if request.headers.get(REASON_HEADER) is None:  # checked by the dependency when sent
            raise Problem(
                422,
                "reason_required",
                "Reason required",
                f"an export must say why: send {REASON_HEADER}: <3 to 64 characters>",
            )
        cipher = runtime.cipher()  # keys before the transaction
        with runtime.engine.begin() as conn:
            if live_profile(conn, patient_id) is None:
                access.record_read(
                    conn, who, record_type="patient", record_ids=[patient_id], fields=[],
                    outcome="not_found",
                )  # fmt: skip
                missing = True
            else:
                missing = False
                record = export_patient(
                    conn,
                    cipher,
                    patient_id,
                    actor=who.principal.actor[:128],
                    reason=who.purpose,
                    now_us=to_micros(runtime.clock.now()),
                )
        if missing:
            raise _unknown_patient()
        headers = {"Cache-Control": "no-store"}
        if format == "html":
            html = render_export_html(record, organisation=runtime.settings.brand_name)
            return HTMLResponse(html, headers=headers)
        return Response(orjson.dumps(record), media_type="application/json", headers=headers)

    return router
