"""The CLI prints fitted parameters and the evaluation, or one red line when data is too thin."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from telecrm.analytics import clv_commands


def _app() -> typer.Typer:
    app = typer.Typer()
    clv_commands.register(app)
    return app


def test_an_empty_database_gets_a_clear_message_not_a_traceback(monkeypatch) -> None:
    from telecrm.analytics import event_arrays as ea

    monkeypatch.setattr(clv_commands, "_log_and_now", lambda as_of: (ea.build([]), 20_000.0))
    runner = CliRunner()
    for command in ("clv", "churn"):
        result = runner.invoke(_app(), [command])
        assert result.exit_code == 1, result.output
        assert "cannot" in result.output
    assert runner.invoke(_app(), ["churn", "--method", "magic"]).exit_code == 2


def test_clv_and_churn_print_parameters_and_metrics(monkeypatch) -> None:
    from telecrm.analytics import event_arrays as ea
    from tests.analytics.clv_population import population

    pop = population(2000, 24, 5)
    log = ea.from_wire(pop.events)
    end = ea.to_days(pop.config.end)
    monkeypatch.setattr(clv_commands, "_log_and_now", lambda as_of: (log, end))
    runner = CliRunner()
    out = runner.invoke(_app(), ["clv"])
    assert out.exit_code == 0, out.output
    assert "BG/NBD" in out.output and "sBG pooled" in out.output
    out = runner.invoke(_app(), ["churn"])
    assert out.exit_code == 0, out.output
    assert "AUC" in out.output and "lift" in out.output
