"""`telecrm analytics run`: score every patient, and store the scores that changed beside the profiles.

First the run's inputs as columns over every live patient: the last run's, kept sealed, with
the events logged since added (`run_reads`), or everyone read from the store. Then the
population models (a stored fit reused for a week, else fitted on the customers' history):
BG/NBD + Gamma-Gamma + sBG for the 12-month lifetime value, the calibrated churn model trained
on the three latest fully observed windows. Then everyone's lead and engagement scores and PDC
at once (`run_scoring`), rounded as a CRM shows them and compared with what each patient holds;
the changed ones are written in bulk to `profile_scores` (adherence sealed) in chunks, each in a
transaction that also marks them for the sync. Readers that show or send scores lay that row
over the folded profile (`codec.lay_scores`).

Only a change that moves a stage goes through the event log: when a customer's churn risk
crosses the at-risk cutoff (either way) the run also stores an `analytics.scored` event, so the
projection moves the stage, journeys see it, and a rebuild derives the same stage history. A
score row is derived data, like a report: it is not part of the log, a rebuild keeps it, and an
erasure or retention deletes it with the profile (docs/analytics.md, "Where the scores live").

A model that cannot be fitted (too little history) leaves its score empty, with the reason in
the report: never a NaN, never a made-up number.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Engine

from telecrm.analytics import event_arrays as ea
from telecrm.analytics import run_inputs
from telecrm.analytics.inputs_store import (
    StoredInputs,
    forget_inputs,
    load_inputs,
    log_frontier,
    mark_incomplete,
    pending_keys,
    save_inputs,
)
from telecrm.analytics.model_store import (
    MAX_MODEL_AGE,
    latest_models,
    save_models,
    why_not_reused,
)
from telecrm.analytics.patient_scores import ScoreBatch
from telecrm.analytics.population import (
    PopulationModels,
    PopulationScores,
    fit_population,
    predict_population,
)
from telecrm.analytics.run_inputs import SCORE_FIELDS, RunInputs
from telecrm.analytics.run_reads import InputsReader
from telecrm.analytics.run_scoring import (
    FloatArray,
    as_stored,
    changed_rows,
    rounded,
    score_inputs,
    shown,
)
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.domain.clock import to_micros
from telecrm.domain.events import Event, parse_event
from telecrm.ingest.intake import EventIntake
from telecrm.profiles.codec import SCORED_PHI, ProfilesWritten
from telecrm.profiles.tables import LIVE_WHERE, LIVE_WHERE_SQLITE, profile_scores
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import upsert_rows_fast

ADHERENT = 0.8  # PQA: a PDC of 80 % or more
MODEL = "bgnbd-gg-sbg_hgb-calibrated"
Progress = Callable[[str, int, int], None]  # (what, done, of)


def scores_of(
    batch: ScoreBatch, lead: list[float], i: int, population: PopulationScores
) -> dict[str, float | None]:
    """Patient i's five numbers as stored and sent (`lead`: the batch's lead totals)."""
    key = batch.keys[i]
    return {
        "lead_score": rounded(lead[i], "lead_score"),
        "engagement_score": rounded(float(batch.engagement.score[i]), "engagement_score"),
        "churn_risk": rounded(population.churn.get(key), "churn_risk"),
        "predicted_ltv": rounded(population.ltv_of(key), "predicted_ltv"),
        "adherence_pdc": rounded(float(batch.mean_pdc[i]), "adherence_pdc"),
    }


@dataclass
class RunReport:
    patients: int = 0
    written: int = 0  # score rows written: patients whose rounded scores changed
    unchanged: int = 0
    stage_events: int = 0  # analytics.scored events stored: churn risk crossed the cutoff
    run_id: str = ""
    model_id: str = ""  # the stored fit the model scores came from
    model_fitted_at: datetime | None = None
    refit_reason: str | None = None  # why this run fitted the models (None: a stored fit used)
    notes: list[str] = field(default_factory=list)
    customers: int = 0
    at_risk: int = 0  # customers at or over the churn-risk cutoff
    predicted_ltv_total: float = 0.0
    lead_sum: float = 0.0
    engagement_sum: float = 0.0
    pdc_measured: int = 0
    pdc_adherent: int = 0
    inputs_read: int = 0  # patients read from the store (all, or only the changed ones)
    inputs_reason: str | None = None  # why everyone was read (None: the kept inputs were used)
    inputs_kept_at: datetime | None = None  # when the inputs built on were kept
    logged_since: int = 0  # events logged since the kept inputs' frontier, added to them
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def mean_lead(self) -> float | None:
        return self.lead_sum / self.patients if self.patients else None

    @property
    def mean_engagement(self) -> float | None:
        return self.engagement_sum / self.patients if self.patients else None

    @property
    def adherent_share(self) -> float | None:
        return self.pdc_adherent / self.pdc_measured if self.pdc_measured else None


def scored_event(patient_id: str, patient_key: str, scores: dict[str, Any], now: datetime) -> Event:
    # The scores are part of the id: a run repeated at the same instant with the same numbers is
    # a duplicate (stored once), one with other numbers (late events came in) is a new event.
    material = f"{patient_key}\x00{to_micros(now)}\x00".encode() + orjson.dumps(
        scores, option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.sha256(material).hexdigest()[:24]
    return parse_event(
        {
            "id": f"as_{digest}",
            "type": "analytics.scored",
            "version": 1,
            "occurred_at": now.isoformat(),
            "patient": {"id": patient_id},
            "data": {**scores, "model": MODEL},
        },
        now=now,
    )


def live_keys_sql(dialect: str) -> str:
    """The live patients' keys, stating `ix_profiles_live`'s condition as the index does.
    (SQLite without statistics would rather range-scan the patient-id index: told which.)"""
    if dialect == "postgresql":
        return f"SELECT patient_key FROM profiles WHERE {LIVE_WHERE}"  # noqa: S608 (constant)
    return (
        "SELECT patient_key FROM profiles INDEXED BY ix_profiles_live "  # noqa: S608 (constant)
        f"WHERE {LIVE_WHERE_SQLITE}"
    )


class ScoreRun:
    """One pass over every live patient; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        cipher: FieldCipher,
        intake: EventIntake,
        config: ScoringConfig,
        *,
        churn_risk_cutoff: float,
        actor: str = "analytics",
        on_written: ProfilesWritten | None = None,
    ) -> None:
        self._engine, self._cipher, self._intake = engine, cipher, intake
        self._config, self._cutoff, self._actor = config, churn_risk_cutoff, actor
        self._on_written = on_written  # marks the changed patients for the sync

    def patient_keys(self) -> list[str]:
        """The live patients' keys, sorted: a scan of the partial index `ix_profiles_live`."""
        sql = live_keys_sql(self._engine.dialect.name)
        with self._engine.connect() as conn:
            # A million keys: the driver's own cursor, without a Row object per key.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql)
                return sorted(key for (key,) in cursor.fetchall())
            finally:
                cursor.close()

    def run(
        self,
        now: datetime,
        *,
        chunk: int = 5_000,
        on_progress: Progress | None = None,
        log: ea.EventArrays | None = None,
        refit: bool = False,
        max_model_age: timedelta = MAX_MODEL_AGE,
        full_read: bool = False,
    ) -> RunReport:
        report = RunReport(run_id=uuid.uuid4().hex[:12])
        fingerprint = run_inputs.fingerprint(self._config)
        started = time.perf_counter()
        inputs, frontier = self._inputs(now, fingerprint, report, full_read, chunk, on_progress)
        report.seconds["read inputs"] = time.perf_counter() - started
        history = inputs.log if log is None else log
        models = self._models(history, now, report, refit=refit, max_model_age=max_model_age)
        population = predict_population(models, history, now)
        report.seconds["predict"] = population.predict_seconds
        report.notes = [n for n in (population.ltv_note, population.churn_note) if n]
        started = time.perf_counter()
        raw = score_inputs(inputs, self._config, now, population)
        report.seconds["score"] = time.perf_counter() - started
        started = time.perf_counter()
        now_shown = shown(raw)
        self._count(report, now_shown)
        changed = changed_rows(now_shown, inputs.held).tolist()
        if changed:
            with self._engine.begin() as conn:
                mark_incomplete(conn)
        for start in range(0, max(inputs.patients, 1), chunk):
            self._write(inputs, now_shown, changed, start, start + chunk, now, report)
            if on_progress is not None:
                done = min(start + chunk, inputs.patients)
                on_progress("storing changed scores", done, inputs.patients)
        report.seconds["write"] = time.perf_counter() - started
        started = time.perf_counter()
        with self._engine.begin() as conn:
            if frontier is None:
                forget_inputs(conn)  # read past an unknown frontier: nothing to build on
            else:
                save_inputs(
                    conn, self._cipher, inputs, frontier=frontier, fingerprint=fingerprint, now=now
                )
        report.seconds["keep inputs"] = time.perf_counter() - started
        return report

    def _inputs(
        self,
        now: datetime,
        fingerprint: str,
        report: RunReport,
        full_read: bool,
        chunk: int,
        on_progress: Progress | None,
    ) -> tuple[RunInputs, int | None]:
        """This run's inputs: the kept ones with what was logged since added, or a full read;
        and the log frontier to keep them with (None: keep nothing, see below)."""
        frontier = log_frontier(self._engine)
        live = self.patient_keys()
        stored: StoredInputs | None = None
        why = "asked to (--full-read)"
        if frontier is None:
            # PostgreSQL transactions older than the run were still open: which seqs are
            # complete is unknown, so read everything visible and keep nothing this time.
            why = "transactions open for over 10 s left the event log's end unknown"
        elif not full_read:
            with self._engine.connect() as conn:
                stored, why = load_inputs(conn, self._cipher, fingerprint)
            if stored is not None and frontier < stored.frontier:
                stored, why = None, "the event log is behind them (a restored database?)"
        with self._engine.connect() as conn:
            pending = pending_keys(conn)  # before the profiles are read: see inputs_store
        reader = InputsReader(
            self._engine,
            self._cipher,
            self._config,
            actor=self._actor,
            purpose=f"analytics run {report.run_id}",
            at_us=to_micros(now),
            chunk=chunk,
            on_progress=on_progress,
        )
        if stored is not None and frontier is not None:
            gathered = reader.since(live, stored, frontier)
            report.inputs_kept_at = stored.built_at
        else:
            gathered = reader.everyone(live, frontier)
            report.inputs_reason = why
        inputs = gathered.inputs
        inputs.recheck = sorted(pending & set(inputs.keys))
        report.inputs_read = len(gathered.read)
        report.logged_since = gathered.logged_since
        return inputs, frontier

    def _models(
        self,
        log: ea.EventArrays,
        now: datetime,
        report: RunReport,
        *,
        refit: bool,
        max_model_age: timedelta,
    ) -> PopulationModels:
        """The newest stored fit if it may be reused at `now`; else a new fit, stored."""
        reason = "asked to (--refit)" if refit else "no fit was stored yet"
        if not refit:
            with self._engine.connect() as conn:
                stored = latest_models(conn, self._cipher)
            if stored is not None:
                why = why_not_reused(stored.summary, stored.fitted_at, now, max_model_age)
                if why is None and stored.models is not None:
                    report.model_id, report.model_fitted_at = stored.model_id, stored.fitted_at
                    return stored.models
                reason = f"the stored fit was not reused: {why}"
        models = fit_population(log, now)
        report.seconds["fit models"] = models.fit_seconds
        with self._engine.begin() as conn:
            report.model_id = save_models(conn, self._cipher, models, now)
        report.model_fitted_at, report.refit_reason = now, reason
        return models

    def _count(self, report: RunReport, now: FloatArray) -> None:
        """The run's aggregates over every patient's shown numbers."""
        report.patients = now.shape[0]
        lead, engagement, risk, ltv, pdc = (now[:, j] for j in range(len(SCORE_FIELDS)))
        report.lead_sum = float(np.nansum(lead))
        report.engagement_sum = float(np.nansum(engagement))
        report.predicted_ltv_total = float(np.nansum(ltv))
        risks = risk[np.isfinite(risk)]
        report.customers = int(risks.size)
        report.at_risk = int(np.count_nonzero(risks >= self._cutoff))
        measured = pdc[np.isfinite(pdc)]
        report.pdc_measured = int(measured.size)
        report.pdc_adherent = int(np.count_nonzero(measured >= ADHERENT))

    def _write(
        self,
        inputs: RunInputs,
        now_shown: FloatArray,
        changed: list[int],
        start: int,
        end: int,
        now: datetime,
        report: RunReport,
    ) -> None:
        """Patients start..end: audit the use of their kept inputs, store the changed scores."""
        now_us = to_micros(now)
        keys = inputs.keys[start:end]
        mine = changed[bisect_left(changed, start) : bisect_left(changed, end)]
        with np.errstate(invalid="ignore"):  # NaN risks are not at risk
            at_risk_now = now_shown[mine, 2] >= self._cutoff
            at_risk_before = inputs.held[mine, 2] >= self._cutoff
        rows: list[dict[str, Any]] = []
        crossed: list[Event] = []
        run_id = report.run_id
        for i, values, flipped in zip(
            mine, now_shown[mine].tolist(), (at_risk_now != at_risk_before).tolist(), strict=True
        ):
            key = inputs.keys[i]
            lead, engagement, risk, ltv, pdc = (None if v != v else v for v in values)
            sealed = (
                None
                if pdc is None
                else self._cipher.encrypt_json(pdc, record_id=key, field=SCORED_PHI)
            )
            # The stored row, keys in sorted order (readers and digests see one form).
            stored = {
                SCORED_PHI: sealed,
                "churn_risk": risk,
                "engagement_score": engagement,
                "lead_score": lead,
                "predicted_ltv": ltv,
                "run": run_id,
                "scored_us": now_us,
            }
            rows.append(
                {"patient_key": key, "scores": orjson.dumps(stored).decode(), "updated_us": now_us}
            )
            if flipped:
                scores = as_stored(values)
                crossed.append(scored_event(inputs.patient_ids[i], key, scores, now))
        inputs.held[mine] = now_shown[mine]
        report.unchanged += len(keys) - len(rows)
        if not keys:
            return
        entries = [
            AuditEntry(
                self._actor,
                "read",
                "analytics_inputs",
                keys,
                sorted(self._sealed_inputs()),
                f"analytics run {report.run_id}",
            )
        ]
        if rows:
            entries.append(
                AuditEntry(
                    self._actor,
                    "write",
                    "profile_scores",
                    [r["patient_key"] for r in rows],
                    [*SCORE_FIELDS],
                    f"analytics run {report.run_id}, models {report.model_id}",
                )
            )
        with self._engine.begin() as conn:
            append_audit(conn, entries, at_us=now_us)
            if not rows:
                return
            upsert_rows_fast(conn, profile_scores, rows, ["patient_key"], ["scores", "updated_us"])
            if self._on_written is not None:
                self._on_written(conn, [r["patient_key"] for r in rows], now_us)
            report.written += len(rows)
            if crossed:
                result = self._intake.store_in(conn, crossed, source="analytics", actor=self._actor)
                report.stage_events += result.accepted

    def _sealed_inputs(self) -> set[str]:
        """The PHI the kept inputs hold: the lead rules' fields, medications, supplies."""
        return {*self._config.lead.profile_fields(), "medication", "days_supply", SCORED_PHI}


def headline(report: RunReport) -> list[tuple[str, str]]:
    """The numbers a growth team reads first, as (label, value) rows."""

    def fmt(v: float | None, pattern: str) -> str:
        return "-" if v is None else pattern.format(v)

    if report.refit_reason is not None:
        models = f"fitted now ({report.refit_reason})"
    elif report.model_fitted_at is not None:
        models = f"stored fit of {report.model_fitted_at:%Y-%m-%d %H:%M} UTC"
    else:
        models = "-"
    if report.inputs_reason is not None:
        inputs = f"all {report.inputs_read:,} read ({report.inputs_reason})"
    else:
        inputs = f"{report.inputs_read:,} read again, the rest kept from the last run"
    return [
        ("patients scored", f"{report.patients:,}"),
        ("patients read from the store", inputs),
        ("value and churn models", models),
        ("scores changed (rows written)", f"{report.written:,}"),
        ("crossed the at-risk cutoff (stage events)", f"{report.stage_events:,}"),
        ("mean lead score", fmt(report.mean_lead, "{:.1f}")),
        ("mean engagement score", fmt(report.mean_engagement, "{:.1f} / 100")),
        ("customers with a churn risk", f"{report.customers:,}"),
        ("at or over the at-risk cutoff", f"{report.at_risk:,}"),
        ("predicted 12-month value, all patients", f"${report.predicted_ltv_total:,.0f}"),
        (
            "adherent (PDC >= 80 %), of patients measured",
            fmt(report.adherent_share, "{:.1%}") + f" of {report.pdc_measured:,}",
        ),
    ]
