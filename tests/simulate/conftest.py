"""One shared simulation for the suite: a few thousand patients over a year, run once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from telecrm.simulate import Simulation, SimulationConfig

SHARED = SimulationConfig(patients=4000, months=12, seed=11)


@dataclass
class Run:
    config: SimulationConfig
    events: list[dict[str, Any]]
    truth: list[dict[str, Any]]
    peak_active: int
    by_patient: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def simulate(config: SimulationConfig) -> Run:
    truth: list[dict[str, Any]] = []
    sim = Simulation(config, on_truth=truth.append)
    events = list(sim.events())
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if "id" in e["patient"]:
            by_patient[e["patient"]["id"]].append(e)
    return Run(config, events, truth, sim.peak_active, dict(by_patient))


@pytest.fixture(scope="session")
def run() -> Run:
    return simulate(SHARED)
