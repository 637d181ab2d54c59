"""The daily analytics run at a given size, on a store built once and kept (issue 7). Prints JSON.

`bench/analytics_scoring.py` builds its store in a temporary directory every time (a 100,000-
patient set-up is ~5 minutes here, a million's would be ~1 hour). This one builds it once under
--dir (`<dir>/<patients>/base.db` and its master key): the simulator's events ingested and
folded, all but the last day's; the first `analytics run` a day before the end (it reads
everyone, fits the models and keeps its inputs); its at-risk crossings folded; then the last
day's events ingested and folded. Each measured run starts from a fresh copy of that database
(`run.db`): the daily `analytics run` at the end on the kept inputs, the projection of its at-risk
crossings and the lifecycle sweep, timed apart. `--full-read` times the same run reading
everyone instead, for comparison.

    .venv/bin/python bench/analytics_daily.py --patients 100000 --repeat 2
    .venv/bin/python bench/analytics_daily.py --patients 500000 --dir /tmp/scorebench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytics_scoring import _reset_peak, _status, ingest_but_the_last_day  # shared set-up
from telecrm.analytics.score_run import ScoreRun
from telecrm.analytics.scoring_config import load_scoring_config
from telecrm.analytics.tables import analytics_inputs
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.profiles.tables import profiles
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings
from telecrm.simulate import Simulation, SimulationConfig

START = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # twelve simulated months after START
CHUNK = 2000


def runtime(db: Path, key: str, clock: FrozenClock) -> Runtime:
    settings = Settings(
        home=db.parent,
        database_url=f"sqlite:///{db}",
        master_key=SecretStr(key),
        webhook_secrets=[SecretStr("whsec_" + "b" * 40)],
        embedded_worker=False,
        destinations=["hubspot"],  # changed scores are marked for a CRM's sync, as in use
    )
    return bootstrap(settings, clock=clock)


def score_run(rt: Runtime) -> ScoreRun:
    return ScoreRun(
        rt.engine,
        rt.cipher(),
        rt.intake(),
        load_scoring_config(None),
        churn_risk_cutoff=0.7,
        actor="bench",
        on_written=rt.profiles_written,
    )


def build(base: Path, patients: int, seed: int) -> dict[str, Any]:
    """The store as it is the day before the daily run; timings of its set-up."""
    base.mkdir(parents=True, exist_ok=True)
    key = generate_master_key()
    clock = FrozenClock(NOW)
    rt = runtime(base / "building.db", key, clock)
    intake = rt.intake()
    yesterday = NOW - timedelta(days=1)
    config = SimulationConfig(patients=patients, months=12, seed=seed, start=START.date())
    started = time.perf_counter()
    accepted, last_day = ingest_but_the_last_day(intake, Simulation(config).events(), NOW)
    rt.worker().drain(1000)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    first = score_run(rt).run(yesterday)
    first_s = time.perf_counter() - started
    rt.worker().drain(1000)  # the first run's at-risk crossings
    for start in range(0, len(last_day), CHUNK):
        intake.accept(
            last_day[start : start + CHUNK], source="import", actor="bench", unknown_patients="skip"
        )
    rt.worker().drain(1000)
    rt.engine.dispose()
    (base / "building.db").rename(base / "base.db")
    (base / "key").write_text(key)
    return {
        "events_accepted_before_the_last_day": accepted,
        "last_day_events": len(last_day),
        "ingest_and_fold_seconds": round(ingest_s, 1),
        "first_run_seconds": round(first_s, 1),
        "first_run_phases": {k: round(v, 2) for k, v in first.seconds.items()},
    }


def _release_from_page_cache(path: Path) -> None:
    """Drop the copy's source from the OS page cache. In use there is one store; here the copy and
    its source (12 GB each at a million patients) would compete for the page cache, and the run
    would read from disk what a store in daily use keeps in memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _disk_read_bytes() -> int:
    """Bytes this process made the kernel read from the disk (not from the page cache)."""
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def daily(base: Path, full_read: bool) -> dict[str, Any]:
    """One daily run on a fresh copy of the built store."""
    run_db = base / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run_db}{suffix}").unlink(missing_ok=True)
    shutil.copy(base / "base.db", run_db)
    _release_from_page_cache(base / "base.db")
    clock = FrozenClock(NOW)
    rt = runtime(run_db, (base / "key").read_text(), clock)
    run = score_run(rt)
    run.patient_keys()  # migrations and first connections: not part of a run
    rt.mappings()
    reset = _reset_peak()
    read_before = _disk_read_bytes()
    started = time.perf_counter()
    report = run.run(NOW, full_read=full_read)
    run_s = time.perf_counter() - started
    disk_read_mb = round((_disk_read_bytes() - read_before) / 1e6, 1)
    peak = _status("VmHWM") if reset else None
    started = time.perf_counter()
    projected = rt.worker().drain(1000)
    project_s = time.perf_counter() - started
    started = time.perf_counter()
    swept = rt.sweep().run()
    sweep_s = time.perf_counter() - started
    with rt.engine.connect() as conn:
        kept = conn.execute(select(func.length(analytics_inputs.c.sealed))).scalar()
        profile_rows = conn.execute(select(func.count()).select_from(profiles)).scalar_one()
    rt.engine.dispose()
    return {
        "patients_scored": report.patients,
        "profiles_in_store": profile_rows,
        "read_from_store": report.inputs_read,
        "events_added_since_last_run": report.logged_since,
        "inputs_reason": report.inputs_reason,
        "written": report.written,
        "stage_events": report.stage_events,
        "run_seconds": round(run_s, 2),
        "phases": {k: round(v, 2) for k, v in report.seconds.items()},
        "project_crossings_seconds": round(project_s, 2),
        "crossings_folded": projected.events,
        "sweep_seconds": round(sweep_s, 2),
        "sweep_examined": swept.examined,
        "scoring_and_lifecycle_seconds": round(run_s + project_s + sweep_s, 2),
        "kept_inputs_mb": round((kept or 0) / 1e6, 1),
        "run_peak_rss_mb": peak,
        "run_disk_read_mb": disk_read_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "scorebench", help="built stores"
    )
    parser.add_argument("--repeat", type=int, default=1, help="daily runs, each on a fresh copy")
    parser.add_argument("--full-read", action="store_true", help="also time a run reading all")
    args = parser.parse_args()
    base = args.dir / str(args.patients)
    out: dict[str, Any] = {
        "benchmark": "analytics_daily",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "patients_simulated": args.patients,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if not (base / "base.db").exists():
        out["set_up"] = build(base, args.patients, args.seed)
    else:
        out["set_up"] = f"reused {base / 'base.db'}"
    out["daily"] = [daily(base, full_read=False) for _ in range(args.repeat)]
    if args.full_read:
        out["full_read"] = daily(base, full_read=True)
    best = min(r["scoring_and_lifecycle_seconds"] for r in out["daily"])
    out["best_daily_scoring_and_lifecycle_seconds"] = best
    out["extrapolated_to_1m_seconds"] = round(best * 1_000_000 / out["daily"][0]["patients_scored"])
    out["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
