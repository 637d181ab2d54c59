"""`telecrm import FILE`: bulk loads of JSONL or CSV event files, resumable and line-exact.

Each chunk of lines is validated, stored and checkpointed in one transaction, so an interrupted
import resumes after the last committed chunk and never stores an event twice. A bad line is
reported by line number and reason (never its content: it may be PHI); the rest still load.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, select

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import EventRejected, parse_event
from telecrm.ingest.intake import EventIntake, IntakeResult
from telecrm.ingest.tables import import_checkpoints
from telecrm.store.upsert import upsert

CHUNK_LINES = 5000
CSV_COLUMNS = ("id", "type", "version", "occurred_at", "patient_id", "anonymous_id", "data")
MAX_LINE_BYTES = 1024 * 1024


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (missing, unknown format, bad CSV header)."""


@dataclass
class Rejection:
    line: int
    event_id: str | None
    reason: str
    detail: str


@dataclass
class ImportReport:
    path: str
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumed_from_line: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if len(line) > MAX_LINE_BYTES:
                yield number, EventRejected("line_too_long", f"line is over {MAX_LINE_BYTES} bytes")
                continue
            stripped = line.strip()
            if not stripped:
                yield number, None
                continue
            try:
                yield number, orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                yield number, EventRejected("malformed_json", f"not valid JSON ({exc.msg})")


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or set(CSV_COLUMNS) - set(reader.fieldnames) - {
            "anonymous_id",
            "version",
        }:
            raise ImportFileError(f"CSV header must name the columns {', '.join(CSV_COLUMNS)}")
        for row in reader:
            number = reader.line_num
            try:
                data = orjson.loads(row.get("data") or "{}")
            except orjson.JSONDecodeError:
                yield number, EventRejected("malformed_json", "the data column is not valid JSON")
                continue
            patient = {
                k: v
                for k, v in (
                    ("id", row.get("patient_id")),
                    ("anonymous_id", row.get("anonymous_id")),
                )
                if v
            }
            version = row.get("version") or "1"
            yield (
                number,
                {
                    "id": row.get("id"),
                    "type": row.get("type"),
                    "version": int(version) if version.isdigit() else version,
                    "occurred_at": row.get("occurred_at"),
                    "patient": patient,
                    "data": data,
                },
            )


def records(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_records(path)
    if suffix == ".csv":
        return _csv_records(path)
    raise ImportFileError(f"unknown file type {suffix!r}: use .jsonl (one event per line) or .csv")


def import_file(
    path: Path,
    intake: EventIntake,
    clock: Clock,
    *,
    engine_connect: Callable[[], Connection],
    progress: Callable[[int], None] | None = None,
    chunk_lines: int = CHUNK_LINES,
    actor: str = "import",
) -> ImportReport:
    if not path.is_file():
        raise ImportFileError(f"no such file: {path}")
    digest = file_digest(path)
    report = ImportReport(str(path))
    with engine_connect() as conn:
        row = conn.execute(
            select(import_checkpoints).where(import_checkpoints.c.file_sha256 == digest)
        ).first()
    if row is not None:
        report.resumed_from_line = row.lines_done
        report.accepted, report.duplicates, report.rejected = (
            row.accepted,
            row.duplicates,
            row.rejected,
        )

    def checkpoint(last_line: int) -> Callable[[Connection, IntakeResult], None]:
        def write(conn: Connection, result: IntakeResult) -> None:
            upsert(
                conn,
                import_checkpoints,
                [
                    {
                        "file_sha256": digest,
                        "path": str(path)[:1024],
                        "lines_done": last_line,
                        "accepted": report.accepted + result.accepted,
                        "duplicates": report.duplicates + result.duplicates,
                        "rejected": report.rejected + pending_rejections + len(result.skipped),
                        "updated_us": to_micros(clock.now()),
                    }
                ],
                ["file_sha256"],
                ["lines_done", "accepted", "duplicates", "rejected", "updated_us", "path"],
            )

        return write

    chunk: list[Any] = []
    line_of: dict[str, int] = {}
    pending_rejections = 0
    last_line = report.resumed_from_line

    def flush() -> None:
        nonlocal chunk, pending_rejections
        result = intake.accept(
            chunk,
            source="import",
            actor=actor,
            unknown_patients="skip",
            in_transaction=checkpoint(last_line),
        )
        report.accepted += result.accepted
        report.duplicates += result.duplicates
        for event_id, reason, detail in result.skipped:
            report.rejections.append(Rejection(line_of.get(event_id, 0), event_id, reason, detail))
        report.rejected += pending_rejections + len(result.skipped)
        pending_rejections = 0
        chunk = []
        line_of.clear()

    now = clock.now()
    for number, raw in records(path):
        if number <= report.resumed_from_line:
            continue
        last_line = number
        report.lines = number
        if raw is None:
            continue
        if isinstance(raw, EventRejected):
            report.rejections.append(Rejection(number, None, raw.reason, raw.detail))
            pending_rejections += 1
        else:
            try:
                event = parse_event(raw, now=now)
            except EventRejected as exc:
                report.rejections.append(Rejection(number, exc.event_id, exc.reason, exc.detail))
                pending_rejections += 1
            else:
                if event.id in line_of:
                    report.duplicates += 1
                else:
                    line_of[event.id] = number
                    chunk.append(event)
        if number % chunk_lines == 0:
            flush()
            if progress is not None:
                progress(number)
            now = clock.now()
    flush()
    if progress is not None:
        progress(report.lines)
    return report


def write_rejections(report: ImportReport, out: Path) -> None:
    buf = io.BytesIO()
    for r in report.rejections:
        buf.write(
            orjson.dumps(
                {"line": r.line, "event_id": r.event_id, "reason": r.reason, "detail": r.detail}
            )
        )
        buf.write(b"\n")
    out.write_bytes(buf.getvalue())
