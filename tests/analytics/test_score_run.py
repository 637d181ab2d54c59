"""`telecrm analytics run`: every live patient scored, the changed scores stored as events, folded
onto profiles (churn risk moving customers to at_risk), sent as CRM fields, and reproduced by a
rebuild of the projection. Both databases."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from telecrm.analytics import run_commands
from telecrm.analytics.patient_scores import score_patients
from telecrm.analytics.score_run import ScoreRun
from telecrm.analytics.scoring_config import load_scoring_config
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage
from telecrm.ingest.tables import events
from telecrm.profiles.codec import decode
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profiles, stage_transitions
from telecrm.security.audit import audit_rows
from telecrm.simulate import Simulation, SimulationConfig
from telecrm.sync.mapping import load_mapping
from telecrm.sync.planner import desired_records
from tests.analytics.clv_population import BUYERS
from tests.support.builders import customer_journey, registration

SIM = SimulationConfig(patients=600, months=12, seed=7, start=date(2025, 1, 1), **BUYERS)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = 0.7
CONFIG = load_scoring_config(None)


@pytest.fixture(scope="module")
def simulated() -> list[dict[str, object]]:
    return [e for e in Simulation(SIM).events() if e["patient"].get("id")]


def ingest(runtime: Runtime, clock: FrozenClock, wire: list[dict[str, object]]) -> None:
    clock.set(NOW)
    parsed = [parse_event(e, now=clock.now()) for e in wire]
    for start in range(0, len(parsed), 2000):
        runtime.intake().accept(
            parsed[start : start + 2000], source="import", actor="test", unknown_patients="skip"
        )
    runtime.worker().drain(1000)


def score_run(runtime: Runtime) -> ScoreRun:
    return ScoreRun(
        runtime.engine, runtime.cipher(), runtime.intake(), CONFIG, churn_risk_cutoff=CUTOFF
    )


def stored_profiles(runtime: Runtime) -> dict[str, tuple]:
    """The live patients' profiles (not erased, not an anonymous visitor merged into one)."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(profiles).where(
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
    runtime.worker().drain(1000)
    live = stored_profiles(runtime)
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
    # A churn risk at or over the cutoff makes an active customer at_risk.
    risky = [p for _, p in live.values() if (p.facts.churn_risk or 0) >= CUTOFF]
    assert risky and all(p.stage in (Stage.AT_RISK, Stage.CHURNED) for p in risky)
    with runtime.engine.connect() as conn:
        reasons = conn.execute(
            select(stage_transitions.c.reason).where(stage_transitions.c.to_stage == "at_risk")
        ).scalars()
        assert any(r.startswith("churn risk") for r in reasons)


def test_adherence_is_sealed_on_the_profile_and_reaches_only_a_baa_crm(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    score_run(runtime).run(clock.now())
    runtime.worker().drain(1000)
    assert FIELDS["adherence_pdc"].is_phi and FIELDS["adherence_pdc"].encrypted
    measured = [
        (row, p) for row, p in stored_profiles(runtime).values() if "adherence_pdc" in p.values
    ]
    assert measured
    row, p = measured[0]
    assert "adherence_pdc" not in orjson.loads(row.attributes)["values"]
    assert "adherence_pdc" in orjson.loads(row.sealed)
    assert 0 <= p.values["adherence_pdc"] <= 1
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


def test_a_second_run_writes_only_what_changed_and_a_rebuild_reproduces_the_scores(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    first = run.run(clock.now())
    repeated = run.run(clock.now())  # before the projection: the same events, stored once
    assert repeated.written == 0 and first.written == first.patients
    runtime.worker().drain(1000)
    again = run.run(clock.now())
    assert again.written == 0 and again.unchanged == first.patients
    # Comparing needs the sealed adherence the profiles now hold: that read is audited.
    measured = [k for k, (_, p) in stored_profiles(runtime).items() if "adherence_pdc" in p.values]
    with runtime.engine.connect() as conn:
        reads = audit_rows(conn, record_id=measured[0], limit=50)
    assert any("adherence_pdc" in e["fields"] and e["action"] == "read" for e in reads)
    clock.advance(timedelta(days=7))  # lead points decay, so some scores move
    later = run.run(clock.now())
    assert 0 < later.written < later.patients + 1
    runtime.worker().drain(1000)
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
    assert report.patients == 2 and report.written == 2
    assert any("lifetime value" in n for n in report.notes)
    assert any("churn model" in n for n in report.notes)
    runtime.worker().drain(1000)
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
    monkeypatch.setattr(run_commands, "runtime", lambda: runtime)
    app = typer.Typer()
    run_commands.register(app)
    app.command("noop")(lambda: None)  # a group of two, so the command keeps its name
    result = CliRunner().invoke(app, ["run", "--chunk", "200"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "patients scored" in out and "at or over the at-risk cutoff" in out
    assert "profiles updated" in out
    with runtime.engine.connect() as conn:
        kinds = conn.execute(select(events.c.type).where(events.c.source == "analytics"))
        assert set(kinds.scalars()) == {"analytics.scored"}
    assert all(p.facts.scored_at for _, p in stored_profiles(runtime).values())


def test_folding_score_events_decrypts_only_adherence_and_keeps_every_other_value(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telecrm.security.envelope import FieldCipher

    ingest(runtime, clock, simulated)
    before = stored_profiles(runtime)
    score_run(runtime).run(clock.now())
    opened: list[str] = []
    real = FieldCipher.decrypt_json

    def counting(self, token, *, record_id, field):  # type: ignore[no-untyped-def]
        opened.append(field)
        return real(self, token, record_id=record_id, field=field)

    monkeypatch.setattr(FieldCipher, "decrypt_json", counting)
    folded = runtime.worker().drain(1000)
    monkeypatch.undo()
    assert folded.events == len(before)  # one score event per live patient
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
