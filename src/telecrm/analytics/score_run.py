"""`telecrm analytics run`: score every patient, and store the scores that changed beside the profiles.

Two passes. The population models first, fitted on the whole event log: BG/NBD + Gamma-Gamma +
sBG for the 12-month lifetime value, the calibrated churn model trained on the three latest
fully observed windows. Then the patients in chunks: lead and engagement scores and PDC from the
store, rounded as a CRM shows them, compared with what each patient holds, and the changed ones
written in bulk to `profile_scores` (adherence sealed) in the chunk's transaction, which also
marks them for the sync. Readers that show or send scores lay that row over the folded profile
(`codec.lay_scores`).

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
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, select

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.model_store import (
    MAX_MODEL_AGE,
    latest_models,
    save_models,
    why_not_reused,
)
from telecrm.analytics.patient_scores import ProfilesRead, ScoreBatch, read_profiles, score_batch
from telecrm.analytics.population import (
    PopulationModels,
    PopulationScores,
    fit_population,
    predict_population,
)
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.domain.clock import to_micros
from telecrm.domain.events import Event, parse_event
from telecrm.ingest.intake import EventIntake
from telecrm.profiles.codec import SCORED_PHI, ProfilesWritten
from telecrm.profiles.tables import profile_scores, profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import upsert_rows_fast

SCORE_FIELDS = ("lead_score", "engagement_score", "churn_risk", "predicted_ltv", "adherence_pdc")
DIGITS = {
    "lead_score": 1,
    "engagement_score": 1,
    "churn_risk": 3,
    "predicted_ltv": 2,
    "adherence_pdc": 3,
}
ADHERENT = 0.8  # PQA: a PDC of 80 % or more
MODEL = "bgnbd-gg-sbg_hgb-calibrated"


def rounded(value: float | None, name: str) -> float | None:
    """As stored and sent: rounded, and None for anything not finite."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DIGITS[name])


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


def _held(read: ProfilesRead) -> dict[str, tuple[str, dict[str, float | None]]]:
    """Per live profile: its patient id and the five numbers it holds now."""
    out: dict[str, tuple[str, dict[str, float | None]]] = {}
    for key, patient_id in read.patient_ids.items():
        if patient_id is None:
            continue
        facts = read.facts[key]
        held: dict[str, float | None] = {n: facts.get(n) for n in SCORE_FIELDS[:4]}
        held["adherence_pdc"] = read.values[key].get("adherence_pdc")
        out[key] = (patient_id, held)
    return out


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
        query = (
            select(profiles.c.patient_key)
            .where(profiles.c.deleted.is_(False))
            .where(profiles.c.patient_id.is_not(None))
            .where(profiles.c.merged_into.is_(None))
            .order_by(profiles.c.patient_key)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def run(
        self,
        now: datetime,
        *,
        chunk: int = 5_000,
        on_progress: Callable[[int, int], None] | None = None,
        log: ea.EventArrays | None = None,
        refit: bool = False,
        max_model_age: timedelta = MAX_MODEL_AGE,
    ) -> RunReport:
        report = RunReport(run_id=uuid.uuid4().hex[:12])
        started = time.perf_counter()
        if log is None:
            log = ea.from_store(self._engine, self._cipher, customers_only=True)
        report.seconds["read event log"] = time.perf_counter() - started
        models = self._models(log, now, report, refit=refit, max_model_age=max_model_age)
        population = predict_population(models, log, now)
        report.seconds["predict"] = population.predict_seconds
        report.notes = [n for n in (population.ltv_note, population.churn_note) if n]
        keys = self.patient_keys()
        started = time.perf_counter()
        for start in range(0, len(keys), chunk):
            self._chunk(keys[start : start + chunk], now, population, report)
            if on_progress is not None:
                on_progress(min(start + chunk, len(keys)), len(keys))
        report.seconds["score and write"] = time.perf_counter() - started
        return report

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

    def _at_risk(self, scores: dict[str, float | None]) -> bool:
        risk = scores["churn_risk"]
        return risk is not None and risk >= self._cutoff

    def _chunk(
        self, keys: list[str], now: datetime, population: PopulationScores, report: RunReport
    ) -> None:
        now_us = to_micros(now)
        with self._engine.begin() as conn:
            wanted = self._config.lead.profile_fields() | {SCORED_PHI}
            read = read_profiles(conn, self._cipher, keys, wanted)  # once: scores and held
            batch = score_batch(
                conn, self._cipher, keys, now, self._config, actor=self._actor, profiles_read=read
            )
            lead = batch.lead.score.tolist()
            held = _held(read)
            rows: list[dict[str, Any]] = []
            crossed: list[Event] = []
            for i, key in enumerate(batch.keys):
                if key not in held:
                    continue  # erased or merged since the list was read
                patient_id, before = held[key]
                after = scores_of(batch, lead, i, population)
                _count(report, after, self._cutoff)
                if after == before:
                    report.unchanged += 1
                    continue
                rows.append(
                    {
                        "patient_key": key,
                        "scores": self._row(key, after, now_us, report.run_id),
                        "updated_us": now_us,
                    }
                )
                if self._at_risk(after) != self._at_risk(before):
                    crossed.append(scored_event(patient_id, key, after, now))
            if not rows:
                return
            upsert_rows_fast(conn, profile_scores, rows, ["patient_key"], ["scores", "updated_us"])
            written = [r["patient_key"] for r in rows]
            append_audit(
                conn,
                [
                    AuditEntry(
                        self._actor,
                        "write",
                        "profile_scores",
                        written,
                        [*SCORE_FIELDS],
                        f"analytics run {report.run_id}, models {report.model_id}",
                    )
                ],
                at_us=now_us,
            )
            if self._on_written is not None:
                self._on_written(conn, written, now_us)
            report.written += len(rows)
            if crossed:
                stored = self._intake.store_in(conn, crossed, source="analytics", actor=self._actor)
                report.stage_events += stored.accepted

    def _row(self, key: str, scores: dict[str, float | None], now_us: int, run_id: str) -> str:
        adherence = scores[SCORED_PHI]
        sealed = (
            None
            if adherence is None
            else self._cipher.encrypt_json(adherence, record_id=key, field=SCORED_PHI)
        )
        return orjson.dumps(
            {**scores, SCORED_PHI: sealed, "scored_us": now_us, "run": run_id},
            option=orjson.OPT_SORT_KEYS,
        ).decode()


def _count(report: RunReport, s: dict[str, float | None], cutoff: float) -> None:
    report.patients += 1
    report.lead_sum += s["lead_score"] or 0.0
    report.engagement_sum += s["engagement_score"] or 0.0
    if s["churn_risk"] is not None:
        report.customers += 1
        report.at_risk += s["churn_risk"] >= cutoff
    report.predicted_ltv_total += s["predicted_ltv"] or 0.0
    if s["adherence_pdc"] is not None:
        report.pdc_measured += 1
        report.pdc_adherent += s["adherence_pdc"] >= ADHERENT


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
    return [
        ("patients scored", f"{report.patients:,}"),
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
