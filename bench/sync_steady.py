"""Steady-state CRM sync benchmark: profile changes at a fixed rate, through intake, the projection
worker and the sync worker to a HubSpot sandbox on loopback (real time, scaled limits). Prints JSON.

Setup (timed, not measured): a simulated platform (--patients), imported, projected and backfilled
to the sandbox. Then for --seconds, three threads run at once, as in `telecrm serve` + `telecrm sync`:

- producer: `patient.updated` / `session.tracked` / `order.paid` events on existing patients at
  --rate events/s (ticks of 50 ms), through `EventIntake.accept`;
- projection: `ProfileWorker.drain()` in a loop (marks changed patients dirty for HubSpot);
- sync: `SyncWorker.run_once()` in a loop.

Sync lag of one event = the commit time of the first sync round that claimed its patient after the
projection pass that folded the event ended, minus the time the intake accepted it. It is an upper
bound by up to one projection pass (a round that started while the pass was still running may
already have carried the change). Events whose patient no round claimed changed no CRM record.

    .venv/bin/python bench/sync_steady.py --rate 1000 --seconds 60
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench.sync_support import (
    limit_refusals,
    load_platform,
    new_runtime,
    new_sandbox,
    open_worker,
    patient_keys,
    provision,
    scaled_mapping,
)
from telecrm.domain.events import parse_event

TICK = 0.05


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--patients", type=int, default=5000, help="simulated population")
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    out: dict[str, Any] = {
        "benchmark": "sync_steady",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "asked": {"rate": args.rate, "seconds": args.seconds, "patients": args.patients,
                  "time_scale": args.time_scale},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rt = new_runtime(Path(tmp))
        mapping = scaled_mapping("hubspot", args.time_scale)
        rt.use_mappings([mapping])  # the projection marks changed patients dirty for it
        out["setup"] = load_platform(rt, Path(tmp), args.patients, args.months, args.seed)
        keys = [k for k in patient_keys(rt)]
        sandbox = new_sandbox("hubspot", args.time_scale)
        served = sandbox
        try:
            provision(rt, mapping, served.url)
            time.sleep(mapping.limits.per_seconds)  # provisioning's calls leave the window
            worker, connector, _gate = open_worker(rt, mapping, served.url)
            started = time.perf_counter()
            backfill = worker.drain()
            out["setup"]["backfill"] = {
                "records": backfill.written, "calls": backfill.calls,
                "seconds": round(time.perf_counter() - started, 1),
            }  # fmt: skip
            out["steady"] = steady(rt, worker, connector, sandbox, keys, args)
        finally:
            served.stop()
    print(json.dumps(out, indent=2))


def steady(
    rt: Any, worker: Any, connector: Any, sandbox: Any, keys: list[str], args: Any
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    intake = rt.intake()
    accepted: list[tuple[float, str]] = []  # (accepted at, patient key)
    passes: list[tuple[float, float]] = []  # projection passes: (started, ended)
    rounds: dict[str, list[tuple[float, float]]] = {}  # patient -> [(claimed, committed)]
    stop_producer, stop_all = threading.Event(), threading.Event()
    counters = {"events": 0, "projected": 0, "sync_calls": 0, "written": 0, "unchanged": 0}

    def produce() -> None:
        n, t0 = 0, time.time()
        while not stop_producer.is_set():
            due = int((time.time() - t0) * args.rate) - n
            if due > 0:
                now = datetime.now(UTC)
                batch, who = [], []
                for _ in range(due):
                    n += 1
                    key = keys[rng.randrange(len(keys))]
                    kind = ("patient.updated", "session.tracked", "order.paid")[n % 3]
                    data: dict[str, Any] = (
                        {"first_name": f"Steady{n}"} if kind == "patient.updated"
                        else {"page": "/dashboard"} if kind == "session.tracked"
                        else {"order_id": f"o_steady_{n}", "amount": 39.0}
                    )  # fmt: skip
                    raw = {"id": f"evt_steady_{n}", "type": kind, "version": 1,
                           "occurred_at": now.isoformat(), "patient": {"id": key}, "data": data}  # fmt: skip
                    batch.append(parse_event(raw, now=now))
                    who.append(key)
                intake.accept(batch, source="webhook", actor="bench")
                at = time.time()
                accepted.extend((at, k) for k in who)
                counters["events"] += len(batch)
            time.sleep(max(0.0, TICK - (time.time() - t0) % TICK))

    def project() -> None:
        profile_worker = rt.worker()
        while not stop_all.is_set():
            began = time.time()
            done = profile_worker.drain(limit=1000)
            if done.events:
                passes.append((began, time.time()))
                counters["projected"] += done.events
            else:
                time.sleep(0.02)

    claimed: list[str] = []
    original_claim = worker._claim

    def claim(limit: int) -> Any:
        found = original_claim(limit)
        claimed[:] = [c.patient_key for c in found]
        return found

    worker._claim = claim  # instrument which patients each round took (read-only wrapper)

    def sync() -> None:
        while not stop_all.is_set():
            began = time.time()
            report = worker.run_once()
            ended = time.time()
            if not report.patients:
                time.sleep(0.05)
                continue
            for k in claimed:
                rounds.setdefault(k, []).append((began, ended))
            counters["sync_calls"] += report.calls
            counters["written"] += report.written
            counters["unchanged"] += report.unchanged

    refused_before = limit_refusals(sandbox)
    endpoints_before = dict(connector.stats.by_endpoint)
    threads = [threading.Thread(target=f, daemon=True) for f in (produce, project, sync)]
    started = time.time()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop_producer.set()
    produced_s = time.time() - started
    deadline = time.time() + 120  # let projection and sync catch up with what was accepted
    while time.time() < deadline:
        idle = not passes or time.time() - passes[-1][1] > 2
        if idle and counters["projected"] >= counters["events"]:
            time.sleep(2)  # one more sync round for the last marks
            break
        time.sleep(0.5)
    stop_all.set()
    for t in threads:
        t.join(timeout=30)
    total_s = time.time() - started

    lags, unsynced = [], 0
    pass_starts = [p[0] for p in passes]
    for at, key in accepted:
        i = bisect.bisect_left(pass_starts, at)  # the first pass that began after the accept
        if i >= len(passes):
            unsynced += 1
            continue
        folded = passes[i][1]
        done = next((end for claim_at, end in rounds.get(key, []) if claim_at >= folded), None)
        if done is None:
            unsynced += 1
        else:
            lags.append(done - at)
    written = counters["written"]
    return {
        "events_accepted": counters["events"],
        "producer_seconds": round(produced_s, 1),
        "achieved_rate_events_per_s": round(counters["events"] / produced_s, 1),
        "events_projected": counters["projected"],
        "projection_passes": len(passes),
        "seconds_until_caught_up": round(total_s, 1),
        "sync_api_calls": counters["sync_calls"],
        "records_written": written,
        "records_unchanged_no_call": counters["unchanged"],
        "api_calls_per_changed_record": round(counters["sync_calls"] / written, 4)
        if written
        else None,
        "api_calls_by_endpoint": {
            k: v - endpoints_before.get(k, 0)
            for k, v in connector.stats.by_endpoint.items()
            if v - endpoints_before.get(k, 0)
        },
        "limit_refusals_seen_by_sandbox": limit_refusals(sandbox) - refused_before,
        "sync_lag_s": {
            "events_measured": len(lags),
            "p50": round(percentile(lags, 0.5) or 0, 3),
            "p99": round(percentile(lags, 0.99) or 0, 3),
            "max": round(max(lags), 3) if lags else None,
            "events_without_a_later_round": unsynced,
        },
    }


if __name__ == "__main__":
    main()
