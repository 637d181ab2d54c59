"""The sync commands as an operator runs them, against a HubSpot sandbox on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from telecrm.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_hubspot_sandbox
from tests.support.builders import CANARY_EMAIL, MASTER_KEY, customer_journey, registration
from tests.support.live_server import live_server

DAY = timedelta(days=1)


@pytest.fixture
def sandbox() -> HubSpotSandbox:
    return create_hubspot_sandbox(HubSpotSandboxConfig())


@pytest.fixture
def env(
    engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch, sandbox: HubSpotSandbox
) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cli_support.console, "width", 200)
    monkeypatch.setattr(cli_support.err_console, "width", 200)
    with live_server(sandbox.app) as url:
        yield {
            "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "TELECRM_MASTER_KEY": MASTER_KEY,
            "TELECRM_HOME": str(tmp_path),
            "TELECRM_DESTINATIONS": "hubspot",
            "TELECRM_HUBSPOT_URL": url,
            "TELECRM_HUBSPOT_TOKEN": "pat-na1-sandbox",
        }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def imported(env, clock, tmp_path) -> dict[str, str]:
    path = tmp_path / "journeys.jsonl"
    start = clock.now() - 20 * DAY
    events = [e for i in range(3) for e in customer_journey(f"pat_{i}", start)]
    events.append(registration("pat_canary", start, data={"email": CANARY_EMAIL}))
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    assert run(env, "import", str(path)).exit_code == 0
    assert run(env, "worker", "--once").exit_code == 0
    return env


def test_provision_twice_creates_then_finds_everything(env) -> None:
    first = run(env, "crm", "provision", "hubspot")
    assert first.exit_code == 0, first.output
    assert first.output.count("created") == 13  # 10 custom properties, a group on 3 objects
    assert "contacts.telecrm_patient_id" in first.output
    second = run(env, "crm", "provision", "hubspot")
    assert "created" not in second.output and second.output.count("exists") == 13


def test_plan_counts_what_would_be_sent_and_redacts_identifying_values(imported) -> None:
    result = run(imported, "sync", "plan", "hubspot", "--all", "--samples", "10", "--json")
    assert result.exit_code == 0, result.output
    plan = orjson.loads(result.stdout)  # the JSON is on stdout; logs go to stderr
    assert plan["new"] == {"contact": 4, "deal": 3}
    assert plan["estimated_calls"] == 3  # contacts, deals, deal→contact associations
    assert CANARY_EMAIL not in result.output
    assert any(s["properties"].get("email") == "[redacted]" for s in plan["samples"])


def test_backfill_then_status_then_nothing_left_to_send(imported, sandbox: HubSpotSandbox) -> None:
    assert run(imported, "crm", "provision", "hubspot").exit_code == 0
    result = run(imported, "sync", "backfill", "hubspot")
    assert result.exit_code == 0, result.output
    assert "7 written" in result.output and "3 API calls" in result.output
    assert len(sandbox.records("contacts")) == 4
    status = run(imported, "sync", "status")
    assert "dirty patients 0" in status.output and "open dead letters 0" in status.output
    again = run(imported, "sync", "plan", "hubspot", "--all", "--json")
    assert orjson.loads(again.stdout)["estimated_calls"] == 0


def test_refused_records_can_be_listed_shown_retried_and_purged(imported) -> None:
    # Without provisioning, HubSpot refuses every record: the custom properties do not exist.
    result = run(imported, "sync", "run", "hubspot")
    assert result.exit_code == 0, result.output
    listed = run(imported, "dlq", "list")
    assert listed.output.count("VALIDATION_ERROR") == 7  # 4 contacts, 3 deals
    assert CANARY_EMAIL not in listed.output
    shown = run(imported, "dlq", "show", "1")
    assert (
        shown.exit_code == 0 and "patient_key" in shown.output and CANARY_EMAIL not in shown.output
    )
    assert run(imported, "crm", "provision", "hubspot").exit_code == 0
    assert "queued for retry" in run(imported, "dlq", "retry", "--all").output
    fixed = run(imported, "sync", "run", "hubspot")
    assert "0 refused" in fixed.output
    assert "open dead letters 0" in run(imported, "sync", "status").output
    purged = run(imported, "dlq", "purge", "--all")
    assert "purged" in purged.output


def test_unknown_dead_letter_and_missing_credentials_are_one_red_line(imported) -> None:
    missing = run(imported, "dlq", "show", "999")
    assert missing.exit_code == 1 and "no dead letter with id 999" in missing.output
    no_token = {k: v for k, v in imported.items() if k != "TELECRM_HUBSPOT_TOKEN"}
    refused = run(no_token, "sync", "run", "hubspot")
    assert refused.exit_code == 1 and "TELECRM_HUBSPOT_TOKEN" in refused.output
    bad = run(imported, "mapping", "check", "/nonexistent/mapping.yaml")
    assert bad.exit_code == 1 and "cannot read the file" in bad.output


def test_disclosures_list_what_went_where_for_one_patient(imported) -> None:
    assert run(imported, "crm", "provision", "hubspot").exit_code == 0
    assert run(imported, "sync", "backfill", "hubspot").exit_code == 0
    result = run(imported, "sync", "disclosures", "pat_1")
    assert result.exit_code == 0, result.output
    assert "hubspot" in result.output and "c_pat_1" in result.output  # the contact and the deal
    assert "email" in result.output and "Lovelace" not in result.output  # names, never values
    assert "disclosures of pat_1 (2)" in result.output
