"""The stream's contract: valid, reproducible, time-ordered, bounded, and identity-safe."""

from __future__ import annotations

from datetime import datetime

import orjson

from telecrm.domain.events import parse_event
from telecrm.simulate import Simulation, SimulationConfig, generate
from tests.simulate.conftest import Run

SMALL = SimulationConfig(patients=400, months=6, seed=3)


def _jsonl(config: SimulationConfig) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in generate(config))


def test_same_seed_gives_byte_identical_jsonl() -> None:
    assert _jsonl(SMALL) == _jsonl(SMALL)


def test_another_seed_gives_another_stream() -> None:
    assert _jsonl(SMALL) != _jsonl(SMALL.model_copy(update={"seed": 4}))


def test_every_event_passes_parse_event_at_the_end_of_the_period(run: Run) -> None:
    for e in run.events:
        parse_event(e, now=run.config.end)


def test_events_are_ordered_by_time_across_all_patients_and_inside_the_period(run: Run) -> None:
    instants = [datetime.fromisoformat(e["occurred_at"]) for e in run.events]
    assert all(at.tzinfo is not None for at in instants)
    assert instants == sorted(instants)
    assert instants[0] >= run.config.start_at
    assert instants[-1] < run.config.end


def test_event_ids_are_unique_and_name_the_seed(run: Run) -> None:
    ids = [e["id"] for e in run.events]
    assert len(ids) == len(set(ids))
    assert all(i.startswith(f"ev{run.config.seed}-") for i in ids)


def test_a_patients_first_identified_event_is_the_registration(run: Run) -> None:
    assert run.by_patient
    for events in run.by_patient.values():
        assert events[0]["type"] == "patient.registered"
        assert sum(e["type"] == "patient.registered" for e in events) == 1


def test_registration_links_the_anonymous_visitor_who_came_before(run: Run) -> None:
    first_anonymous_visit: dict[str, str] = {}
    for e in run.events:
        ref = e["patient"]
        if "id" not in ref:
            assert e["type"] == "session.tracked"
            first_anonymous_visit.setdefault(ref["anonymous_id"], e["occurred_at"])
    for registration in run.of_type("patient.registered"):
        anonymous_id = registration["patient"]["anonymous_id"]
        assert anonymous_id in first_anonymous_visit
        assert first_anonymous_visit[anonymous_id] < registration["occurred_at"]


def test_patient_ids_are_zero_padded_and_match_the_truth(run: Run) -> None:
    truth_ids = {t["patient_id"] for t in run.truth}
    assert len(truth_ids) == run.config.patients
    assert set(run.by_patient) <= truth_ids
    assert "pat_000001" in truth_ids


def test_memory_follows_active_patients_not_all_patients() -> None:
    config = SimulationConfig(patients=3000, months=24, seed=5)
    sim = Simulation(config)
    for _ in sim.events():
        pass
    actors = config.patients * (1 + config.bounced_visitors_per_patient)
    assert sim.peak_active < actors * 0.25


def test_a_one_month_period_still_ends_on_time() -> None:
    config = SimulationConfig(patients=200, months=1, start="2024-02-29", seed=2)
    events = list(generate(config))
    assert config.end.isoformat() == "2024-03-29T00:00:00+00:00"
    assert all(datetime.fromisoformat(e["occurred_at"]) < config.end for e in events)
    for e in events:
        parse_event(e, now=config.end)
