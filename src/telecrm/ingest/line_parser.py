"""Parsing an import file's lines into storable events, in this process or in a helper process.

Validation is half of a bulk import's CPU time, and it needs no database, so on a large file one
helper process parses the next chunk while this one stores the current one. What crosses between
the processes is plain data (`ParsedEvent`, `Rejection`): the payload is already the JSON the
event log stores, so the storing side never validates or serialises an event again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from telecrm.domain.events import Event, EventRejected, parse_event


class ParsedEvent(NamedTuple):
    """An event in the form the log stores it. A named tuple, so a source's helper process can
    send it as the plain tuple of its fields (`tuple(e)`), rebuilt with
    `tuple.__new__(ParsedEvent, t)`: no Python code per event on either side of the pipe."""

    id: str
    type: str
    version: int
    occurred_us: int
    patient_id: str | None
    anonymous_id: str | None
    payload: bytes
    keys: tuple[str, ...]
    fact_key: str | None

    @classmethod
    def of(cls, event: Event) -> ParsedEvent:
        payload, keys, fact = event.log_record()
        return cls(
            event.id,
            event.type,
            event.version,
            event.occurred_us,
            event.patient_id,
            event.anonymous_id,
            payload,
            keys,
            fact,
        )

    @property
    def patient_key(self) -> str:
        return self.patient_id if self.patient_id is not None else f"anon:{self.anonymous_id}"

    def log_record(self) -> tuple[bytes, tuple[str, ...], str | None]:
        return self.payload, self.keys, self.fact_key


@dataclass(slots=True)
class Rejection:
    line: int
    event_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class ParsedChunk:
    last_line: int
    events: list[ParsedEvent] = field(default_factory=list)
    line_of: dict[str, int] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: int = 0


def parse_chunk(lines: list[tuple[int, Any]], last_line: int, now: datetime) -> ParsedChunk:
    """Each `(line number, raw)`: raw is JSONL bytes, a CSV row already shaped as an event dict,
    an `EventRejected` the reader already decided, or None for a blank line."""
    chunk = ParsedChunk(last_line)
    for number, raw in lines:
        if raw is None:
            continue
        try:
            if isinstance(raw, EventRejected):
                raise raw
            if isinstance(raw, bytes):
                try:
                    raw = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise EventRejected("malformed_json", f"not valid JSON ({exc.msg})") from None
            event = parse_event(raw, now=now)
        except EventRejected as exc:
            chunk.rejections.append(Rejection(number, exc.event_id, exc.reason, exc.detail))
            continue
        if event.id in chunk.line_of:
            chunk.duplicates += 1
            continue
        chunk.line_of[event.id] = number
        chunk.events.append(ParsedEvent.of(event))
    return chunk
