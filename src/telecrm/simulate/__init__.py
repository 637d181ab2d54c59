"""A synthetic telehealth platform: seeded, time-ordered wire events plus their ground truth."""

from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import Simulation, generate
from telecrm.simulate.ground_truth import expected_funnel, truth_header, write_ground_truth

__all__ = [
    "Simulation",
    "SimulationConfig",
    "expected_funnel",
    "generate",
    "truth_header",
    "write_ground_truth",
]
