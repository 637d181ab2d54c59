"""The messaging commands as an operator runs them: messages list / why / stats / send / nps /
provision, consent show / set, and the sandboxes' commands' help."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.cli import app
from telecrm.sandbox.sendgrid import SendGridSandboxConfig, create_sendgrid_sandbox
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from tests.support.builders import CANARY_EMAIL, MASTER_KEY, event, registration
from tests.support.live_server import live_server

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def env(engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cli_support.console, "width", 220)
    monkeypatch.setattr(cli_support.err_console, "width", 220)
    sendgrid = create_sendgrid_sandbox(SendGridSandboxConfig())
    twilio = TwilioSandbox(TwilioSandboxConfig())
    with live_server(sendgrid.app) as sg_url, live_server(twilio.app) as tw_url:
        yield {
            "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "TELECRM_MASTER_KEY": MASTER_KEY,
            "TELECRM_HOME": str(tmp_path),
            "TELECRM_SENDGRID_API_KEY": "SG.sandbox-key",
            "TELECRM_SENDGRID_URL": sg_url,
            "TELECRM_TWILIO_URL": tw_url,
            "TELECRM_TWILIO_ACCOUNT_SID": twilio.config.account_sid,
            "TELECRM_TWILIO_AUTH_TOKEN": twilio.config.auth_token,
            "TELECRM_TWILIO_MESSAGING_SERVICE_SID": twilio.config.messaging_service_sid,
        }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def sent(env, tmp_path) -> dict[str, str]:
    """Two patients registered a minute ago (one with SMS consent, one in quiet hours), sent."""
    path = tmp_path / "events.jsonl"
    events = [
        registration(
            "pat_day",
            NOW,
            data={
                "email": CANARY_EMAIL,
                "timezone": "UTC",
                "communication_preferences": {
                    "sms_consent": True,
                    "quiet_hours_start": "23:59",
                    "quiet_hours_end": "00:00",
                },
            },
        ),
        registration(
            "pat_nosms",
            NOW,
            data={
                "email": "b@example.com",
                "timezone": "UTC",
                "communication_preferences": {
                    "quiet_hours_start": "23:59",
                    "quiet_hours_end": "00:00",
                },
            },
        ),
        event("support_ticket.created", "pat_day", NOW, {"ticket_id": "t1", "category": "x"}),
    ]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    assert run(env, "import", str(path)).exit_code == 0
    assert run(env, "worker", "--once").exit_code == 0
    result = run(env, "messages", "send")
    assert result.exit_code == 0, result.output
    assert "planned 5 messages from 3 triggers" in result.stdout
    return env


def test_list_and_why_explain_each_decision_without_an_address(sent) -> None:
    listed = run(sent, "messages", "list", "--json")
    rows = [orjson.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    by = {(r["patient_id"], r["template"], r["channel"]): r for r in rows}
    assert by[("pat_day", "welcome", "sms")]["status"] == "sent"
    suppressed = by[("pat_nosms", "welcome", "sms")]
    assert (suppressed["status"], suppressed["reason"]) == ("suppressed", "no_consent")
    why = run(sent, "messages", "why", suppressed["message_id"])
    assert why.exit_code == 0
    assert "consent" in why.stdout and "suppress" in why.stdout and "no sms consent" in why.stdout
    assert CANARY_EMAIL not in listed.stdout + why.stdout
    missing = run(sent, "messages", "why", "msg_nope")
    assert missing.exit_code == 1 and "no message msg_nope" in missing.output


def test_stats_counts_by_status_and_reason(sent) -> None:
    stats = run(sent, "messages", "stats", "--json")
    summary = orjson.loads(stats.stdout)
    assert summary["by_status"]["email:sent"] == 3
    assert summary["by_status"]["sms:sent"] == 1
    assert summary["reasons"] == {"sms:no_consent": 1}
    table = run(sent, "messages", "stats")
    assert "not sent, and why" in table.stdout and "no_consent" in table.stdout


def test_consent_set_is_evidence_and_the_next_message_obeys_it(sent) -> None:
    revoked = run(
        sent,
        "consent",
        "set",
        "pat_day",
        "--channel",
        "email",
        "--purpose",
        "transactional",
        "--revoked",
        "--evidence",
        "phone call, ticket 7",
    )
    assert revoked.exit_code == 0
    shown = run(sent, "consent", "show", "pat_day")
    assert "phone call, ticket 7" in shown.stdout and "cli" in shown.stdout
    bad = run(
        sent,
        "consent",
        "set",
        "pat_day",
        "--channel",
        "fax",
        "--purpose",
        "marketing",
        "--granted",
        "--evidence",
        "x",
    )
    assert bad.exit_code == 2


def test_provision_creates_the_unsubscribe_groups_once(env) -> None:
    first = run(env, "messages", "provision")
    second = run(env, "messages", "provision")
    assert first.exit_code == 0, first.output
    assert "TELECRM_SENDGRID_MARKETING_GROUP=" in first.stdout
    assert first.stdout == second.stdout


def test_nps_needs_a_reason_and_prints_the_overall_score(sent) -> None:
    assert run(sent, "messages", "nps").exit_code == 2
    result = run(sent, "messages", "nps", "--reason", "quarterly review")
    assert result.exit_code == 0


def test_sandbox_commands_teach_their_credentials() -> None:
    for kind in ("sendgrid", "twilio"):
        result = CliRunner().invoke(app, ["sandbox", kind, "--help"])
        assert result.exit_code == 0
    assert "SG.sandbox-key" in CliRunner().invoke(app, ["sandbox", "sendgrid", "--help"]).stdout


def test_serve_refuses_to_start_with_a_template_that_leaks_phi(env, tmp_path) -> None:
    (tmp_path / "tpl" / "email").mkdir(parents=True)
    (tmp_path / "tpl" / "email" / "welcome.en.j2").write_text(
        "{% block subject %}Hi{% endblock %}{% block text %}{{ patient.conditions }}"
        "{% endblock %}{% block html %}x{% endblock %}"
    )
    result = run({**env, "TELECRM_TEMPLATES_DIR": str(tmp_path / "tpl")}, "serve", "--port", "1")
    assert result.exit_code == 1
    assert "welcome.en.j2" in result.output and "conditions" in result.output
    assert "PHI" in result.output
