"""POST /v1/events: one event or a batch of up to 1,000, signed the Standard Webhooks way."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from starlette.responses import Response

from telecrm.api.problems import Problem
from telecrm.bootstrap import Runtime
from telecrm.ingest.errors import IntakeRejected
from telecrm.ingest.group_commit import GroupCommitWriter
from telecrm.ingest.intake import Submission, WebhookReceipt, validate_batch
from telecrm.ingest.signatures import SignatureError

log = structlog.get_logger("telecrm.intake")


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(
                400, "bad_content_length", "Bad Content-Length", "Content-Length is not a number"
            )
        if int(declared) > limit:
            raise Problem(
                413,
                "body_too_large",
                "Body too large",
                f"the body is {declared} bytes; the limit is {limit} bytes",
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(
                413,
                "body_too_large",
                "Body too large",
                f"the body exceeds the limit of {limit} bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def events_of(document: Any, max_batch: int) -> list[Any]:
    if isinstance(document, list):
        batch = document
    elif isinstance(document, dict) and "events" in document and "type" not in document:
        batch = document["events"]
        if not isinstance(batch, list):
            raise Problem(400, "malformed", "Malformed batch", "`events` must be a JSON array")
    elif isinstance(document, dict):
        batch = [document]
    else:
        raise Problem(
            400,
            "malformed",
            "Malformed body",
            'the body must be an event object, a JSON array of events, or {"events": [...]}',
        )
    if not batch:
        raise Problem(400, "empty_batch", "Empty batch", "the batch holds no events")
    if len(batch) > max_batch:
        raise Problem(
            413,
            "batch_too_large",
            "Batch too large",
            f"the batch holds {len(batch)} events; the limit is {max_batch}",
        )
    return batch


EVENTS_OPENAPI: dict[str, Any] = {
    "summary": "Send one event or a batch of up to 1,000 events",
    "description": (
        "Signed the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature). "
        'Body: an event, a JSON array of events, or {"events": [...]}; JSON Schemas of every '
        "event type are in docs/events/. Every refusal is application/problem+json."
    ),
    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
    "responses": {
        "202": {"description": "Durably stored (duplicates counted, not stored twice)"},
        "400": {"description": "Malformed JSON or batch"},
        "401": {"description": "Missing, invalid or stale signature"},
        "409": {"description": "webhook-id replayed with a different body"},
        "413": {"description": "Body or batch over the limit"},
        "422": {"description": "Invalid events or unknown patient; nothing stored"},
    },
}


def build_router(runtime: Runtime, writer: GroupCommitWriter) -> APIRouter:
    router = APIRouter()
    verifier = runtime.verifier()
    settings = runtime.settings
    metrics = runtime.metrics

    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_limited(request, settings.max_body_bytes)
            try:
                webhook_id = verifier.verify(request.headers, body, now=runtime.clock.now())
            except SignatureError as exc:
                raise Problem(401, exc.reason, "Signature rejected", exc.detail) from None
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Problem(
                    400,
                    "malformed_json",
                    "Malformed JSON",
                    f"the body is not valid JSON ({exc.msg} at position {exc.pos})",
                ) from None
            batch = events_of(document, settings.max_batch_events)
            try:
                parsed = validate_batch(batch, now=runtime.clock.now())
                receipt = WebhookReceipt(webhook_id, hashlib.sha256(body).hexdigest())
                result = await asyncio.wrap_future(
                    writer.submit(Submission(parsed, "webhook", "platform", receipt))
                )
            except IntakeRejected as exc:
                raise Problem(
                    exc.status, exc.code, exc.title, exc.detail, errors=exc.errors
                ) from None
        except Problem as exc:
            metrics.requests_rejected.labels(reason=exc.code).inc()
            # Reason codes and counts only: the request's values may be PHI.
            log.info(
                "intake.rejected",
                status=exc.status,
                reason=exc.code,
                errors=len(exc.extra.get("errors", ())),
            )
            raise
        metrics.events_accepted.labels(source="webhook").inc(result.accepted)
        metrics.events_duplicate.labels(source="webhook").inc(result.duplicates)
        metrics.intake_seconds.observe(time.perf_counter() - started)
        return Response(
            orjson.dumps(result.as_json()), status_code=202, media_type="application/json"
        )

    # A plain Starlette route: FastAPI's request machinery (dependency solving, body handling)
    # cost a tenth of each request and this endpoint reads the raw body itself anyway.
    router.add_route("/v1/events", post_events, methods=["POST"], include_in_schema=False)
    return router
