"""Bulk import, projection and rebuild benchmark on SQLite. Prints JSON.

1. Writes an event file with the simulator (`telecrm simulate`), unless --file is given.
2. `import_file` into a fresh database: events/s, and the process's RSS sampled as the file
   goes by (flat = streaming).
3. The naive baseline in the same run: the same intake, one event per transaction, on a sample.
4. The projection worker folding everything: events/s.
5. `lifecycle rebuild` of the whole log, with the digest check.

    .venv/bin/python bench/bulk_import.py --patients 60000     # about 1,000,000 events
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telecrm.bootstrap import bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.ingest.bulk_import import import_file, records
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=60_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--file", type=Path, help="use this event file instead of simulating one")
    parser.add_argument("--baseline-sample", type=int, default=3000)
    parser.add_argument("--skip-rebuild", action="store_true")
    args = parser.parse_args()

    out: dict[str, object] = {
        "benchmark": "bulk_import",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = args.file
        if path is None:
            path = work / "events.jsonl"
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "telecrm.cli",
                    "simulate",
                    "--patients",
                    str(args.patients),
                    "--months",
                    str(args.months),
                    "--seed",
                    str(args.seed),
                    "--out",
                    str(path),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            out["simulate_seconds"] = round(time.perf_counter() - started, 1)
        lines = sum(1 for _ in path.open("rb"))
        out["events_in_file"] = lines
        out["file_mb"] = round(path.stat().st_size / 1e6, 1)

        settings = Settings(
            home=work,
            database_url=f"sqlite:///{work / 'bench.db'}",
            master_key=generate_master_key(),
            embedded_worker=False,
        )
        # One frozen instant for import, projection and rebuild, so the digests compare like with like.
        clock = FrozenClock(datetime.now(UTC))
        rt = bootstrap(settings, clock=clock)
        samples: list[tuple[int, float]] = []

        def progress(line: int) -> None:
            samples.append((line, round(rss_mb(), 1)))

        started = time.perf_counter()
        report = import_file(
            path, rt.intake(), rt.clock, engine_connect=rt.engine.connect, progress=progress
        )
        seconds = time.perf_counter() - started
        quarter = (
            [samples[int(len(samples) * q) - 1] for q in (0.25, 0.5, 0.75, 1.0)] if samples else []
        )
        out["import"] = {
            "accepted": report.accepted,
            "rejected": report.rejected,
            "seconds": round(seconds, 1),
            "events_per_s": round(report.accepted / seconds),
            "rss_mb_at_25_50_75_100_percent": [mb for _, mb in quarter],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

        # The naive way, same code path: one event per transaction, on a sample.
        base_settings = settings.model_copy(
            update={"database_url": f"sqlite:///{work / 'naive.db'}"}
        )
        naive_rt = bootstrap(base_settings, clock=clock)
        sample = []
        for _, raw in records(path):
            if isinstance(raw, bytes):  # a JSONL line
                sample.append(parse_event(orjson.loads(raw), now=rt.clock.now()))
            if len(sample) >= args.baseline_sample:
                break
        intake = naive_rt.intake()
        started = time.perf_counter()
        for event in sample:
            intake.accept([event], source="import", actor="bench", unknown_patients="skip")
        naive_seconds = time.perf_counter() - started
        out["naive_baseline_one_event_per_transaction"] = {
            "events": len(sample),
            "events_per_s": round(len(sample) / naive_seconds),
            "speedup_of_chunked_import": round(
                (report.accepted / seconds) / (len(sample) / naive_seconds), 1
            ),
        }

        started = time.perf_counter()
        folded = rt.worker().drain(limit=1000)
        seconds = time.perf_counter() - started
        out["projection"] = {
            "patients": folded.patients,
            "events": folded.events,
            "seconds": round(seconds, 1),
            "events_per_s": round(folded.events / seconds),
        }
        if not args.skip_rebuild:
            before = projection_digest(rt.engine, rt.cipher())
            started = time.perf_counter()
            rebuilt = rebuild_projection(rt.engine, rt.worker(), rt.clock)
            seconds = time.perf_counter() - started
            after = projection_digest(rt.engine, rt.cipher())
            out["rebuild"] = {
                "events": rebuilt.events,
                "seconds": round(seconds, 1),
                "events_per_s": round(rebuilt.events / seconds),
                "identical": before == after,
            }
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
