"""`telecrm import`: JSONL and CSV loads that report bad lines exactly and resume without duplicates."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from telecrm.domain.events import parse_event
from telecrm.ingest.bulk_import import ImportFileError, import_file
from telecrm.ingest.tables import events
from tests.support.builders import CANARY_EMAIL, customer_journey, event, registration

DAY = timedelta(days=1)


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_bytes(
        b"".join(
            (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
        )
    )
    return path


def count(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def test_bad_lines_are_reported_by_number_and_reason_and_the_rest_load(
    runtime, clock, tmp_path
) -> None:
    now = clock.now()
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            registration("pat_1", now - DAY),
            b'{"id": "evt_broken", ',
            registration("pat_2", now - DAY, data={"email": CANARY_EMAIL + "@@"}),
            event("order.paid", "pat_ghost", now, {"order_id": "o", "amount": 5}),
            event("order.paid", "pat_1", now, {"order_id": "o1", "amount": 5}),
            b"",
        ],
    )
    report = import_file(path, runtime.intake(), clock, engine_connect=runtime.engine.connect)
    assert report.accepted == 2
    assert [(r.line, r.reason) for r in sorted(report.rejections, key=lambda r: r.line)] == [
        (2, "malformed_json"),
        (3, "invalid_data"),
        (4, "unknown_patient"),
    ]
    assert all(CANARY_EMAIL not in r.detail for r in report.rejections)
    assert count(runtime) == 2


def test_an_interrupted_import_resumes_after_the_last_committed_chunk(
    runtime, clock, tmp_path
) -> None:
    start = clock.now() - 30 * DAY
    lines = [e for i in range(20) for e in customer_journey(f"pat_{i}", start)]
    path = write_jsonl(tmp_path / "big.jsonl", lines)
    calls = 0

    def crash_after_two_chunks(line: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(
            path,
            runtime.intake(),
            clock,
            engine_connect=runtime.engine.connect,
            progress=crash_after_two_chunks,
            chunk_lines=25,
        )
    assert count(runtime) == 50
    report = import_file(
        path, runtime.intake(), clock, engine_connect=runtime.engine.connect, chunk_lines=25
    )
    assert report.resumed_from_line == 50
    assert report.accepted == 100 and report.duplicates == 0
    assert count(runtime) == 100
    again = import_file(
        path, runtime.intake(), clock, engine_connect=runtime.engine.connect, chunk_lines=25
    )
    assert again.resumed_from_line == 100 and count(runtime) == 100


def test_csv_files_load_with_data_as_json(runtime, clock, tmp_path) -> None:
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "type", "version", "occurred_at", "patient_id", "anonymous_id", "data"]
        )
        e = registration("pat_c", clock.now())
        writer.writerow(
            [e["id"], e["type"], 1, e["occurred_at"], "pat_c", "", orjson.dumps(e["data"]).decode()]
        )
        writer.writerow(["evt_bad", "order.paid", 1, e["occurred_at"], "pat_c", "", "{not json"])
    report = import_file(path, runtime.intake(), clock, engine_connect=runtime.engine.connect)
    assert report.accepted == 1
    assert [(r.line, r.reason) for r in report.rejections] == [(3, "malformed_json")]


def test_an_unknown_file_type_is_a_clear_error(runtime, clock, tmp_path) -> None:
    path = tmp_path / "events.xml"
    path.write_text("<events/>")
    with pytest.raises(ImportFileError, match=r"\.jsonl"):
        import_file(path, runtime.intake(), clock, engine_connect=runtime.engine.connect)


def test_the_parallel_parser_gives_the_same_result_as_the_inline_one(
    runtime, clock, tmp_path
) -> None:
    start = clock.now() - 30 * DAY
    lines = [e for i in range(30) for e in customer_journey(f"pat_{i}", start)]
    lines.insert(7, b"{broken")
    lines.insert(40, event("order.paid", "pat_ghost", start, {"order_id": "o", "amount": 5}))
    lines.append(lines[3])  # a duplicate id
    path = write_jsonl(tmp_path / "par.jsonl", lines)
    report = import_file(
        path,
        runtime.intake(),
        clock,
        engine_connect=runtime.engine.connect,
        chunk_lines=20,
        parallel=True,
    )
    assert report.accepted == 150 and report.duplicates == 1
    assert sorted((r.line, r.reason) for r in report.rejections) == [
        (8, "malformed_json"),
        (41, "unknown_patient"),
    ]
    assert count(runtime) == 150


def test_an_import_skips_facts_already_received_by_webhook(runtime, clock, tmp_path) -> None:
    journey = customer_journey("pat_1", clock.now() - 10 * DAY)
    runtime.intake().accept(
        [parse_event(e, now=clock.now()) for e in journey], source="webhook", actor="test"
    )
    exported = [{**e, "id": e["id"] + "_export"} for e in journey]  # same facts, other ids
    for parallel in (False, True):
        # A different file each time (an extra blank line), so the second is not a resume.
        path = write_jsonl(tmp_path / f"export_{parallel}.jsonl", exported + [b""] * parallel)
        report = import_file(
            path, runtime.intake(), clock, engine_connect=runtime.engine.connect, parallel=parallel
        )
        assert report.resumed_from_line == 0
        assert report.accepted == 0 and report.duplicates == len(journey)
    assert count(runtime) == len(journey)
