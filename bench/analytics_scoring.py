"""Analytics scoring benchmark (issue 7): `ScoreRun` through the store, model training, and the
scoring compute at 1,000,000 patients. Prints JSON.

1. Through the store, --db-patients (100,000): the simulator's events streamed into a fresh
   SQLite database through the intake (chunks of 2,000) and folded by the projection worker
   (set-up: timed, reported apart), all but the last day's. Then the first `ScoreRun.run`, a
   day before the end (each phase, patients/s; it reads everyone, fits the models, writes the
   changed scores to `profile_scores` and marks them for --destinations, and keeps its
   inputs), the projection of the `analytics.scored` events it wrote for at-risk crossings, a
   second `ScoreRun.run` at the same instant (writes nothing). Then the daily run: the last
   day's events ingested and folded, a run at the end on the kept inputs, the projection of its
   crossings, and the same run reading everyone (`full_read`) for comparison; and the lifecycle
   sweep. Peak RSS of the set-up, and of the scoring alone (the
   kernel's high-water mark is reset before `ScoreRun.run`).
2. Model training on that log (the event log `from_store` reads): `population_scores`, its parts
   timed (lifetime value fit / predict, churn features, churn training / prediction); and again
   with OpenMP and BLAS held to one thread (threadpoolctl), as the 1M part also does.
3. The naive baseline in the same run: `score_patients` one patient per call (one transaction
   each) for the first --naive patients, against the same patients in one call, and against
   the run's read, score and write phases.
4. 1,000,000 patients in memory (unless --skip-1m), in a child process (its own peak RSS): the
   simulator streamed once into `event_arrays.from_wire` (the wire dicts are not kept) while the
   same events are kept as compact columns; then `population_scores`, `EventTable.from_rows`,
   `lead_points`, `pdc_table`, `engagement_scores`, and the per-patient results as `ScoreRun`
   builds them (`PatientScores`, `scores_of`). Nothing here reads or writes the database.

    .venv/bin/python bench/analytics_scoring.py                      # 100k in SQLite + 1M in memory
    .venv/bin/python bench/analytics_scoring.py --db-patients 5000 --skip-1m
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
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr
from sqlalchemy import func, select
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telecrm.analytics import event_arrays as ea
from telecrm.analytics import population as population_module
from telecrm.analytics.adherence import MeasurementPeriod, Pdc, day_number, pdc_table
from telecrm.analytics.engagement import engagement_scores
from telecrm.analytics.event_table import EventTable
from telecrm.analytics.lead_score import lead_points
from telecrm.analytics.patient_scores import ENGAGEMENT_EVENTS, ScoreBatch, score_patients
from telecrm.analytics.population import population_scores
from telecrm.analytics.score_run import ScoreRun, scores_of
from telecrm.analytics.scoring_config import load_scoring_config
from telecrm.analytics.tables import analytics_inputs
from telecrm.bootstrap import bootstrap
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.domain.events import parse_event
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings
from telecrm.simulate import Simulation, SimulationConfig

# Most patients reach a first order (as tests/analytics/clv_population.py): --population buyers.
BUYERS = {
    "questionnaire_rate": 0.95,
    "consultation_rate": 0.95,
    "prescription_rate": 0.95,
    "subscription_rate": 0.4,
    "bounced_visitors_per_patient": 0.0,
}
START = date(2025, 1, 1)
TARGET_1M_SECONDS = 30.0


def _status(field: str) -> float:
    """A /proc/self/status figure in MB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (VmHWM); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _now(months: int) -> datetime:
    """The end of the simulated period: every event has happened, none is in the future."""
    year, month = START.year + months // 12, START.month + months % 12
    if month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=UTC)


def _simulation(args: argparse.Namespace, patients: int) -> Simulation:
    extra = BUYERS if args.population == "buyers" else {}
    config = SimulationConfig(
        patients=patients, months=args.months, seed=args.seed, start=START, **extra
    )
    return Simulation(config)


class Timed:
    """Wraps an iterator and adds up the time spent inside it (the simulator's own share)."""

    def __init__(self, source: Iterable[Any]) -> None:
        self._it = iter(source)
        self.seconds = 0.0
        self.items = 0

    def __iter__(self) -> Iterator[Any]:
        clock = time.perf_counter
        while True:
            t = clock()
            try:
                item = next(self._it)
            except StopIteration:
                self.seconds += clock() - t
                return
            self.seconds += clock() - t
            self.items += 1
            yield item


@contextmanager
def model_parts() -> Iterator[dict[str, float]]:
    """Time the model steps `population_scores` calls, by wrapping the names it looks up."""
    names = ("fit_clv", "predict_clv", "churn_rows", "train_churn_model", "predict_churn")
    spent = dict.fromkeys(names, 0.0)
    saved = {n: getattr(population_module, n) for n in names}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    for n in names:
        setattr(population_module, n, timed(n, saved[n]))
    try:
        yield spent
    finally:
        for n, fn in saved.items():
            setattr(population_module, n, fn)


def _parts_out(spent: dict[str, float], total: float) -> dict[str, float]:
    out = {
        "lifetime value: fit BG/NBD + Gamma-Gamma + sBG": spent["fit_clv"],
        "lifetime value: predict": spent["predict_clv"],
        "churn: features at now": spent["churn_rows"],
        "churn: train (features x3 cutoffs, HGB + calibration)": spent["train_churn_model"],
        "churn: predict": spent["predict_churn"],
    }
    out["keys and result dicts"] = total - sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


# -- 1. through the store -----------------------------------------------------------------------


def ingest_but_the_last_day(
    intake: Any, wire: Iterable[dict[str, Any]], now: datetime
) -> tuple[int, list[Any]]:
    """Simulated events through the intake in chunks of 2,000, except the last day's: those are
    held back (they arrive between the first run and the daily run). (accepted, held back)"""
    yesterday = now - timedelta(days=1)
    buffer: list[Any] = []
    last_day: list[Any] = []
    accepted = 0
    for e in wire:
        parsed = parse_event(e, now=now)
        if parsed.occurred_at >= yesterday:
            last_day.append(parsed)
            continue
        buffer.append(parsed)
        if len(buffer) == 2000:
            accepted += intake.accept(
                buffer, source="import", actor="bench", unknown_patients="skip"
            ).accepted
            buffer = []
    if buffer:
        accepted += intake.accept(
            buffer, source="import", actor="bench", unknown_patients="skip"
        ).accepted
    return accepted, last_day


def store_part(args: argparse.Namespace) -> dict[str, Any]:
    now = _now(args.months)
    config = load_scoring_config(None)
    out: dict[str, Any] = {"patients_simulated": args.db_patients, "now": now.isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(
            home=work,
            database_url=f"sqlite:///{work / 'bench.db'}",
            master_key=SecretStr(generate_master_key()),
            webhook_secrets=[SecretStr("whsec_" + "b" * 40)],
            embedded_worker=False,
            destinations=args.destinations,
        )
        clock = FrozenClock(now)
        rt = bootstrap(settings, clock=clock)
        intake = rt.intake()

        # Set-up: simulate and ingest (streamed), then project.
        sim = Timed(_simulation(args, args.db_patients).events())
        started = time.perf_counter()
        yesterday = now - timedelta(days=1)
        accepted, last_day = ingest_but_the_last_day(intake, sim, now)
        ingest_wall = time.perf_counter() - started
        started = time.perf_counter()
        folded = rt.worker().drain(1000)
        project_s = time.perf_counter() - started
        out["setup"] = {
            "events_simulated": sim.items,
            "events_accepted": accepted,
            "simulate_seconds": round(sim.seconds, 1),
            "parse_and_ingest_seconds": round(ingest_wall - sim.seconds, 1),
            "ingest_events_per_s": round(accepted / max(ingest_wall - sim.seconds, 1e-9)),
            "project_seconds": round(project_s, 1),
            "project_events_per_s": round(folded.events / project_s),
            "profiles_folded": folded.patients,
            "db_mb": round((work / "bench.db").stat().st_size / 1e6, 1),
            "peak_rss_mb": _peak_rss_mb(),
        }

        # Measured: the scoring run.
        reset = _reset_peak()
        rss_before = _status("VmRSS")
        run = ScoreRun(
            rt.engine,
            rt.cipher(),
            intake,
            config,
            churn_risk_cutoff=0.7,
            actor="bench",
            on_written=rt.profiles_written,  # marks the changed patients for --destinations
        )
        started = time.perf_counter()
        with model_parts() as spent:
            report = run.run(yesterday, chunk=args.chunk)
        wall = time.perf_counter() - started
        scoring_peak = _status("VmHWM") if reset else None
        phases = {k: round(v, 2) for k, v in report.seconds.items()}
        score_write = sum(report.seconds[k] for k in ("read inputs", "score", "write"))
        out["score_run"] = {
            "patients": report.patients,
            "written": report.written,
            "stage_events": report.stage_events,
            "destinations_marked": list(settings.destinations),
            "chunk": args.chunk,
            "seconds": phases,
            "other_seconds": round(wall - sum(report.seconds.values()), 2),
            "total_seconds": round(wall, 2),
            "patients_per_s": round(report.patients / wall),
            "read_score_write_patients_per_s": round(report.patients / score_write),
            "fit_parts_seconds": _parts_out(
                spent, report.seconds.get("fit models", 0.0) + report.seconds["predict"]
            ),
            "model_refit_reason": report.refit_reason,
            "notes": report.notes,
            "customers_with_churn_risk": report.customers,
            "at_risk": report.at_risk,
            "pdc_measured": report.pdc_measured,
            "rss_mb_before": rss_before,
            "peak_rss_mb": scoring_peak,
        }
        started = time.perf_counter()
        projected = rt.worker().drain(1000)
        seconds = time.perf_counter() - started
        out["project_scores"] = {
            "patients": projected.patients,
            "events": projected.events,
            "transitions": projected.transitions,
            "seconds": round(seconds, 2),
            "events_per_s": round(projected.events / seconds) if projected.events else None,
        }
        started = time.perf_counter()
        again = run.run(yesterday, chunk=args.chunk)
        seconds = time.perf_counter() - started
        out["second_run_same_instant"] = {
            "patients": again.patients,
            "written": again.written,
            "seconds": round(seconds, 2),
            "phases": {k: round(v, 2) for k, v in again.seconds.items()},
            "model": "stored fit reused" if again.refit_reason is None else again.refit_reason,
        }
        out["daily_run"] = _daily_run(rt, intake, run, last_day, now, args.chunk)
        started = time.perf_counter()
        swept = rt.sweep().run()
        seconds = time.perf_counter() - started
        out["lifecycle_sweep"] = {
            "examined": swept.examined,
            "moved": swept.moved,
            "transitions": swept.transitions,
            "seconds": round(seconds, 2),
        }
        first_s = out["score_run"]["total_seconds"] + out["project_scores"]["seconds"] + seconds
        out["first_run_scoring_and_lifecycle_seconds"] = round(first_s, 1)
        daily = out["daily_run"]
        daily_s = (
            daily["kept_inputs"]["total_seconds"] + daily["project_crossings_seconds"] + seconds
        )
        out["daily_scoring_and_lifecycle_seconds"] = round(daily_s, 1)
        out["daily_extrapolated_to_1m_patients_seconds"] = round(daily_s * 1e6 / report.patients)

        # Model training on this log (as read from the store).
        started = time.perf_counter()
        log = ea.from_store(rt.engine, rt.cipher())
        read_s = time.perf_counter() - started
        with model_parts() as spent:
            population = population_scores(log, now)
        with threadpool_limits(1), model_parts() as spent_one:
            one = population_scores(log, now)
        out["model_training"] = {
            "log_rows": int(log.patient.size),
            "log_patients": log.patients,
            "from_store_seconds": round(read_s, 2),
            "population_scores_seconds": round(
                (population.fit_seconds + population.predict_seconds), 2
            ),
            "parts_seconds": _parts_out(
                spent, (population.fit_seconds + population.predict_seconds)
            ),
            "one_thread": {
                "population_scores_seconds": round((one.fit_seconds + one.predict_seconds), 2),
                "parts_seconds": _parts_out(spent_one, (one.fit_seconds + one.predict_seconds)),
            },
            "ltv_patients": len(population.ltv),
            "churn_customers": population.customers,
        }
        del log, population

        # The naive baseline: one patient per call, one transaction each.
        keys = run.patient_keys()[: args.naive]
        started = time.perf_counter()
        for key in keys:
            with rt.engine.begin() as conn:
                score_patients(conn, rt.cipher(), [key], now, config, actor="bench")
        naive_s = time.perf_counter() - started
        started = time.perf_counter()
        with rt.engine.begin() as conn:
            score_patients(conn, rt.cipher(), keys, now, config, actor="bench")
        chunked_s = time.perf_counter() - started
        naive_rate = len(keys) / naive_s
        run_rate = report.patients / score_write
        out["naive_baseline"] = {
            "what": "score_patients(conn, cipher, [key]) per patient, one transaction each",
            "patients": len(keys),
            "seconds": round(naive_s, 2),
            "patients_per_s": round(naive_rate),
            "same_patients_one_call_patients_per_s": round(len(keys) / chunked_s),
            "speedup_same_patients_one_call": round((len(keys) / chunked_s) / naive_rate, 1),
            "score_run_read_score_write_patients_per_s": round(run_rate),
            "speedup_score_run_read_score_write": round(run_rate / naive_rate, 1),
        }
        # The sweep again, --sweep-days later: the at_risk / churned thresholds crossed meanwhile.
        clock.advance(timedelta(days=args.sweep_days))
        started = time.perf_counter()
        swept = rt.sweep().run()
        seconds = time.perf_counter() - started
        out["lifecycle_sweep_later"] = {
            "days_later": args.sweep_days,
            "examined": swept.examined,
            "moved": swept.moved,
            "transitions": swept.transitions,
            "seconds": round(seconds, 2),
            "profiles_per_s": round(swept.examined / seconds) if swept.examined else None,
        }
        rt.engine.dispose()
    out["peak_rss_mb"] = _peak_rss_mb()
    out["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


def _daily_run(
    rt: Any, intake: Any, run: ScoreRun, last_day: list[Any], now: datetime, chunk: int
) -> dict[str, Any]:
    """The next day: its events arrive and are folded, then a run on the kept inputs, then the
    same run reading every patient (the way every run read before inputs were kept)."""
    started = time.perf_counter()
    accepted = 0
    for start in range(0, len(last_day), 2000):
        accepted += intake.accept(
            last_day[start : start + 2000], source="import", actor="bench", unknown_patients="skip"
        ).accepted
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    folded = rt.worker().drain(1000)
    project_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "last_day_events": accepted,
        "last_day_patients": len({e.patient_id for e in last_day if e.patient_id}),
        "set_up_seconds": {"ingest": round(ingest_s, 2), "project": round(project_s, 2)},
        "profiles_folded": folded.patients,
    }
    for name, full_read in (("kept_inputs", False), ("full_read", True)):
        started = time.perf_counter()
        report = run.run(now, chunk=chunk, full_read=full_read)
        wall = time.perf_counter() - started
        out[name] = {
            "patients": report.patients,
            "read_from_store": report.inputs_read,
            "written": report.written,
            "stage_events": report.stage_events,
            "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
            "total_seconds": round(wall, 2),
        }
        with rt.engine.connect() as conn:
            size = conn.execute(select(func.length(analytics_inputs.c.sealed))).scalar_one()
        out[name]["kept_inputs_mb"] = round(size / 1e6, 1)
        if not full_read:
            started = time.perf_counter()
            rt.worker().drain(1000)  # its at-risk crossings
            out["project_crossings_seconds"] = round(time.perf_counter() - started, 2)
    return out


# -- 4. 1,000,000 patients in memory -------------------------------------------------------------


class Columns:
    """What the store would give the chunked scoring, kept from the same stream as compact columns:
    the scored event types (patient, type, time), fills, and the catalog fields the fit rules
    read, as the projection would set them from registration and updates."""

    def __init__(self, types: Iterable[str]) -> None:
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.type_names = sorted(set(types))
        self._code = {t: i for i, t in enumerate(self.type_names)}
        self.patient = array("q")
        self.type_code = array("b")
        self.occurred_us = array("q")
        self.profile: dict[str, list[Any]] = {
            f: [] for f in ("acquisition_channel", "date_of_birth", "insurance_provider", "state")
        }
        self.features: list[set[str] | None] = []
        self._rx: dict[int, tuple[str, int]] = {}
        self.groups: dict[tuple[int, str], int] = {}
        self.fill_group = array("q")
        self.fill_day = array("q")
        self.fill_supply = array("q")

    def take(self, e: dict[str, Any], key: str) -> None:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.keys)
            self.keys.append(key)
            for column in self.profile.values():
                column.append(None)
            self.features.append(None)
        type_, data = e["type"], e.get("data") or {}
        code = self._code.get(type_)
        at = None
        if code is not None or type_ == "order.paid":
            at = datetime.fromisoformat(e["occurred_at"])
        if code is not None:
            assert at is not None
            self.patient.append(i)
            self.type_code.append(code)
            self.occurred_us.append(to_micros(at))
        if type_ == "patient.registered" or type_ == "patient.updated":
            for name, value in (
                ("acquisition_channel", data.get("acquisition_channel")),
                ("date_of_birth", data.get("date_of_birth")),
                ("state", (data.get("address") or {}).get("state")),
                ("insurance_provider", (data.get("insurance") or {}).get("provider")),
            ):
                if value is not None:
                    self.profile[name][i] = value
        elif type_ == "session.tracked":
            if data.get("channel") and self.profile["acquisition_channel"][i] is None:
                self.profile["acquisition_channel"][i] = data["channel"]
            if data.get("feature"):
                used = self.features[i]
                if used is None:
                    used = self.features[i] = set()
                used.add(data["feature"])
        elif type_ == "prescription.approved":
            medication, supply = data.get("medication"), data.get("days_supply")
            if isinstance(medication, str) and isinstance(supply, int) and supply > 0:
                self._rx[i] = (medication, supply)
        elif type_ == "order.paid" and i in self._rx:
            assert at is not None
            medication, supply = self._rx[i]
            g = self.groups.setdefault((i, medication), len(self.groups))
            self.fill_group.append(g)
            self.fill_day.append(day_number(at.astimezone(UTC).date()))
            self.fill_supply.append(supply)

    def rows(self) -> Iterator[tuple[int, str, int]]:
        names = self.type_names
        return zip(self.patient, (names[c] for c in self.type_code), self.occurred_us, strict=True)


def memory_part(args: argparse.Namespace) -> dict[str, Any]:
    now = _now(args.months)
    config = load_scoring_config(None)
    lead = config.lead
    columns = Columns([r.event for r in lead.behaviour] + list(ENGAGEMENT_EVENTS))
    out: dict[str, Any] = {
        "patients_simulated": args.patients,
        "what": "compute only, in memory: no database read or write",
    }

    # The simulator streamed once into from_wire; the compact columns are kept on the way.
    sim = Timed(_simulation(args, args.patients).events())
    kept = [0.0]  # seconds spent keeping the columns

    def stream() -> Iterator[dict[str, Any]]:
        clock = time.perf_counter
        for e in sim:
            key = e["patient"].get("id")
            if key is not None:
                t = clock()
                columns.take(e, key)
                kept[0] += clock() - t
            yield e

    started = time.perf_counter()
    log = ea.from_wire(stream())
    wall = time.perf_counter() - started
    out["setup"] = {
        "events_simulated": sim.items,
        "simulate_seconds": round(sim.seconds, 1),
        "keep_columns_seconds": round(kept[0], 1),
        "stream_wall_seconds": round(wall, 1),
        "rss_mb_after": _status("VmRSS"),
    }
    from_wire_s = wall - sim.seconds - kept[0]
    n = len(columns.keys)
    timings: dict[str, float] = {
        "event_arrays.from_wire (estimated: stream wall - simulator - columns kept)": from_wire_s
    }

    with model_parts() as spent:
        population = population_scores(log, now)
    timings["population_scores (fit + predict, CLV and churn)"] = (
        population.fit_seconds + population.predict_seconds
    )
    out["population_scores_parts_seconds"] = _parts_out(
        spent, (population.fit_seconds + population.predict_seconds)
    )
    # The same with OpenMP / BLAS held to one thread (threadpoolctl): not counted in the total.
    with threadpool_limits(1), model_parts() as spent_one:
        one = population_scores(log, now)
    out["population_scores_one_thread"] = {
        "seconds": round((one.fit_seconds + one.predict_seconds), 2),
        "parts_seconds": _parts_out(spent_one, (one.fit_seconds + one.predict_seconds)),
    }
    del one
    out["log"] = {
        "rows": int(log.patient.size),
        "patients": log.patients,
        "ltv_patients": len(population.ltv),
        "churn_customers": population.customers,
        "notes": [x for x in (population.ltv_note, population.churn_note) if x],
    }
    del log

    t = time.perf_counter()
    table = EventTable.from_rows(n, columns.rows())
    timings["EventTable.from_rows"] = time.perf_counter() - t

    t = time.perf_counter()
    points = lead_points(lead, columns.profile, table, now)
    timings["lead_points"] = time.perf_counter() - t

    period = MeasurementPeriod.trailing(now.date())
    t = time.perf_counter()
    pdcs = pdc_table(
        len(columns.groups),
        np.frombuffer(columns.fill_group, dtype=np.int64),
        np.frombuffer(columns.fill_day, dtype=np.int64),
        np.frombuffer(columns.fill_supply, dtype=np.int64),
        period,
    )
    group_patient = np.fromiter((i for i, _ in columns.groups), dtype=np.int64)
    value = pdcs.pdc
    measured = ~np.isnan(value)
    total = np.bincount(group_patient[measured], weights=value[measured], minlength=n)
    count = np.bincount(group_patient[measured], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pdc = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    timings["pdc_table (+ mean per patient)"] = time.perf_counter() - t

    t = time.perf_counter()
    features = [0 if f is None else len(f) for f in columns.features]
    engagement = engagement_scores(
        config.engagement, table, now, features_used=features, adherence=mean_pdc
    )
    timings["engagement_scores"] = time.perf_counter() - t

    # Per patient, as ScoreRun does it: the batch's arrays, five rounded numbers each.
    t = time.perf_counter()
    per_patient: list[list[Pdc]] = [[] for _ in range(n)]
    batch = ScoreBatch(list(columns.keys), points, engagement, per_patient, mean_pdc)
    lead = points.score.tolist()
    changed = 0
    for i in range(n):
        after = scores_of(batch, lead, i, population)
        changed += after["lead_score"] is not None
    timings["per patient: scores_of on the batch arrays (Python loop)"] = time.perf_counter() - t
    assert changed == n

    vectorised = sum(
        v
        for k, v in timings.items()
        if k.startswith(("EventTable", "lead_points", "pdc_table", "engagement"))
    )
    total_s = sum(timings.values())
    out["patients"] = n
    out["scored_event_rows"] = int(table.patient.size)
    out["fills"] = len(columns.fill_group)
    out["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    out["lead_engagement_pdc_vectorised_seconds"] = round(vectorised, 2)
    out["total_compute_seconds"] = round(total_s, 1)
    out["target_seconds"] = TARGET_1M_SECONDS
    out["meets_target_compute_only"] = total_s <= TARGET_1M_SECONDS
    out["means"] = {
        "lead": round(float(points.score.mean()), 2),
        "engagement": round(float(engagement.score.mean()), 2),
        "pdc_measured": int(np.isfinite(mean_pdc).sum()),
    }
    out["peak_rss_mb"] = _status("VmHWM")  # this process's own (ru_maxrss counts the parent's)
    out["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1_000_000, help="the in-memory part")
    parser.add_argument("--db-patients", type=int, default=100_000, help="the store part")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--population", choices=("default", "buyers"), default="default")
    parser.add_argument("--chunk", type=int, default=5000, help="ScoreRun patients per chunk")
    parser.add_argument("--naive", type=int, default=2000, help="patients for the baseline")
    parser.add_argument("--sweep-days", type=int, default=30, help="the later sweep's delay")
    parser.add_argument(
        "--destinations",
        nargs="*",
        default=["hubspot"],
        help="CRMs the run marks changed patients for (TELECRM_DESTINATIONS)",
    )
    parser.add_argument("--skip-1m", action="store_true", help="skip the in-memory part")
    parser.add_argument("--skip-db", action="store_true", help="skip the store part")
    parser.add_argument("--part", choices=("all", "memory"), default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part == "memory":
        print(json.dumps(memory_part(args)))
        return
    out: dict[str, Any] = {
        "benchmark": "analytics_scoring",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "population": args.population,
        "months": args.months,
        "seed": args.seed,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if not args.skip_db:
        out["store"] = store_part(args)
    if not args.skip_1m:
        # A child process, so its peak RSS is its own.
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--part", "memory"],
            check=True,
            stdout=subprocess.PIPE,
        )
        out["in_memory_1m" if args.patients == 1_000_000 else "in_memory"] = json.loads(
            child.stdout
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
