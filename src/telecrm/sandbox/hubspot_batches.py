"""HubSpot's batch endpoints in the sandbox: HubSpot's JSON in, (status, JSON) out.

Upsert, update, create (400 or 207 multi-status), read, archive and default associations, over
the records of `hubspot_store.Account`, with HubSpot's per-input errors and envelopes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telecrm.sandbox.hubspot_store import (
    ASSOCIATION_TYPE_IDS,
    Account,
    PropertyError,
    Record,
    iso,
)

# -- batch operations: HubSpot's JSON in, (status, JSON) out ------------------------------------
BATCH_MAX = 100  # CRM v3 batch endpoints take at most 100 inputs (crm-apis.md §1.2)
Answer = tuple[int, dict[str, Any] | None]


@dataclass(slots=True)
class BatchContext:
    """What one batch call needs besides the account: the time, and how to order results."""

    now: float
    shuffle: Any  # Callable[[list[Any]], None]: the sandbox's seeded shuffle, or a no-op
    error: Any  # Callable[[str, str], dict[str, Any]]: a top-level HubSpot error body


def record_json(record: Record, names: Any = None) -> dict[str, Any]:
    keys = (
        set(record.properties)
        if names is None
        else set(names) | {"hs_object_id", "createdate", "lastmodifieddate"}
    )
    return {
        "id": record.id,
        "properties": {k: record.properties.get(k) for k in sorted(keys)},
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "archived": False,
    }


def batch_error(
    category: str, message: str, ids: list[str], details: Sequence[PropertyError] = ()
) -> dict[str, Any]:
    """One entry of a 207's `errors`: HubSpot's StandardError shape."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": ids},
        "errors": [
            {
                "message": d.message,
                "code": d.code,
                "in": d.name,
                "context": {"propertyName": [d.name]},
            }
            for d in details
        ],
        "links": {},
    }


def property_errors_error(record_id: str, errors: list[PropertyError]) -> dict[str, Any]:
    listing = [
        {"isValid": False, "message": e.message, "error": e.code, "name": e.name} for e in errors
    ]
    return batch_error(
        "VALIDATION_ERROR",
        f"Property values were not valid: {json.dumps(listing)}",
        [record_id],
        errors,
    )


def envelope(
    ctx: BatchContext, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok: int = 200
) -> Answer:
    ctx.shuffle(results)
    stamp = iso(ctx.now)
    body: dict[str, Any] = {
        "status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp,
        "requestedAt": stamp, "links": {},
    }  # fmt: skip
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        return 207, body
    return ok, body


def _inputs(ctx: BatchContext, body: Any) -> list[dict[str, Any]] | Answer:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        return 400, ctx.error(
            "Invalid input JSON: `inputs` must be a list of objects", "VALIDATION_ERROR"
        )
    if len(inputs) > BATCH_MAX:
        return 400, ctx.error(
            f"Batch input limit exceeded: {len(inputs)} inputs, the limit is {BATCH_MAX}",
            "VALIDATION_ERROR",
        )
    return inputs


def _id_property_problem(
    account: Account, ctx: BatchContext, obj: str, inputs: list[dict[str, Any]], *, required: bool
) -> Answer | None:
    seen: set[str] = set()
    for item in inputs:
        id_property = item.get("idProperty")
        if id_property is None and not required:
            id_property = "hs_object_id"
        if id_property != "hs_object_id" and not account.is_id_property(obj, str(id_property)):
            return 400, ctx.error(
                f"idProperty {id_property} is not a unique-value property of {obj}",
                "VALIDATION_ERROR",
            )
        if not isinstance(item.get("id"), str) or not isinstance(item.get("properties", {}), dict):
            return 400, ctx.error(
                "Invalid input JSON: each input needs a string `id` and `properties`",
                "VALIDATION_ERROR",
            )
        if item["id"] in seen:
            return 400, ctx.error(
                f"Duplicate IDs found in batch input: [{item['id']}]. IDs must be unique",
                "VALIDATION_ERROR",
            )
        seen.add(item["id"])
    return None


def batch_upsert(account: Account, ctx: BatchContext, obj: str, body: Any) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    refused = _id_property_problem(account, ctx, obj, inputs, required=True)
    if refused is not None:
        return refused
    results, errors = [], []
    for item in inputs:
        id_property, key = item["idProperty"], item["id"]
        clean, problems = account.check_values(
            obj, {**item.get("properties", {}), id_property: key}
        )
        record = account.find_by(obj, id_property, key)
        problems += account.unique_conflicts(obj, record.id if record else None, clean)
        if problems:
            errors.append(property_errors_error(key, problems))
            continue
        created = record is None
        if record is None:
            record = account.create(obj, clean, ctx.now)
        else:
            account.apply(record, obj, clean, ctx.now)
        result = record_json(record, clean)
        result["new"] = created
        if "objectWriteTraceId" in item:
            result["objectWriteTraceId"] = item["objectWriteTraceId"]
        results.append(result)
    return envelope(ctx, results, errors)


def batch_update(account: Account, ctx: BatchContext, obj: str, body: Any) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    refused = _id_property_problem(account, ctx, obj, inputs, required=False)
    if refused is not None:
        return refused
    results, errors, missing = [], [], []
    for item in inputs:
        id_property, key = item.get("idProperty", "hs_object_id"), item["id"]
        record = account.find_by(obj, id_property, key)
        if record is None:
            missing.append(key)
            continue
        clean, problems = account.check_values(obj, item.get("properties", {}))
        problems += account.unique_conflicts(obj, record.id, clean)
        if problems:
            errors.append(property_errors_error(key, problems))
            continue
        account.apply(record, obj, clean, ctx.now)
        result = record_json(record, [*clean, id_property])
        if "objectWriteTraceId" in item:
            result["objectWriteTraceId"] = item["objectWriteTraceId"]
        results.append(result)
    if missing:
        kind = obj[:-1].upper() if obj != "companies" else "COMPANY"
        errors.append(batch_error(
            "OBJECT_NOT_FOUND",
            f"Could not get some {kind} objects, they may be deleted or not exist. Check that ids are valid.",
            missing,
        ))  # fmt: skip
    return envelope(ctx, results, errors)


def batch_create(
    account: Account, ctx: BatchContext, obj: str, body: Any, *, multi_status: bool
) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    checked = []
    for index, item in enumerate(inputs):
        props = item.get("properties")
        if not isinstance(props, dict):
            return 400, ctx.error(
                "Invalid input JSON: each input needs `properties`", "VALIDATION_ERROR"
            )
        clean, problems = account.check_values(obj, props)
        problems += account.unique_conflicts(obj, None, clean)
        checked.append((index, item, clean, problems))
    failed = [c for c in checked if c[3]]
    if failed and not multi_status:  # without multi-status one bad input refuses the batch
        first = property_errors_error(str(failed[0][0]), failed[0][3])
        answer = ctx.error(first["message"], "VALIDATION_ERROR")
        answer["errors"] = first["errors"]
        answer["context"] = first["context"]
        return 400, answer
    results, errors = [], []
    for index, item, clean, problems in checked:
        if problems:
            errors.append(property_errors_error(str(index), problems))
            continue
        result = record_json(account.create(obj, clean, ctx.now), clean)
        if "objectWriteTraceId" in item:
            result["objectWriteTraceId"] = item["objectWriteTraceId"]
        results.append(result)
    return envelope(ctx, results, errors, ok=201)


def batch_read(account: Account, ctx: BatchContext, obj: str, body: Any) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    id_property = body.get("idProperty") or "hs_object_id"
    if id_property != "hs_object_id" and not account.is_id_property(obj, id_property):
        return 400, ctx.error(
            f"idProperty {id_property} is not a unique-value property of {obj}", "VALIDATION_ERROR"
        )
    names = body.get("properties") or []
    results, missing = [], []
    for item in inputs:
        record = account.find_by(obj, id_property, str(item.get("id")))
        if record is None:
            missing.append(str(item.get("id")))
        else:
            results.append(record_json(record, [*names, id_property]))
    errors = (
        [
            batch_error(
                "OBJECT_NOT_FOUND",
                "Could not get some objects, they may be deleted or not exist.",
                missing,
            )
        ]
        if missing
        else []
    )
    return envelope(ctx, results, errors)


def batch_archive(account: Account, ctx: BatchContext, obj: str, body: Any) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    for item in inputs:
        account.archive(obj, str(item.get("id")))
    return 204, None  # HubSpot answers 204 whether or not each record existed


def batch_associate(
    account: Account, ctx: BatchContext, from_obj: str, to_obj: str, body: Any
) -> Answer:
    inputs = _inputs(ctx, body)
    if isinstance(inputs, tuple):
        return inputs
    type_id = ASSOCIATION_TYPE_IDS.get((from_obj, to_obj), 1)
    results, errors = [], []
    for item in inputs:
        from_id = str((item.get("from") or {}).get("id"))
        to_id = str((item.get("to") or {}).get("id"))
        if account.associate(from_obj, from_id, to_obj, to_id):
            results.append({
                "from": {"id": from_id}, "to": {"id": to_id},
                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
            })  # fmt: skip
        else:
            error = batch_error(
                "VALIDATION_ERROR",
                f"One or more objects do not exist: {from_obj} {from_id}, {to_obj} {to_id}",
                [from_id],
            )
            error["context"] = {"fromObjectId": [from_id], "toObjectId": [to_id]}
            errors.append(error)
    return envelope(ctx, results, errors)
