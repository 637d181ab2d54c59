"""`telecrm import FILE`: bulk loads of JSONL or CSV event files, resumable and line-exact.

Each chunk of lines is validated, stored and checkpointed in one transaction, so an interrupted
import resumes after the last committed chunk and never stores an event twice. A bad line is
reported by line number and reason (never its content: it may be PHI); the rest still load.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, select

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.events import EventRejected
from telecrm.ingest.intake import EventIntake, IntakeResult
from telecrm.ingest.line_parser import ParsedChunk, Rejection, parse_chunk
from telecrm.ingest.tables import import_checkpoints
from telecrm.store.upsert import upsert

CHUNK_LINES = 10000
CSV_COLUMNS = ("id", "type", "version", "occurred_at", "patient_id", "anonymous_id", "data")
MAX_LINE_BYTES = 1024 * 1024
PARALLEL_OVER = 8 * 1024 * 1024  # below this, starting a helper process costs more than it saves


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (missing, unknown format, bad CSV header)."""


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
            yield number, (stripped or None)


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


def _chunks_of(
    lines: Iterator[tuple[int, Any]], start_after: int, size: int
) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
    chunk: list[tuple[int, Any]] = []
    number = start_after
    for number, raw in lines:
        if number <= start_after:
            continue
        chunk.append((number, raw))
        if number % size == 0:
            yield number, chunk
            chunk = []
    if chunk or number == start_after:
        yield number, chunk


def import_file(
    path: Path,
    intake: EventIntake,
    clock: Clock,
    *,
    engine_connect: Callable[[], Connection],
    progress: Callable[[int], None] | None = None,
    chunk_lines: int = CHUNK_LINES,
    actor: str = "import",
    parallel: bool | None = None,
) -> ImportReport:
    """Import a file; `parallel` (default: for files over PARALLEL_OVER bytes) parses the next
    chunk in a helper process while this one stores the current chunk."""
    if not path.is_file():
        raise ImportFileError(f"no such file: {path}")
    digest = file_digest(path)
    report = ImportReport(str(path))
    with engine_connect() as conn:
        row = conn.execute(
            select(import_checkpoints).where(import_checkpoints.c.file_sha256 == digest)
        ).first()
    if row is not None:
        report.resumed_from_line = report.lines = row.lines_done
        report.accepted, report.duplicates, report.rejected = (
            row.accepted,
            row.duplicates,
            row.rejected,
        )

    def store(chunk: ParsedChunk) -> None:
        rejected_here = len(chunk.rejections)

        def checkpoint(conn: Connection, result: IntakeResult) -> None:
            upsert(
                conn,
                import_checkpoints,
                [
                    {
                        "file_sha256": digest,
                        "path": str(path)[:1024],
                        "lines_done": chunk.last_line,
                        "accepted": report.accepted + result.accepted,
                        "duplicates": report.duplicates + chunk.duplicates + result.duplicates,
                        "rejected": report.rejected + rejected_here + len(result.skipped),
                        "updated_us": to_micros(clock.now()),
                    }
                ],
                ["file_sha256"],
                ["lines_done", "accepted", "duplicates", "rejected", "updated_us", "path"],
            )

        result = intake.accept(
            chunk.events,
            source="import",
            actor=actor,
            unknown_patients="skip",
            in_transaction=checkpoint,
        )
        report.accepted += result.accepted
        report.duplicates += chunk.duplicates + result.duplicates
        report.rejections.extend(chunk.rejections)
        for event_id, reason, detail in result.skipped:
            report.rejections.append(
                Rejection(chunk.line_of.get(event_id, 0), event_id, reason, detail)
            )
        report.rejected += rejected_here + len(result.skipped)
        report.lines = max(report.lines, chunk.last_line)
        if progress is not None:
            progress(chunk.last_line)

    chunks = _chunks_of(records(path), report.resumed_from_line, chunk_lines)
    if parallel is None:
        parallel = path.stat().st_size > PARALLEL_OVER and (os.cpu_count() or 1) > 1
    if not parallel:
        for last_line, lines in chunks:
            store(parse_chunk(lines, last_line, clock.now()))
        return report
    # Spawned, not forked: the child must not inherit this process's database connections.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        in_flight: deque[Future[ParsedChunk]] = deque()
        for last_line, lines in chunks:
            in_flight.append(pool.submit(parse_chunk, lines, last_line, clock.now()))
            if len(in_flight) > 2:
                store(in_flight.popleft().result())
        while in_flight:
            store(in_flight.popleft().result())
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
