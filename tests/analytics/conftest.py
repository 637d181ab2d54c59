"""The simulated history the run tests share (600 buyers-heavy patients, 12 months)."""

from __future__ import annotations

import pytest

from telecrm.simulate import Simulation
from tests.analytics.test_score_run import SIM


@pytest.fixture(scope="module")
def simulated() -> list[dict[str, object]]:
    return [e for e in Simulation(SIM).events() if e["patient"].get("id")]
