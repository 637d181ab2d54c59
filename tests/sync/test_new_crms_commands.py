"""Pipedrive and Dynamics 365 through the commands an operator runs: provision (twice: created,
then exists), backfill, and a dry run, against their sandboxes on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from telecrm.sandbox.dynamics import create_dynamics_sandbox
from telecrm.sandbox.dynamics_limits import DynamicsSandboxConfig
from telecrm.sandbox.pipedrive import PipedriveSandboxConfig, create_pipedrive_sandbox
from telecrm.sync.mapping import load_mapping
from tests.support.builders import MASTER_KEY, customer_journey
from tests.support.live_server import live_server
from tests.sync.harness import DYNAMICS_ENV


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture(params=["pipedrive", "dynamics"])
def env(
    request: pytest.FixtureRequest, engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cli_support.console, "width", 200)
    monkeypatch.setattr(cli_support.err_console, "width", 200)
    name = request.param
    # The built-in mapping with its limits raised: the commands run on the real clock, and the
    # limits' pacing has its own tests; this one is about the commands.
    mapping = load_mapping(name)
    text = Path(mapping.path).read_text()
    start, end = text.index("limits:"), text.index("connection:")
    fast = tmp_path / f"{name}.yaml"
    fast.write_text(
        text[:start] + "limits: {requests: 10000, per_seconds: 1, burst: 100}\n" + text[end:]
    )
    if name == "pipedrive":
        sandbox = create_pipedrive_sandbox(PipedriveSandboxConfig(burst_api_token=10_000))
        creds = {"TELECRM_PIPEDRIVE_TOKEN": "pd-sandbox-api-token"}
    else:
        org = load_mapping("dynamics").connection["org_url"]
        sandbox = create_dynamics_sandbox(DynamicsSandboxConfig(org_url=org))
        creds = dict(DYNAMICS_ENV)
    with live_server(sandbox.app) as url:
        yield {
            "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "TELECRM_MASTER_KEY": MASTER_KEY,
            "TELECRM_HOME": str(tmp_path),
            "TELECRM_DESTINATIONS": str(fast),
            f"TELECRM_{name.upper()}_URL": url,
            "DESTINATION": name,
            **creds,
        }


def test_provision_backfill_and_plan_from_the_command_line(env, clock, tmp_path) -> None:
    name = env["DESTINATION"]
    first = run(env, "crm", "provision", name)
    assert first.exit_code == 0, first.output
    assert "created" in first.output and "failed" not in first.output
    second = run(env, "crm", "provision", name)
    assert "created" not in second.output and "exists" in second.output
    path = tmp_path / "events.jsonl"
    start = clock.now() - timedelta(days=20)
    events = [e for i in range(3) for e in customer_journey(f"pat_{i}", start)]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    assert run(env, "import", str(path)).exit_code == 0
    assert run(env, "worker", "--once").exit_code == 0
    plan = run(env, "sync", "plan", name, "--all", "--json")
    assert plan.exit_code == 0, plan.output
    assert orjson.loads(plan.stdout)["estimated_calls"] >= 1
    backfill = run(env, "sync", "backfill", name)
    assert backfill.exit_code == 0, backfill.output
    assert "3 patients" in backfill.output and "refused" in backfill.output
    again = run(env, "sync", "run", name)
    assert again.exit_code == 0 and "0 API calls" in again.output.replace(",", "")
