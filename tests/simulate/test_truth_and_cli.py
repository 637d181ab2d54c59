"""The ground truth file and `telecrm simulate`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import typer
from typer.testing import CliRunner

from telecrm.domain.events import parse_event
from telecrm.simulate import SimulationConfig, expected_funnel, write_ground_truth
from telecrm.simulate.cli import simulate_app
from tests.simulate.conftest import Run


def test_truth_has_one_record_per_patient_with_latent_parameters(run: Run) -> None:
    assert len(run.truth) == run.config.patients
    for t in run.truth:
        latent = t["latent"]
        assert 0 < latent["churn_hazard_monthly"] < 1
        assert 0 < latent["dropout_per_order"] < 1
        assert latent["reorder_rate_per_month"] > 0 and latent["mean_order_value"] > 0
        for at in t["hidden"].values():
            assert datetime.fromisoformat(at) < run.config.end


def test_hidden_instants_tell_the_story_in_order(run: Run) -> None:
    won_back = 0
    for t in run.truth:
        hidden = t["hidden"]
        first = hidden.get("churned_at") or hidden.get("dropped_out_at")
        assert not ("churned_at" in hidden and "dropped_out_at" in hidden)
        if "won_back_at" in hidden:
            won_back += 1
            assert first is not None and first <= hidden["won_back_at"]
            assert hidden.get("lapsed_again_at", hidden["won_back_at"]) >= hidden["won_back_at"]
        else:
            assert "lapsed_again_at" not in hidden
    assert won_back > 5


def test_mean_latent_churn_hazard_is_the_configured_churn(run: Run) -> None:
    hazards = [t["latent"]["churn_hazard_monthly"] for t in run.truth]
    assert abs(sum(hazards) / len(hazards) - run.config.monthly_churn) < 0.004


def test_silent_dropouts_are_in_the_truth_but_not_in_the_events(run: Run) -> None:
    dropped = [t for t in run.truth if "dropped_out_at" in t["hidden"]]
    assert dropped
    for t in dropped[:50]:
        last_order = max(
            e["occurred_at"] for e in run.by_patient[t["patient_id"]] if e["type"] == "order.paid"
        )
        assert last_order <= t["hidden"]["dropped_out_at"] or "won_back_at" in t["hidden"]


def test_write_ground_truth_starts_with_the_config_and_its_expected_rates(tmp_path: Path) -> None:
    config = SimulationConfig(patients=300, months=3, seed=9)
    path = tmp_path / "truth.jsonl"
    assert write_ground_truth(config, path) == 300
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    header, patients = lines[0], lines[1:]
    assert header["kind"] == "config"
    assert header["config"]["seed"] == 9
    assert header["expected_funnel"] == expected_funnel(config)
    assert {a["area"] for a in header["areas"]} >= {"weight_management", "hair_loss"}
    assert header["providers"][0]["provider_id"] == "prov_0001"
    assert len({p["patient_id"] for p in patients}) == 300


def _cli() -> typer.Typer:
    """Mounted the way `telecrm` mounts it."""
    app = typer.Typer()
    app.add_typer(simulate_app, name="simulate")

    @app.command()
    def version() -> None:  # a second command, so `simulate` is a real sub-command
        pass

    return app


def test_simulate_writes_events_truth_and_a_summary(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    args = ["simulate", "--patients", "200", "--months", "2", "--out", str(out)]
    result = CliRunner().invoke(_cli(), [*args, "--truth", str(truth), "--no-progress"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    end = SimulationConfig(patients=200, months=2).end
    assert events and all(parse_event(e, now=end) for e in events)
    assert len(truth.read_bytes().splitlines()) == 201
    assert f"wrote {len(events):,} events for 200 patients" in result.output
    assert "events/s" in result.output


def test_simulate_is_reproducible_from_the_command_line(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        args = ["simulate", "--patients", "150", "--seed", "42", "--out", str(tmp_path / name)]
        assert CliRunner().invoke(_cli(), [*args, "--no-progress"]).exit_code == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


def test_simulate_refuses_a_bad_start_date_with_exit_code_2(tmp_path: Path) -> None:
    args = ["simulate", "--out", str(tmp_path / "x.jsonl"), "--start", "2025-13-01"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output


def test_simulate_refuses_an_output_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), ["simulate", "--out", str(tmp_path / "no" / "x.jsonl")])
    assert result.exit_code == 2
