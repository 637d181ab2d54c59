"""Pipedrive activities and notes: records with no searchable id field, found again by a marker.

Pipedrive's search covers persons, organizations and deals only (docs/research crm-apis.md §3.2),
and a note has no custom fields at all. So the external id travels as a marker,
`[telecrm:<id field>:<key>]`, at the end of the activity's private `note` or the note's `content`
(never `public_description`, which goes out to calendar guests). Before creating a record whose
Pipedrive id it does not know, the connector lists its parent's activities (v2
`GET /api/v2/activities?person_id=`) or notes (v1 `GET /api/v1/notes?person_id=`) once and
remembers every marker in them: a record created just before a crash, whose id never reached the
sync store, is found there and updated instead of duplicated. A parent this connector created
itself has nothing of ours yet, so its first children cost no list at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from telecrm.connectors.base import RecordOutcome, TransientFailure, WriteMode

MARKED_TEXT = {"activities": "note", "notes": "content"}  # where the marker rides
PATHS = {"activities": "/api/v2/activities", "notes": "/api/v1/notes"}  # v2 / v1 (§3.2)
UPDATE_VERB = {"activities": "PATCH", "notes": "PUT"}  # v2 PATCH, v1 PUT (§3.2)
PARENTS = ("person_id", "deal_id", "org_id")  # list filters of both endpoints, preferred first
LIST_PAGE = 500  # v2 `limit` maximum 500; v1 notes take the same (§3.2: limit up to 500)
MARKER = re.compile(r"\[telecrm:([a-z][a-z0-9_]*):([^\]\s]+)\]")

Call = Callable[..., httpx.Response]
Outcome = Callable[
    ..., RecordOutcome
]  # the connector's `_outcome(key, slot, response, names, created=)`


def marker(id_property: str, key: str) -> str:
    return f"[telecrm:{id_property}:{key}]"


def with_marker(text: Any, id_property: str, key: str) -> str:
    """`text` (HTML or plain) with the record's marker as its last line."""
    head = "" if text in (None, "") else f"{text}\n"
    return f"{head}{marker(id_property, key)}"


class MarkedRecords:
    """Writes of activities and notes for one connector; shares its id map and its `_call`."""

    def __init__(self, call: Call, ids: dict[tuple[str, str], str], outcome: Outcome) -> None:
        self._call = call
        self._ids = ids  # (obj, "field:key") -> Pipedrive id, the connector's own map
        self._outcome = outcome
        self._listed: set[tuple[str, str, int]] = set()  # (obj, parent field, parent id) read

    def parent_created(self, field: str, parent_id: int) -> None:
        """A parent this connector just created holds no activity or note of ours yet."""
        for obj in MARKED_TEXT:
            self._listed.add((obj, field, parent_id))

    def write(
        self, obj: str, id_property: str, key: str, crm_id: str | None,
        body: dict[str, Any], names: dict[str, str], mode: WriteMode,
    ) -> RecordOutcome:  # fmt: skip
        text = MARKED_TEXT[obj]
        body = {**body, text: with_marker(body.get(text), id_property, key)}
        slot = (obj, f"{id_property}:{key}")
        parent = next(((f, body[f]) for f in PARENTS if isinstance(body.get(f), int)), None)
        crm_id = crm_id or self._ids.get(slot)
        if crm_id is None and parent is not None:
            self._read_markers(obj, *parent)
            crm_id = self._ids.get(slot)
        if crm_id is not None:
            response = self._call(
                UPDATE_VERB[obj], f"{PATHS[obj]}/{crm_id}", f"{obj}.update", json=body,
                ok=(200, 400, 404, 410),
            )  # fmt: skip
            if response.status_code not in (404, 410):
                return self._outcome(key, slot, response, names, created=False)
            self._ids.pop(slot, None)  # deleted in Pipedrive since: create it again
            if mode == "update":
                return RecordOutcome(key, "missing", code=f"HTTP_{response.status_code}")
        if mode == "update":
            return RecordOutcome(key, "missing")
        if parent is None:  # nowhere to look for it again: refuse rather than risk a duplicate
            return RecordOutcome(key, "rejected", code="NO_PARENT", detail="fields: person_id")
        listed = (obj, *parent)
        self._listed.discard(listed)  # if the answer is lost, the record may exist: list again
        response = self._call("POST", PATHS[obj], f"{obj}.create", json=body, ok=(200, 201, 400))
        outcome = self._outcome(key, slot, response, names, created=True)
        if outcome.outcome == "accepted":
            self._listed.add(listed)  # what we did not create there is still what we read
        return outcome

    def _read_markers(self, obj: str, field: str, parent_id: int) -> None:
        """Remember the Pipedrive id of every marked record of one parent, once per parent."""
        listed = (obj, field, parent_id)
        if listed in self._listed:
            return
        v1 = obj == "notes"
        cursor: str | None = "0"
        while cursor is not None:
            params = {field: str(parent_id), "limit": str(LIST_PAGE),
                      ("start" if v1 else "cursor"): cursor}  # fmt: skip
            body = _json(self._call("GET", PATHS[obj], f"{obj}.list", params=params))
            items = body.get("data")
            if not isinstance(items, list):
                raise TransientFailure("UNREADABLE_RESPONSE", f"{obj}.list")
            for item in items:
                text = item.get(MARKED_TEXT[obj]) if isinstance(item, dict) else None
                for m in MARKER.finditer(text if isinstance(text, str) else ""):
                    self._ids.setdefault((obj, f"{m.group(1)}:{m.group(2)}"), str(item["id"]))
            cursor = _next_page(body.get("additional_data") or {}, v1)
        self._listed.add(listed)


def _next_page(additional: dict[str, Any], v1: bool) -> str | None:
    if not v1:
        nxt = additional.get("next_cursor")
        return str(nxt) if nxt else None
    page = additional.get("pagination") or {}
    return str(page["next_start"]) if page.get("more_items_in_collection") else None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
