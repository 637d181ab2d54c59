"""Stored model fits: `analytics run` fits the value and churn models once and reuses the fit for
a week; a fit is sealed, an altered one is refused before it is unpickled, and a fit from other
library versions, from after the run's instant, or with a model missing is fitted again. Both
databases."""

from __future__ import annotations

import pickle
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from telecrm.analytics import model_commands, model_store, run_commands
from telecrm.analytics.model_store import KEEP, StoredModelRejected
from telecrm.analytics.tables import analytics_models
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.profiles.tables import profile_scores
from telecrm.security.audit import audit_rows
from tests.analytics.test_score_run import NOW, command_app, ingest, score_run
from tests.support.builders import customer_journey, registration


def stored_fits(runtime: Runtime) -> list[str]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(analytics_models.c.model_id).order_by(analytics_models.c.fitted_us)
            ).scalars()
        )


def scores_table(runtime: Runtime) -> dict[str, str]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(profile_scores.c.patient_key, profile_scores.c.scores)).all()
    return {key: scores for key, scores in rows}


def test_a_run_reuses_the_stored_fit_until_it_is_a_week_old(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    first = run.run(clock.now())
    assert first.refit_reason == "no fit was stored yet" and "fit models" in first.seconds
    assert stored_fits(runtime) == [first.model_id] and not first.notes
    again = run.run(clock.now())
    assert again.refit_reason is None and "fit models" not in again.seconds
    assert again.model_id == first.model_id and again.model_fitted_at == NOW
    assert again.written == 0  # the same fit predicts the same numbers
    clock.advance(timedelta(days=6, hours=23))
    assert run.run(clock.now()).model_id == first.model_id
    clock.advance(timedelta(hours=1))  # a week old: fitted again
    week = run.run(clock.now())
    assert week.model_id != first.model_id and week.refit_reason is not None
    assert "7 days old" in week.refit_reason
    forced = run.run(clock.now(), refit=True)
    assert forced.refit_reason == "asked to (--refit)" and forced.model_id != week.model_id
    for _ in range(KEEP):
        run.run(clock.now(), refit=True)
    assert len(stored_fits(runtime)) == KEEP  # the oldest are dropped


def test_an_altered_fit_is_refused_before_anything_of_it_is_unpickled(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    first = run.run(clock.now())
    with runtime.engine.connect() as conn:
        sealed = bytes(conn.execute(select(analytics_models.c.sealed)).scalar_one())
    assert b"sklearn" not in sealed and b"Calibrated" not in sealed  # sealed, not a clear pickle
    altered = sealed[:100] + bytes([sealed[100] ^ 1]) + sealed[101:]
    with runtime.engine.begin() as conn:
        conn.execute(update(analytics_models).values(sealed=altered))
    before = scores_table(runtime)
    unpickled: list[bytes] = []
    monkeypatch.setattr(model_store.pickle, "loads", lambda raw: unpickled.append(raw))
    clock.advance(timedelta(days=1))  # numbers would move: nothing may be written
    with pytest.raises(StoredModelRejected) as refused:
        run.run(clock.now())
    assert first.model_id in str(refused.value) and "--refit" in str(refused.value)
    assert unpickled == [] and scores_table(runtime) == before
    monkeypatch.setattr(model_store.pickle, "loads", pickle.loads)
    assert run.run(clock.now(), refit=True).written > 0  # --refit does not open the old fit


def test_a_fit_from_other_versions_or_from_after_the_run_is_fitted_again(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    first = run.run(clock.now())
    with runtime.engine.begin() as conn:
        summary = orjson.loads(conn.execute(select(analytics_models.c.summary)).scalar_one())
        summary["versions"]["scikit-learn"] = "0.1"
        conn.execute(update(analytics_models).values(summary=orjson.dumps(summary).decode()))
    other = run.run(clock.now())
    assert other.refit_reason is not None and "other library versions" in other.refit_reason
    assert other.model_id != first.model_id
    earlier = run.run(clock.now() - timedelta(hours=1))  # a fit must not have seen the future
    assert earlier.refit_reason is not None and "after this run's instant" in earlier.refit_reason


def test_with_a_model_that_could_not_be_fitted_every_run_tries_again(
    runtime: Runtime, clock: FrozenClock
) -> None:
    start = NOW - timedelta(days=20)
    ingest(runtime, clock, [registration("lead_1", start), *customer_journey("cus_1", start)])
    run = score_run(runtime)
    first, second = run.run(clock.now()), run.run(clock.now())
    assert any("churn model" in n for n in first.notes)
    assert second.refit_reason is not None and "could not be fitted" in second.refit_reason
    assert any("churn model" in n for n in second.notes)


def test_the_cli_refits_on_request_and_names_a_refused_fit(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(runtime, clock, simulated)
    app = command_app(run_commands, runtime, monkeypatch)
    runner = CliRunner()
    first = runner.invoke(app, ["run"])
    assert first.exit_code == 0, first.output
    assert "fitted now (no fit was stored yet)" in first.stdout
    reused = runner.invoke(app, ["run"])
    assert "stored fit of 2026-01-01 00:00 UTC" in reused.stdout
    with runtime.engine.begin() as conn:
        conn.execute(update(analytics_models).values(sealed=b"\x02" * 80))
    refused = runner.invoke(app, ["run"])
    assert refused.exit_code == 1 and "does not open" in refused.output
    assert "Traceback" not in refused.output
    forced = runner.invoke(app, ["run", "--refit"])
    assert forced.exit_code == 0 and "fitted now (asked to (--refit))" in forced.stdout
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(analytics_models)).scalar_one() == 2


def test_the_models_command_lists_the_fits_and_says_which_the_next_run_uses(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = command_app(model_commands, runtime, monkeypatch)
    runner = CliRunner()
    assert "no fit stored yet" in runner.invoke(app, ["models"]).stdout
    ingest(runtime, clock, simulated)
    report = score_run(runtime).run(clock.now())
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    assert (
        report.model_id in listed.stdout and f"the next run uses {report.model_id}" in listed.stdout
    )
    clock.advance(timedelta(days=8))
    assert "the next run fits again: it is 8 days old" in runner.invoke(app, ["models"]).stdout
    # Each chunk's audit entry names the run and the fit its numbers came from.
    some = next(iter(scores_table(runtime)))
    with runtime.engine.connect() as conn:
        purposes = {e["purpose"] for e in audit_rows(conn, record_id=some, limit=20)}
    assert f"analytics run {report.run_id}, models {report.model_id}" in purposes
