"""`analytics run` keeps its inputs and reads again only what changed: the kept-and-updated
inputs must be exactly what a full read gives (the full read is the oracle), and whatever could
make them wrong (an erasure, a rebuild, other rules, an altered row, a profile not yet folded)
makes the next run read everything or that patient again. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, update

from telecrm.analytics import event_arrays as ea
from telecrm.analytics import inputs_store, run_inputs
from telecrm.analytics import score_run as score_run_module
from telecrm.analytics.event_table import EventTable
from telecrm.analytics.inputs_store import StoredInputsRejected, load_inputs, log_frontier
from telecrm.analytics.run_inputs import RunInputs, Take, combine
from telecrm.analytics.score_run import ScoreRun
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.analytics.tables import analytics_inputs
from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.domain.events import parse_event
from telecrm.ingest.tables import events
from telecrm.profiles.rebuild import rebuild_projection
from tests.analytics.test_model_store import scores_table
from tests.analytics.test_score_run import CONFIG, NOW, erase, ingest, score_run
from tests.support.builders import registration

SPLIT = "2025-12-01"  # events from here on arrive after the first run
NOW_SPLIT_US = to_micros(datetime.fromisoformat(SPLIT).replace(tzinfo=UTC))


def accept(runtime: Runtime, wire: list[dict[str, Any]], *, fold: bool = True) -> None:
    parsed = [parse_event(e, now=NOW) for e in wire]
    for start in range(0, len(parsed), 2000):
        runtime.intake().accept(
            parsed[start : start + 2000], source="import", actor="test", unknown_patients="skip"
        )
    if fold:
        runtime.worker().drain(1000)


def kept(runtime: Runtime, config: ScoringConfig = CONFIG) -> RunInputs:
    with runtime.engine.connect() as conn:
        stored, why = load_inputs(conn, runtime.cipher(), run_inputs.fingerprint(config))
    assert stored is not None, why
    return stored.inputs


def scored(runtime: Runtime) -> set[str]:
    """Patients with an `analytics.scored` event (a run's at-risk crossings)."""
    with runtime.engine.connect() as conn:
        query = select(events.c.patient_key).where(events.c.type == "analytics.scored")
        return set(conn.execute(query).scalars())


def comparable(inputs: RunInputs) -> dict[str, Any]:
    """Every column in a form == compares (codes and indices resolved to what they stand for)."""
    log = inputs.log
    return {
        "keys": inputs.keys,
        "ids": inputs.patient_ids,
        "fit": inputs.fit_columns(),
        "features": inputs.features_used.tolist(),
        "held": np.nan_to_num(inputs.held, nan=-1.0).tolist(),
        "events": list(
            zip(
                inputs.events.patient.tolist(),
                inputs.events.type_code.tolist(),
                inputs.events.occurred_us.tolist(),
                strict=True,
            )
        ),
        "fills": sorted(
            zip(
                inputs.fill_patient.tolist(),
                [inputs.medications[m] for m in inputs.fill_medication.tolist()],
                inputs.fill_day.tolist(),
                inputs.fill_supply.tolist(),
                strict=True,
            )
        ),
        "log_keys": [str(k) for k in log.keys],
        "log": [
            (p, k, t, -1.0 if np.isnan(a) else a, -1.0 if np.isnan(e) else e, s)
            for p, k, t, a, e, s in zip(
                log.patient.tolist(),
                log.kind.tolist(),
                log.t.tolist(),
                log.amount.tolist(),
                log.ends.tolist(),
                [None if s < 0 else str(log.subscriptions[s]) for s in log.sub.tolist()],
                strict=True,
            )
        ],
    }


def first_run_then(
    runtime: Runtime, clock: FrozenClock, simulated: list, *, fold: bool
) -> tuple[ScoreRun, list[dict[str, Any]]]:
    """Everything before SPLIT ingested and scored (the inputs kept), then the last month's
    events arrive (`fold`: and are folded). The run, and those late events."""
    early = [e for e in simulated if str(e["occurred_at"]) < SPLIT]
    late = [e for e in simulated if str(e["occurred_at"]) >= SPLIT]
    ingest(runtime, clock, early)
    run = score_run(runtime)
    first = run.run(clock.now())
    assert first.inputs_reason == "no inputs were kept" and first.inputs_read == first.patients
    accept(runtime, late, fold=fold)
    return run, late


def test_a_run_on_kept_inputs_equals_a_full_read(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    # a month of history for some patients, and new patients
    run, late = first_run_then(runtime, clock, simulated, fold=True)
    # Read again: patients with new events, the first run's own at-risk crossings among them.
    touched = {str(e["patient"]["id"]) for e in late} | scored(runtime)
    clock.advance(timedelta(days=1))
    daily = run.run(clock.now())
    assert daily.inputs_reason is None
    assert 0 < daily.inputs_read < daily.patients
    assert daily.inputs_read == len(touched & set(kept(runtime).keys))
    incremental = comparable(kept(runtime))
    before = scores_table(runtime)
    full = run.run(clock.now(), full_read=True)
    assert full.inputs_reason == "asked to (--full-read)" and full.inputs_read == full.patients
    assert comparable(kept(runtime)) == incremental  # the same inputs, column for column
    assert full.written == 0 and scores_table(runtime) == before  # hence the same scores


def test_a_profile_not_yet_folded_is_read_again_once_it_is(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    # the projection has not caught up when the run reads
    run, late = first_run_then(runtime, clock, simulated, fold=False)
    clock.advance(timedelta(days=1))
    run.run(clock.now())
    stale = set(kept(runtime).recheck)
    assert stale and stale <= {str(e["patient"]["id"]) for e in late} | scored(runtime)
    runtime.worker().drain(1000)
    again = run.run(clock.now())  # no new event, but the folds are read now
    assert again.inputs_read >= len(stale) and kept(runtime).recheck == []
    assert run.run(clock.now(), full_read=True).written == 0


def test_an_erasure_or_a_rebuild_forgets_the_kept_inputs(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    run.run(clock.now())
    erased = kept(runtime).keys[0]
    erase(runtime, clock, erased)
    with runtime.engine.connect() as conn:
        assert conn.execute(select(analytics_inputs)).first() is None  # its PHI went too
    runtime.worker().drain(1000)
    after = run.run(clock.now())
    assert after.inputs_reason == "no inputs were kept" and erased not in kept(runtime).keys
    rebuild_projection(runtime.engine, runtime.worker(), clock)
    assert run.run(clock.now()).inputs_reason == "no inputs were kept"


def test_other_rules_or_an_altered_row_are_not_built_on(
    runtime: Runtime, clock: FrozenClock, simulated: list
) -> None:
    ingest(runtime, clock, simulated)
    run = score_run(runtime)
    run.run(clock.now())
    inputs = kept(runtime)
    with runtime.engine.connect() as conn:
        sealed = bytes(conn.execute(select(analytics_inputs.c.sealed)).scalar_one())
    medication = inputs.medications[0]
    born = next(v for v in inputs.fit["date_of_birth"].book if v)
    assert medication.encode() not in sealed and str(born).encode() not in sealed
    fewer = CONFIG.lead.model_copy(update={"behaviour": CONFIG.lead.behaviour[:1]})
    other = CONFIG.model_copy(update={"lead": fewer})
    assert "other event types" in score_run_with(runtime, other).run(clock.now()).inputs_reason
    altered = sealed[:200] + bytes([sealed[200] ^ 1]) + sealed[201:]
    run.run(clock.now())
    with runtime.engine.begin() as conn:
        conn.execute(update(analytics_inputs).values(sealed=altered))
    with pytest.raises(StoredInputsRejected) as refused:
        run.run(clock.now())
    assert "--full-read" in str(refused.value)
    assert run.run(clock.now(), full_read=True).inputs_reason == "asked to (--full-read)"


def score_run_with(runtime: Runtime, config: ScoringConfig) -> ScoreRun:
    return ScoreRun(
        runtime.engine, runtime.cipher(), runtime.intake(), config, churn_risk_cutoff=0.7
    )


@pytest.fixture
def whole(runtime: Runtime, clock: FrozenClock, simulated: list) -> RunInputs:
    ingest(runtime, clock, simulated[:4000])
    score_run(runtime).run(clock.now())
    return kept(runtime)


def test_combining_any_split_of_the_patients_gives_the_whole_back(whole: RunInputs) -> None:
    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.booleans(), min_size=whole.patients, max_size=whole.patients))
    def check(sides: list[bool]) -> None:
        left = [k for k, side in zip(whole.keys, sides, strict=True) if side]
        right = [k for k, side in zip(whole.keys, sides, strict=True) if not side]
        again = combine([Take.whole(whole, right), Take.whole(whole, left)])
        assert comparable(again) == comparable(whole)

    check()


def test_the_frontier_waits_for_an_intake_that_commits_late(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """PostgreSQL hands out seqs at insert: an intake still open holds a seq below one already
    committed. The frontier must not pass it (or the next run would never re-read that patient);
    on SQLite one writer at a time makes the highest seq the frontier."""
    clock.set(NOW)
    intake = runtime.intake()

    def store(patient_id: str) -> None:
        event = parse_event(registration(patient_id, NOW - timedelta(days=1)), now=NOW)
        intake.accept([event], source="import", actor="test")

    def highest() -> int:
        with runtime.engine.connect() as conn:
            return int(conn.execute(select(func.max(events.c.seq))).scalar_one())

    if runtime.engine.dialect.name != "postgresql":
        store("pat_early")
        assert log_frontier(runtime.engine) == highest()
        return
    late = runtime.engine.connect()
    transaction = late.begin()
    # An intake's insert, not committed yet, holding the lower seq. (Written directly: the real
    # intake would also hold the audit log's head, and this one thread would wait on itself.)
    late.execute(
        insert(events).values(
            event_id="evt_late",
            type="patient.updated",
            version=1,
            patient_key="pat_late",
            patient_id="pat_late",
            occurred_us=0,
            received_us=0,
            source="import",
            payload=b"{}",
        )
    )
    store("pat_early")  # a higher seq, committed
    assert log_frontier(runtime.engine, wait_s=0.2) is None  # nothing trusted while it is open
    transaction.commit()
    late.close()
    assert log_frontier(runtime.engine, wait_s=0.2) == highest()


def test_events_logged_past_the_frontier_are_added_once(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events committed after a run took its frontier (here: the last month's, as if they came
    in while it read) are not in what it keeps; the next run adds them exactly once."""
    run, late = first_run_then(runtime, clock, simulated, fold=True)
    with runtime.engine.connect() as conn:
        before_late = int(
            conn.execute(
                select(func.max(events.c.seq)).where(events.c.occurred_us < NOW_SPLIT_US)
            ).scalar_one()
        )
    real = score_run_module.log_frontier
    monkeypatch.setattr(score_run_module, "log_frontier", lambda engine: before_late)
    clock.advance(timedelta(days=1))
    run.run(clock.now())
    monkeypatch.setattr(score_run_module, "log_frontier", real)
    daily = run.run(clock.now())
    assert daily.logged_since >= len(late)
    incremental = comparable(kept(runtime))
    assert run.run(clock.now(), full_read=True).written == 0
    assert comparable(kept(runtime)) == incremental


def test_an_unknown_frontier_reads_everyone_and_keeps_nothing(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(runtime, clock, simulated[:3000])
    run = score_run(runtime)
    run.run(clock.now())
    monkeypatch.setattr(score_run_module, "log_frontier", lambda engine: None)
    report = run.run(clock.now())
    assert report.inputs_read == report.patients
    assert report.inputs_reason is not None and "unknown" in report.inputs_reason
    with runtime.engine.connect() as conn:
        assert conn.execute(select(analytics_inputs)).first() is None


def test_a_run_that_stops_while_writing_leaves_inputs_nobody_builds_on(
    runtime: Runtime, clock: FrozenClock, simulated: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores written by a run that then failed are newer than the numbers its kept inputs
    hold: the next run must read everyone, not compare against those numbers."""
    ingest(runtime, clock, simulated[:3000])
    run = score_run(runtime)
    run.run(clock.now())
    clock.advance(timedelta(days=3))  # the decay moves scores: this run writes

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(run, "_write", fail)
    with pytest.raises(RuntimeError):
        run.run(clock.now())
    with runtime.engine.connect() as conn:
        row = conn.execute(select(analytics_inputs)).one()
    assert bytes(row.sealed) == b""  # the columns (and their PHI) are gone, the summary stays
    monkeypatch.undo()
    after = run.run(clock.now())
    assert after.inputs_reason == "the run that kept them stopped before it finished"
    assert after.inputs_read == after.patients and after.written > 0


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_packing_round_trips_across_lz4_blocks(data: bytes, block: int) -> None:
    saved = inputs_store.PACK_BLOCK
    inputs_store.PACK_BLOCK = block
    try:
        packed = inputs_store._pack(data)
    finally:
        inputs_store.PACK_BLOCK = saved
    assert inputs_store._unpack(packed) == data


ROWS = st.lists(
    st.tuples(
        st.integers(0, 4),  # patient
        st.sampled_from([1.0, 2.5, 3.0]),  # time: ties are common
        st.integers(0, 3),  # kind
        st.sampled_from([float("nan"), 10.0, 20.0]),  # amount
        st.sampled_from([float("nan"), 5.0]),  # ends
        st.integers(-1, 2),  # subscription
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ROWS)
def test_the_canonical_order_is_the_full_lexicographic_sort(rows: list[tuple]) -> None:
    """Sorting by (patient, time) and by the rest only among ties gives the rows exactly the
    order a sort on every key gives (the kept and the fully read history must match)."""
    columns = (
        [
            np.asarray(c, dtype=float if i in (1, 3, 4) else np.int64)
            for i, c in enumerate(zip(*rows, strict=True))
        ]
        if rows
        else [np.zeros(0)] * 6
    )
    patient, t, kind, amount, ends, sub = columns
    want = np.lexsort((sub, ends, amount, kind, t, patient))
    got = ea.canonical_order(patient, t, (kind, amount, ends, sub))
    assert got.tolist() == want.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 33), st.integers(0, 4)), max_size=60))
def test_events_are_ordered_by_patient_type_and_time(rows: list[tuple[int, int, int]]) -> None:
    table = EventTable(
        6,
        np.asarray([r[0] for r in rows], dtype=np.int64),
        np.asarray([r[1] for r in rows], dtype=np.int64),
        np.asarray([r[2] for r in rows], dtype=np.int64),
    )
    ordered = run_inputs._canonical_events(table)
    got = list(
        zip(
            ordered.patient.tolist(),
            ordered.type_code.tolist(),
            ordered.occurred_us.tolist(),
            strict=True,
        )
    )
    assert got == sorted(rows)
