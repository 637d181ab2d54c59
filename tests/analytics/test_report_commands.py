"""The report commands as an operator runs them, on both engines: tables with hand-counted
numbers, charts written where asked, small cells suppressed, no identifier printed, reads of
sealed fields audited."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.analytics.report_commands import register
from telecrm.domain.events import parse_event
from telecrm.security.tables import audit_log
from tests.support.builders import MASTER_KEY, customer_journey, event, registration

DAY = timedelta(days=1)
PROVIDER = "dr_canary_0042"  # a provider id: PHI, must never be printed
CHANNELS = ["paid_search"] * 4 + ["organic"] * 2


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def env(runtime, tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Six patients through first order 60 days ago (two more stop at the consultation), all
    in California, one provider; as the CLI sees it."""
    monkeypatch.setattr(cli_support.console, "width", 200)
    start = runtime.clock.now() - 60 * DAY
    raw: list[dict] = []
    for i, channel in enumerate(CHANNELS):
        key = f"pat_{i}"
        journey = customer_journey(key, start)
        journey[0] = registration(
            key,
            start,
            data={
                "address": {
                    "line1": "1 Main St",
                    "city": "Fresno",
                    "state": "CA",
                    "postal_code": "93650",
                },
                "acquisition_channel": channel,
            },
        )
        cid = f"c_{key}"
        journey += [
            event(
                "consultation.assigned",
                key,
                start + 2 * DAY + timedelta(minutes=5),
                {"consultation_id": cid, "provider_id": PROVIDER},
            ),
            event(
                "consultation.accepted",
                key,
                start + 2 * DAY + timedelta(minutes=30),
                {"consultation_id": cid, "provider_id": PROVIDER},
            ),
        ]
        raw += journey
    for i in (6, 7):
        raw += customer_journey(f"pat_{i}", start)[:3]
    now = runtime.clock.now()
    runtime.intake().accept([parse_event(e, now=now) for e in raw], source="webhook", actor="t")
    runtime.worker().drain()
    return {
        "TELECRM_DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def as_of(runtime) -> str:
    return runtime.clock.now().isoformat()


def test_funnels_prints_conversion_within_the_window_and_writes_the_chart(
    app, env, runtime, tmp_path
) -> None:
    out = tmp_path / "charts"
    result = CliRunner().invoke(
        app, ["funnels", "--window", "30d", "--chart", str(out), "--as-of", as_of(runtime)], env=env
    )
    assert result.exit_code == 0, result.output
    consultation = next(line for line in result.output.splitlines() if "consultation" in line)
    # 8 entered, 6 reached `patient` on day 3: 75.0 %, median 3.0 days.
    assert "8" in consultation and "75.0%" in consultation and "3.0" in consultation
    assert (out / "funnels.png").read_bytes().startswith(b"\x89PNG")
    assert ElementTree.parse(out / "funnels.svg").getroot().tag.endswith("svg")  # noqa: S314 (our own file)


def test_funnels_by_channel_suppresses_groups_under_five(app, env, runtime) -> None:
    result = CliRunner().invoke(
        app, ["funnels", "--window", "all", "--by", "channel", "--as-of", as_of(runtime)], env=env
    )
    assert result.exit_code == 0, result.output
    organic = next(
        line for line in result.output.splitlines() if "consultation" in line and "organic" in line
    )
    assert "<5" in organic and "100" not in organic


def test_a_bad_window_is_one_red_line_and_exit_code_2(app, env) -> None:
    result = CliRunner().invoke(app, ["funnels", "--window", "soon"], env=env)
    assert result.exit_code == 2
    assert "30d" in result.output


def test_cohorts_and_forecast_run_on_little_history_with_clear_messages(
    app, env, runtime, tmp_path
) -> None:
    later = (runtime.clock.now() + 45 * DAY).isoformat()
    cohorts = CliRunner().invoke(
        app, ["cohorts", "--as-of", later, "--chart", str(tmp_path)], env=env
    )
    assert cohorts.exit_code == 0, cohorts.output
    assert "still purchasing" in cohorts.output and "100%" in cohorts.output
    assert (tmp_path / "cohorts.png").exists() and (tmp_path / "cohorts_subscribed.svg").exists()
    early = (runtime.clock.now() - 20 * DAY).isoformat()
    refused = CliRunner().invoke(app, ["forecast", "--as-of", early], env=env)
    assert refused.exit_code == 1
    assert "need at least 8 complete weeks" in refused.output
    short = CliRunner().invoke(
        app, ["forecast", "--as-of", later, "--chart", str(tmp_path)], env=env
    )
    assert short.exit_code == 0, short.output
    assert "trend only" in short.output and "no backtest" in short.output
    assert (tmp_path / "forecast.png").read_bytes().startswith(b"\x89PNG")


def test_providers_and_geography_print_aggregates_only_and_audit_the_read(
    app, env, runtime
) -> None:
    providers = CliRunner().invoke(app, ["providers", "--reason", "quarterly review"], env=env)
    assert providers.exit_code == 0, providers.output
    assert PROVIDER not in providers.output
    line = next(line for line in providers.output.splitlines() if "provider 1" in line)
    # 6 patients, all accepted 30 minutes after submission, prescribed 24 hours after it.
    assert "100.0%" in line and " 30 " in line and "24.0" in line
    geography = CliRunner().invoke(app, ["geography", "--reason", "state trends"], env=env)
    assert geography.exit_code == 0, geography.output
    ca = next(line for line in geography.output.splitlines() if " CA " in f" {line} ")
    assert "6" in ca and "100.0%" in ca
    with runtime.engine.connect() as conn:
        audited = conn.execute(
            select(audit_log.c.record_type, audit_log.c.fields, audit_log.c.purpose)
        ).all()
    purposes = {r.purpose for r in audited}
    assert {"quarterly review", "state trends"} <= purposes
