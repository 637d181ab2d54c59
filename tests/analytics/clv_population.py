"""Simulated populations the value and churn tests share (built once per test session)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from telecrm.simulate import Simulation, SimulationConfig

# Most patients reach a first order, and 60 % of chronic buyers stay one-off, so a few thousand
# patients give both BG/NBD and sBG enough customers.
BUYERS = {
    "questionnaire_rate": 0.95,
    "consultation_rate": 0.95,
    "prescription_rate": 0.95,
    "subscription_rate": 0.4,
    "bounced_visitors_per_patient": 0.0,
}


@dataclass(frozen=True)
class Population:
    config: SimulationConfig
    events: list[dict[str, Any]]  # identified patients' events only, in time order
    truth: dict[str, dict[str, Any]]  # patient id -> ground-truth record


@lru_cache(maxsize=2)
def population(patients: int, months: int, seed: int) -> Population:
    config = SimulationConfig(patients=patients, months=months, seed=seed, **BUYERS)
    truth: list[dict[str, Any]] = []
    events = [
        e
        for e in Simulation(config, on_truth=truth.append).events()
        if e["patient"].get("id") is not None
    ]
    return Population(config, events, {t["patient_id"]: t for t in truth})
