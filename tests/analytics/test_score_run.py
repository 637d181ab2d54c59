"""`telecrm analytics run`: every live patient scored, the changed scores stored beside the
profiles in bulk and read with them (sent as CRM fields, exported), churn risk crossing the
cutoff stored as events that move customers into and out of at_risk, and a rebuild of the
projection giving the same profiles and stages. Both databases."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
import typer
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from telecrm.analytics import event_arrays as ea
from telecrm.analytics import run_commands
from telecrm.analytics.patient_scores import score_patients
from telecrm.analytics.population import population_scores
from telecrm.analytics.score_run import ScoreRun, live_keys_sql
from telecrm.analytics.scoring_config import load_scoring_config
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage
from telecrm.ingest.tables import events
from telecrm.profiles.codec import ProfilesWritten, decode
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profile_rows, profile_scores, profiles, stage_transitions
from telecrm.security.audit import audit_rows
from telecrm.security.erasure import request_erasure
from telecrm.simulate import SimulationConfig
from telecrm.sync.mapping import load_mapping
from telecrm.sync.planner import desired_records, mark_dirty
from telecrm.sync.tables import sync_dirty
from tests.analytics.clv_population import BUYERS
from tests.support.builders import customer_journey, registration

SIM = SimulationConfig(patients=600, months=12, seed=7, start=date(2025, 1, 1), **BUYERS)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = 0.7
CONFIG = load_scoring_config(None)


def ingest(runtime: Runtime, clock: FrozenClock, wire: list[dict[str, object]]) -> None:
    clock.set(NOW)
    parsed = [parse_event(e, now=clock.now()) for e in wire]
    for start in range(0, len(parsed), 2000):
        runtime.intake().accept(
            parsed[start : start + 2000], source="import", actor="test", unknown_patients="skip"
        )
    runtime.worker().drain(1000)


def score_run(runtime: Runtime, on_written: ProfilesWritten | None = None) -> ScoreRun:
    return ScoreRun(
        runtime.engine,
        runtime.cipher(),
        runtime.intake(),
        CONFIG,
        churn_risk_cutoff=CUTOFF,
        on_written=on_written,
    )


def erase(runtime: Runtime, clock: FrozenClock, patient_id: str) -> None:
    request_erasure(
        runtime.engine,
        runtime.intake(),
        runtime.blind_index(),
        patient_id,
        cipher=runtime.cipher(),
        reason="test",
        actor="test",
        now=clock.now(),
    )


def command_app(module: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """A CLI module's commands on the test runtime, in a group of two (so a command keeps its
    name)."""
    monkeypatch.setattr(module, "runtime", lambda: runtime)
    app = typer.Typer()
    module.register(app)
    app.command("noop")(lambda: None)
    return app


def stored_profiles(runtime: Runtime) -> dict[str, tuple]:
    """The live patients' profiles (not erased, not an anonymous visitor merged into one)."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            profile_rows().where(
                profiles.c.patient_id.is_not(None),
                profiles.c.merged_into.is_(None),
                profiles.c.deleted.is_(False),
            )
        ).all()
    return {r.patient_key: (r, decode(r, runtime.cipher()).profile) for r in rows}


def test_a_run_stores_every_patient_s_scores_on_the_profile(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    report = score_run(runtime).run(clock.now(), chunk=150)
    assert not report.notes, report.notes  # enough history: both models fitted
    live = stored_profiles(runtime)  # no projection needed: the scores are read with the rows
    assert report.patients == len(live) and report.written == len(live)
    # What the profile holds is what the scorer computes, rounded as a CRM shows it.
    keys = sorted(live)[:50]
    with runtime.engine.begin() as conn:
        fresh = score_patients(conn, runtime.cipher(), keys, clock.now(), CONFIG, actor="test")
    for s in fresh:
        facts = live[s.patient_key][1].facts
        assert facts.lead_score == round(s.lead.score, 1)
        assert facts.engagement_score == round(s.engagement, 1)
        assert facts.scored_at == clock.now()
    customers = [p for _, p in live.values() if p.facts.first_order_at is not None]
    assert sum(p.facts.churn_risk is not None for p in customers) > len(customers) / 2
    assert sum((p.facts.predicted_ltv or 0) > 0 for p in customers) > len(customers) / 2
    for _, p in live.values():
        for value in (p.facts.churn_risk, p.facts.predicted_ltv, p.facts.lead_score):
            assert value is None or math.isfinite(value)
        if p.facts.first_order_at is None:
            assert p.facts.churn_risk is None  # a lead has nothing to churn from
    # Only the customers at or over the cutoff went through the log, one event each ...
    risky = {k for k, (_, p) in live.items() if (p.facts.churn_risk or 0) >= CUTOFF}
    assert risky and report.stage_events == len(risky) == report.at_risk
    with runtime.engine.connect() as conn:
        logged = conn.execute(
            select(events.c.patient_key).where(events.c.type == "analytics.scored")
        ).scalars()
        assert set(logged) == risky
    # ... and folding them makes those active customers at_risk.
    runtime.worker().drain(1000)
    live = stored_profiles(runtime)
    assert all(live[k][1].stage in (Stage.AT_RISK, Stage.CHURNED) for k in risky)
    with runtime.engine.connect() as conn:
        reasons = conn.execute(
            select(stage_transitions.c.reason).where(stage_transitions.c.to_stage == "at_risk")
        ).scalars()
        assert any(r.startswith("churn risk") for r in reasons)


def test_the_changed_patients_are_marked_for_the_sync_in_the_run_s_transaction(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    with runtime.engine.begin() as conn:
        conn.execute(delete(sync_dirty))
    run = score_run(runtime, lambda conn, keys, us: mark_dirty(conn, ["hubspot"], keys, us))
    report = run.run(clock.now())
    with runtime.engine.connect() as conn:
        dirty = set(conn.execute(select(sync_dirty.c.patient_key)).scalars())
    assert dirty == set(stored_profiles(runtime)) and len(dirty) == report.written
    with runtime.engine.begin() as conn:
        conn.execute(delete(sync_dirty))
    assert run.run(clock.now()).written == 0  # nothing changed: nobody marked again
    with runtime.engine.connect() as conn:
        assert conn.execute(select(sync_dirty.c.patient_key)).first() is None


def test_a_churn_risk_falling_under_the_cutoff_is_logged_too(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    run.run(clock.now())
    runtime.worker().drain(1000)
    calm = next(
        k for k, (_, p) in stored_profiles(runtime).items() if (p.facts.churn_risk or 1) < 0.3
    )
    # As if an earlier run had found this customer at risk (and logged it).
    with runtime.engine.begin() as conn:
        raw = conn.execute(
            select(profile_scores.c.scores).where(profile_scores.c.patient_key == calm)
        ).scalar_one()
        conn.execute(
            update(profile_scores)
            .where(profile_scores.c.patient_key == calm)
            .values(scores=orjson.dumps({**orjson.loads(raw), "churn_risk": 0.99}).decode())
        )
    # Only a run writes score rows, so a run trusts the numbers it kept: an edit behind its back
    # is seen by a full read.
    assert run.run(clock.now()).written == 0
    again = run.run(clock.now(), full_read=True)
    assert (again.written, again.stage_events) == (1, 1)
    with runtime.engine.connect() as conn:
        logged = conn.execute(
            select(events.c.patient_key).where(events.c.type == "analytics.scored")
        ).scalars()
        assert calm in set(logged)


def test_adherence_is_sealed_on_the_profile_and_reaches_only_a_baa_crm(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    score_run(runtime).run(clock.now())
    assert FIELDS["adherence_pdc"].is_phi and FIELDS["adherence_pdc"].encrypted
    measured = [
        (row, p) for row, p in stored_profiles(runtime).values() if "adherence_pdc" in p.values
    ]
    assert measured
    row, p = measured[0]
    assert 0 < p.values["adherence_pdc"] <= 1
    stored = orjson.loads(row.scores)
    token = stored["adherence_pdc"]
    assert isinstance(token, str) and str(p.values["adherence_pdc"]) not in token  # sealed
    assert stored["lead_score"] == p.facts.lead_score  # the clear numbers stay readable
    by_crm = {
        name: {r.object: r for r in desired_records(p, load_mapping(name))}
        for name in ("hubspot", "dynamics", "dynamics-baa")
    }
    hub = by_crm["hubspot"]["contact"].properties
    assert hub["telecrm_engagement_score"] == p.facts.engagement_score
    assert "telecrm_adherencepdc" not in by_crm["dynamics"]["contact"].properties
    baa = by_crm["dynamics-baa"]["contact"]
    assert baa.properties["telecrm_adherencepdc"] == p.values["adherence_pdc"]
    assert baa.properties["telecrm_leadscore"] == p.facts.lead_score
    assert "adherence_pdc" in baa.fields  # recorded as a PHI disclosure when sent


def test_an_erasure_deletes_the_patient_s_scores(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    score_run(runtime).run(clock.now())
    key = sorted(stored_profiles(runtime))[0]
    erase(runtime, clock, key)
    with runtime.engine.connect() as conn:
        left = conn.execute(
            select(profile_scores.c.patient_key).where(profile_scores.c.patient_key == key)
        ).first()
    assert left is None


def test_a_second_run_writes_only_what_changed_and_a_rebuild_keeps_scores_and_stages(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    first = run.run(clock.now())
    repeated = run.run(clock.now())  # the same numbers: nothing written, no event twice
    assert repeated.written == repeated.stage_events == 0 and first.written == first.patients
    runtime.worker().drain(1000)
    again = run.run(clock.now())
    assert again.written == 0 and again.unchanged == first.patients
    # Comparing needs the sealed adherence the scores hold: that read is audited, and so is
    # each chunk's write.
    measured = [k for k, (_, p) in stored_profiles(runtime).items() if "adherence_pdc" in p.values]
    with runtime.engine.connect() as conn:
        reads = audit_rows(conn, record_id=measured[0], limit=50)
    assert any("adherence_pdc" in e["fields"] and e["action"] == "read" for e in reads)
    assert any(e["action"] == "write" and e["record_type"] == "profile_scores" for e in reads), (
        reads
    )
    clock.advance(timedelta(days=7))  # lead points decay, so some scores move
    later = run.run(clock.now())
    assert 0 < later.written < later.patients + 1
    runtime.worker().drain(1000)
    runtime.sweep().run()  # the week's time-based stage moves: the sweep's job, not the run's
    before = projection_digest(runtime.engine, runtime.cipher())
    rebuild_projection(runtime.engine, runtime.worker(), clock)
    assert projection_digest(runtime.engine, runtime.cipher()) == before


def test_with_too_little_history_the_model_scores_stay_empty_with_a_reason(
    runtime: Runtime, clock: FrozenClock
) -> None:
    start = NOW - timedelta(days=20)
    wire = [registration("lead_1", start), *customer_journey("cus_1", start)]
    ingest(runtime, clock, wire)
    report = score_run(runtime).run(clock.now())
    assert report.patients == 2 and report.written == 2 and report.stage_events == 0
    assert any("lifetime value" in n for n in report.notes)
    assert any("churn model" in n for n in report.notes)
    for _, p in stored_profiles(runtime).values():
        assert p.facts.churn_risk is None and p.facts.predicted_ltv is None
        assert p.facts.lead_score is not None and math.isfinite(p.facts.lead_score)


def test_an_empty_database_scores_nobody(runtime: Runtime, clock: FrozenClock) -> None:
    report = score_run(runtime).run(NOW)
    assert (report.patients, report.written) == (0, 0)
    assert report.mean_lead is None and report.adherent_share is None


def test_the_run_command_prints_the_headline_and_updates_profiles(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(runtime, clock, simulated)
    app = command_app(run_commands, runtime, monkeypatch)
    result = CliRunner().invoke(app, ["run", "--chunk", "200"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "patients scored" in out and "at or over the at-risk cutoff" in out
    live = stored_profiles(runtime)
    assert f"profiles updated: {len(live):,} patients' scores stored" in out
    with runtime.engine.connect() as conn:
        kinds = list(conn.execute(select(events.c.type).where(events.c.source == "analytics")))
    assert {k for (k,) in kinds} == {"analytics.scored"}
    assert f"stages: {len(kinds):,} events folded" in out
    assert all(p.facts.scored_at for _, p in live.values())


def test_folding_score_events_decrypts_only_adherence_and_keeps_every_other_value(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telecrm.security.envelope import FieldCipher

    ingest(runtime, clock, simulated)
    before = stored_profiles(runtime)
    report = score_run(runtime).run(clock.now())
    opened: list[str] = []
    real = FieldCipher.decrypt_json

    def counting(self, token, *, record_id, field):  # type: ignore[no-untyped-def]
        opened.append(field)
        return real(self, token, record_id=record_id, field=field)

    monkeypatch.setattr(FieldCipher, "decrypt_json", counting)
    folded = runtime.worker().drain(1000)
    monkeypatch.undo()
    assert folded.events == report.stage_events > 0  # one event per at-risk crossing
    assert set(opened) <= {"adherence_pdc"}  # the fast path: nothing else was decrypted
    after = stored_profiles(runtime)
    assert after.keys() == before.keys()
    for key, (row, p) in after.items():
        old_row, old = before[key]
        sealed, old_sealed = orjson.loads(row.sealed), orjson.loads(old_row.sealed)
        for name, token in old_sealed.items():
            assert sealed[name] == token  # carried, not re-encrypted
            assert p.values[name] == old.values[name]
        assert (row.email_bidx, row.phone_bidx) == (old_row.email_bidx, old_row.phone_bidx)
        assert p.facts.scored_at is not None


def test_reading_only_the_customers_gives_the_same_model_scores(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    full = ea.from_store(runtime.engine, runtime.cipher())
    customers = ea.from_store(runtime.engine, runtime.cipher(), customers_only=True)
    assert customers.patients < full.patients and customers.patient.size < full.patient.size
    everyone, bought = population_scores(full, NOW), population_scores(customers, NOW)
    assert bought.churn == everyone.churn and len(everyone.churn) > 50
    keys = [str(k) for k in full.keys]
    assert [bought.ltv_of(k) for k in keys] == [everyone.ltv_of(k) for k in keys]
    assert sum(bought.ltv_of(k) == 0.0 for k in keys) >= full.patients - customers.patients


def test_the_daily_list_of_live_patients_is_read_from_its_partial_index(
    runtime: Runtime,
) -> None:
    """The run lists every live patient each day: the query must state the partial index's
    condition exactly, or the database scans every profile (visitors and erased ones too)."""
    dialect = runtime.engine.dialect.name
    sql = live_keys_sql(dialect)
    with runtime.engine.connect() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: force the choice
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
        else:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_profiles_live" in plan, plan
