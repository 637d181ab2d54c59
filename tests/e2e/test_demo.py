"""`telecrm demo` end to end, small: the quick start's first command must keep working."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_checks_itself(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_support.console, "width", 200)
    env = {"TELECRM_HOME": str(tmp_path), "TELECRM_MASTER_KEY": ""}
    result = CliRunner().invoke(app, ["demo", "--patients", "80", "--months", "3"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "generated a demo master key" in out
    assert "lost in transit" in out and "were already known" in out
    assert "audit chain: intact" in out
    assert "scores stored on profiles" in out and "patients scored" in out  # analytics run
    assert "analytics.scored events folded" in out
    assert "CRM sync (sandboxes" in out and out.count("│ ok") == 4  # all four CRMs agree
    # Messaging: today's events reach both providers, and the PHI canary stays out of them.
    assert "messages by status" in out and "engagement (share of sent)" in out
    assert "telecrm messages why" in out and "quiet_hours" in out
    assert "found in what it received" in out and "│ SendGrid    │ no" in out
    assert "BAA is refused" in out
    # Journeys: the eight built-ins replayed over simulated months, with their holdouts counted.
    assert "journeys over 3 simulated months" in out
    for journey in ("lead_nurturing", "refill_reminder_campaign", "subscription_renewal"):
        assert f"│ {journey}" in out
    assert "journey messages by status: queued" in out
    for stage in ("visitor", "lead", "churned"):
        assert stage in out
    assert "Unknown patient" in out and "Signature rejected" in out  # the bad-input table
