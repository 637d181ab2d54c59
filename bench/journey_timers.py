"""Journey timer benchmark: N scheduled timers in SQLite, all due, fired by the runner. Prints JSON.

1. A fresh SQLite database (migrated) and one journey registered as version 1:
       wait 1d → branch on a random split (50/50) → exit
   so each due timer costs three steps (the wait elapsing, the split, the exit) and no message
   (messages are measured by bench/messaging_throughput.py).
2. Setup, not measured: --timers instances inserted directly in journey_instances, sitting in the
   wait, due times spread evenly over the hour before NOW.
3. Measured: JourneyRunner.fire_due(limit=--batch) until nothing is due, wall time; steps/s is
   history rows written per second (every step writes one), and the lag is NOW + run time minus
   each batch's due times: how late a timer fires when a backlog of --timers is due at once.
4. Lag at load (--steady N --rate R): on a fresh database, N timers due at R per second from
   a moment just after setup, on the real clock; the runner loops fire_due; each timer's lag is
   when its wait was recorded as elapsed (journey_steps.at_us) minus its due time.
5. The naive baseline in the same run, on the first --naive timers: one transaction per instance
   (select it, advance it, update it, write its history), as a hand-rolled scheduler would.

    .venv/bin/python bench/journey_timers.py --timers 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select

from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.journeys.registry import JourneyRegistry
from telecrm.journeys.runner import JourneyRunner
from telecrm.journeys.tables import journey_instances, journey_steps
from telecrm.journeys.validate import check_text
from telecrm.messaging.config import load_messaging_config
from telecrm.messaging.planner import MessagePlanner
from telecrm.messaging.templates import TemplateCatalog
from telecrm.security.envelope import FieldCipher
from telecrm.store.engine import make_engine
from telecrm.store.migrate import upgrade_to_head

NOW = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
JOURNEY = """version: 1
name: bench_timers
entry: {event: questionnaire.started}
steps:
  - {id: pause, wait: 1d}
  - id: split
    split: {a: {percent: 50, next: done}, b: {percent: 50, next: done}}
  - {id: done, exit: finished}
"""


def _runner(engine: Any, clock: FrozenClock) -> JourneyRunner:
    catalog = TemplateCatalog.load()
    templates = {(t.name, t.channel) for t in catalog.all()}
    registry = JourneyRegistry([check_text(JOURNEY, "bench_timers.yaml", templates)])
    config = load_messaging_config(None)

    def no_keys() -> FieldCipher:
        return None  # type: ignore[return-value]  # the timer path decrypts nothing

    planner = MessagePlanner(engine, no_keys, no_keys, clock, config, catalog)  # type: ignore[arg-type]
    return JourneyRunner(engine, no_keys, no_keys, clock, registry, planner)  # type: ignore[arg-type]


def _seed(engine: Any, runner: JourneyRunner, n: int, now_us: int, due: Any = None) -> None:
    with engine.begin() as conn:
        runner.registry.register(conn, now_us)
    hour = 3_600_000_000
    chunk = 50_000
    for start in range(0, n, chunk):
        rows = [
            {
                "instance_id": f"ji_{i:024d}",
                "journey": "bench_timers",
                "version": 1,
                "patient_key": f"pat_{i:07d}",
                "entry_key": f"evt_{i}",
                "entry_event_id": None,
                "grp": "journey",
                "state": "active",
                "step": "pause",
                "visits": 1,
                "due_us": due(i) if due else now_us - hour + (i * hour) // n,
                "waiting_for": "@timer",
                "entered_us": now_us - 25 * hour,
                "lease_until_us": 0,
            }
            for i in range(start, min(n, start + chunk))
        ]
        with engine.begin() as conn:
            conn.execute(journey_instances.insert(), rows)


def _fire(runner: JourneyRunner, batch: int, now_us: int, t0: float) -> tuple[int, list[float]]:
    lags: list[float] = []
    fired = 0
    while True:
        report = runner.fire_due(batch)
        if not report.fired:
            return fired, lags
        fired += report.fired
        elapsed = time.perf_counter() - t0
        lags.append(elapsed)  # the last timer of this batch was due at or before NOW
    return fired, lags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timers", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--naive", type=int, default=20_000)
    ap.add_argument("--steady", type=int, default=300_000, help="timers for the lag phase")
    ap.add_argument("--rate", type=float, default=5000, help="timers due per second (lag phase)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade_to_head(engine)
        clock = FrozenClock(NOW)
        now_us = to_micros(NOW)
        runner = _runner(engine, clock)
        t = time.perf_counter()
        _seed(engine, runner, args.timers, now_us)
        seeded_s = time.perf_counter() - t
        t0 = time.perf_counter()
        fired, lags = _fire(runner, args.batch, now_us, t0)
        wall = time.perf_counter() - t0
        with engine.connect() as conn:
            steps = conn.execute(select(func.count()).select_from(journey_steps)).scalar_one()
            left = conn.execute(
                select(func.count())
                .select_from(journey_instances)
                .where(journey_instances.c.state == "active")
            ).scalar_one()
        assert fired == args.timers and left == 0, (fired, left)

        # Lag at load: timers due at --rate per second on the real clock.
        from telecrm.domain.clock import SystemClock

        steady_engine = make_engine(f"sqlite:///{Path(tmp) / 'steady.db'}")
        upgrade_to_head(steady_engine)
        real = SystemClock()
        steady_runner = _runner(steady_engine, real)  # type: ignore[arg-type]
        begin_us = to_micros(real.now()) + 20_000_000  # after the seeding below
        _seed(
            steady_engine, steady_runner, args.steady, begin_us,
            due=lambda i: begin_us + int(i * 1e6 / args.rate),
        )  # fmt: skip
        assert to_micros(real.now()) < begin_us, "seeding took longer than the head start"
        while steady_runner.fire_due(args.batch).fired or to_micros(real.now()) < begin_us + int(
            args.steady * 1e6 / args.rate
        ):
            time.sleep(0.005)  # idle until the next timers are due (a benchmark, not a test)
        with steady_engine.connect() as conn:
            fired_at = {
                r.instance_id: r.at_us
                for r in conn.execute(
                    select(journey_steps.c.instance_id, journey_steps.c.at_us).where(
                        journey_steps.c.step == "pause"
                    )
                )
            }
        steady_lags = sorted(
            (fired_at[f"ji_{i:024d}"] - (begin_us + int(i * 1e6 / args.rate))) / 1e6
            for i in range(args.steady)
        )

        # The naive baseline: one transaction per timer, on a fresh database.
        naive_engine = create_engine(f"sqlite:///{Path(tmp) / 'naive.db'}")
        upgrade_to_head(naive_engine)
        naive_runner = _runner(naive_engine, clock)
        _seed(naive_engine, naive_runner, args.naive, now_us)
        t1 = time.perf_counter()
        naive_fired = 0
        while naive_runner.fire_due(1).fired:
            naive_fired += 1
        naive_wall = time.perf_counter() - t1
    lags.sort()
    out = {
        "benchmark": "journey_timers",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "timers": args.timers,
        "batch": args.batch,
        "seed_seconds": round(seeded_s, 1),
        "fire_seconds": round(wall, 2),
        "steps": steps,
        "steps_per_second": round(steps / wall),
        "timers_per_second": round(fired / wall),
        "backlog_drain_seconds": {
            "p50": round(lags[len(lags) // 2], 2),
            "p99": round(lags[int(len(lags) * 0.99)], 2),
            "max": round(lags[-1], 2),
        },
        "lag_at_rate": {
            "timers": args.steady,
            "due_per_second": args.rate,
            "p50_seconds": round(steady_lags[len(steady_lags) // 2], 3),
            "p99_seconds": round(steady_lags[int(len(steady_lags) * 0.99)], 3),
            "max_seconds": round(steady_lags[-1], 3),
        },
        "naive": {
            "timers": naive_fired,
            "seconds": round(naive_wall, 2),
            "timers_per_second": round(naive_fired / naive_wall),
        },
        "speedup_vs_naive": round((fired / wall) / (naive_fired / naive_wall), 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
