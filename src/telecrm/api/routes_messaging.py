"""Provider callbacks and the platform's message requests.

- `POST /webhooks/sendgrid`: the Signed Event Webhook (ECDSA P-256 over timestamp + raw body);
- `POST /webhooks/twilio/status` and `/webhooks/twilio/inbound`: `X-Twilio-Signature`
  (HMAC-SHA1 over the public URL and the sorted form parameters);
- `POST /v1/messages`: the platform asks for one message (password reset, two-factor code, or
  any template), signed like `/v1/events`. Its secret travels in memory only.

A refused callback answers problem+json 401/400/413 and changes nothing; a replayed one answers
200 and changes nothing. Reason codes only in logs: the payloads carry addresses and bodies.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from telecrm.api.problems import Problem
from telecrm.api.routes_events import read_limited
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import to_micros
from telecrm.ingest.signatures import SignatureError
from telecrm.messaging.keywords import twiml
from telecrm.messaging.planner import PlanRequest
from telecrm.messaging.provider_events import WebhookRejected
from telecrm.messaging.sendgrid_webhook import (
    load_public_key,
    parse_sendgrid_events,
    verify_sendgrid_signature,
)
from telecrm.messaging.twilio_webhook import (
    parse_twilio_inbound,
    parse_twilio_status,
    verify_twilio_signature,
)
from telecrm.messaging.wiring import INBOUND_PATH, STATUS_PATH
from telecrm.profiles.tables import profiles

log = structlog.get_logger("telecrm.messaging")
MAX_CALLBACK_BYTES = 2 * 1024 * 1024
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{4,12}$")] | None = None
    reset_url: Annotated[str, Field(pattern=r"^https://\S{1,1900}$")] | None = None


class MessageRequest(BaseModel):
    """What the platform may ask for: one template to one patient, with an idempotency key."""

    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")]
    patient_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")]
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]
    channel: Literal["email", "sms"]
    secret: SecretIn | None = None


_REFUSALS = {
    "400": {"description": "Malformed body (problem+json); nothing changed"},
    "401": {"description": "Missing, forged or stale signature (problem+json); nothing changed"},
    "413": {"description": "Body over the limit"},
}
MESSAGING_OPENAPI: dict[str, dict[str, Any]] = {
    "/v1/messages": {"post": {
        "summary": "Ask for one message to one patient (e.g. a password reset or two-factor code)",
        "description": "Signed like /v1/events. A security template needs secret.code or "
        "secret.reset_url; the secret is held in memory only, never stored. The same request_id "
        "plans one message. Consent and, except for security messages, quiet hours and caps apply.",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": MessageRequest.model_json_schema()}}},
        "responses": {"202": {"description": "Planned: message_id and status (queued, deferred, "
                                             "suppressed or duplicate)"},
                      "401": _REFUSALS["401"], "404": {"description": "Unknown patient"},
                      "422": {"description": "Invalid request, unknown template, secret missing "
                                             "or not allowed"}},
    }},
    "/webhooks/sendgrid": {"post": {
        "summary": "SendGrid's Signed Event Webhook (ECDSA P-256 over timestamp + raw body)",
        "responses": {"200": {"description": "Applied once: received, applied, duplicates, "
                                             "unknown_messages, events"}, **_REFUSALS},
    }},
    STATUS_PATH: {"post": {
        "summary": "Twilio status callbacks (X-Twilio-Signature over TELECRM_PUBLIC_URL + path)",
        "responses": {"200": {"description": "Applied once"}, **_REFUSALS},
    }},
    INBOUND_PATH: {"post": {
        "summary": "Twilio inbound SMS: STOP/START/HELP, revocations, survey answers, replies",
        "responses": {"200": {"description": "TwiML: a reply or none",
                              "content": {"application/xml": {}}}, **_REFUSALS},
    }},
}  # fmt: skip


def _rejected(runtime: Runtime, provider: str, exc: WebhookRejected) -> Problem:
    runtime.metrics.provider_callbacks.labels(provider, "rejected").inc()
    log.info("callback.rejected", provider=provider, reason=exc.reason)
    status = 401 if "signature" in exc.reason or "timestamp" in exc.reason else 400
    return Problem(status, exc.reason, "Callback rejected", exc.detail)


def build_messaging_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    settings = runtime.settings
    metrics = runtime.metrics
    public_base = settings.public_url.rstrip("/")
    sendgrid_key = (
        load_public_key(settings.sendgrid_webhook_public_key)
        if settings.sendgrid_webhook_public_key
        else None
    )

    async def sendgrid_events(request: Request) -> Response:
        body = await read_limited(request, MAX_CALLBACK_BYTES)
        if sendgrid_key is None:
            raise Problem(
                401,
                "no_public_key_configured",
                "Callback rejected",
                "set TELECRM_SENDGRID_WEBHOOK_PUBLIC_KEY to the Signed Event Webhook's key",
            )
        try:
            verify_sendgrid_signature(
                sendgrid_key,
                request.headers.get(SIGNATURE),
                request.headers.get(TIMESTAMP),
                body,
                now=runtime.clock.now().timestamp(),
            )
            reports = parse_sendgrid_events(body)
        except WebhookRejected as exc:
            raise _rejected(runtime, "sendgrid", exc) from None
        result = await run_in_threadpool(runtime.messaging().tracker.apply_reports, reports)
        _count(runtime, "sendgrid", result.applied, result.duplicates, result.unknown_messages)
        return JSONResponse(result.as_json())

    async def twilio_params(request: Request, path: str) -> dict[str, str]:
        body = await read_limited(request, MAX_CALLBACK_BYTES)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _rejected(
                runtime, "twilio", WebhookRejected("malformed_body", "the form is not UTF-8")
            ) from None
        params = dict(pairs)
        url = public_base + path + (f"?{request.url.query}" if request.url.query else "")
        try:
            verify_twilio_signature(
                runtime.messaging().twilio_tokens(settings),
                url,
                params,
                request.headers.get("X-Twilio-Signature"),
            )
        except WebhookRejected as exc:
            raise _rejected(runtime, "twilio", exc) from None
        return params

    async def twilio_status(request: Request) -> Response:
        params = await twilio_params(request, STATUS_PATH)
        try:
            report = parse_twilio_status(params, runtime.clock.now())
        except WebhookRejected as exc:
            raise _rejected(runtime, "twilio", exc) from None
        result = await run_in_threadpool(runtime.messaging().tracker.apply_reports, [report])
        _count(runtime, "twilio", result.applied, result.duplicates, result.unknown_messages)
        return JSONResponse(result.as_json())

    async def twilio_inbound(request: Request) -> Response:
        params = await twilio_params(request, INBOUND_PATH)
        try:
            sms = parse_twilio_inbound(params, runtime.clock.now())
        except WebhookRejected as exc:
            raise _rejected(runtime, "twilio", exc) from None
        outcome = await run_in_threadpool(runtime.messaging().tracker.apply_inbound, sms)
        metrics.provider_callbacks.labels("twilio", f"inbound_{outcome.action}").inc()
        log.info("sms.inbound", action=outcome.action)
        return Response(twiml(outcome.reply), media_type="application/xml")

    async def post_message(request: Request) -> Response:
        body = await read_limited(request, 64 * 1024)
        try:
            runtime.verifier().verify(request.headers, body, now=runtime.clock.now())
        except SignatureError as exc:
            raise Problem(401, exc.reason, "Signature rejected", exc.detail) from None
        try:
            req = MessageRequest.model_validate(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise Problem(400, "malformed_json", "Malformed JSON", "the body is not JSON") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Problem(
                422, "invalid_request", "Invalid message request", f"{where}: {first['msg']}"
            ) from None
        result = await run_in_threadpool(_plan_one, runtime, req)
        return JSONResponse(result, status_code=202)

    router.add_route(
        "/webhooks/sendgrid", sendgrid_events, methods=["POST"], include_in_schema=False
    )
    router.add_route(STATUS_PATH, twilio_status, methods=["POST"], include_in_schema=False)
    router.add_route(INBOUND_PATH, twilio_inbound, methods=["POST"], include_in_schema=False)
    router.add_route("/v1/messages", post_message, methods=["POST"], include_in_schema=False)
    return router


def _count(runtime: Runtime, provider: str, applied: int, duplicates: int, unknown: int) -> None:
    c = runtime.metrics.provider_callbacks
    for result, n in (
        ("applied", applied),
        ("duplicate", duplicates),
        ("unknown_message", unknown),
    ):
        if n:
            c.labels(provider, result).inc(n)


def _plan_one(runtime: Runtime, req: MessageRequest) -> dict[str, Any]:
    from sqlalchemy import select

    from telecrm.messaging.templates import UnknownTemplate

    parts = runtime.messaging()
    try:
        info = parts.catalog.get(req.template, req.channel)
    except UnknownTemplate:
        raise Problem(
            422,
            "unknown_template",
            "Unknown template",
            f"no {req.channel} template named {req.template}",
        ) from None
    secret = req.secret.model_dump(exclude_none=True) if req.secret else {}
    if info.purpose == "security" and not secret:
        raise Problem(
            422,
            "secret_required",
            "Secret required",
            f"{req.template} needs secret.code or secret.reset_url",
        ) from None
    if info.purpose != "security" and secret:
        raise Problem(
            422,
            "secret_not_allowed",
            "Secret not allowed",
            "only security templates carry a secret",
        ) from None
    cipher, index = runtime.cipher(), runtime.blind_index()
    started = time.perf_counter()
    with runtime.engine.begin() as conn:
        known = conn.execute(
            select(profiles.c.patient_key).where(profiles.c.patient_key == req.patient_id)
        ).first()
        if known is None:
            raise Problem(
                404,
                "unknown_patient",
                "Unknown patient",
                "no profile with this patient id (send patient.registered first)",
            )
        report = parts.planner.plan(
            conn,
            [
                PlanRequest(
                    req.patient_id,
                    req.template,
                    req.channel,
                    "api",
                    f"api:{req.request_id}:{req.template}:{req.channel}",
                )
            ],
            cipher,
            index,
        )
    message_id = report.message_ids[0] if report.message_ids else None
    if message_id is None:
        return {"status": "duplicate", "detail": "this request_id was planned before"}
    if secret:
        parts.vault.put(message_id, secret)
    runtime.work_available.set()
    log.info(
        "message.requested",
        template=req.template,
        channel=req.channel,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    status = "suppressed" if report.suppressed else ("deferred" if report.deferred else "queued")
    return {"message_id": message_id, "status": status, "at_us": to_micros(runtime.clock.now())}
