"""Fixtures the sync tests share: a simulated platform, and a clock after its last event."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from telecrm.domain.clock import FrozenClock
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate

# 150 patients' four months: contacts, deals at every consultation status, tickets.
SIMULATED: list[dict[str, Any]] = [
    e
    for e in generate(SimulationConfig(patients=150, months=4, seed=11, start=date(2025, 9, 1)))
    if e["patient"].get("id")
]


@pytest.fixture
def later(clock: FrozenClock) -> FrozenClock:
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    return clock
