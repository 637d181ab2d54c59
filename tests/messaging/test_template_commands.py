"""`telecrm templates list|preview` as an operator uses them."""

from __future__ import annotations

import json
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from telecrm.messaging.template_commands import templates_app
from telecrm.messaging.templates import TemplateCatalog
from telecrm.security.tables import audit_log
from tests.support.builders import MASTER_KEY, customer_journey

CATALOG = TemplateCatalog.load()


pytestmark = pytest.mark.usefixtures("wide_console")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(templates_app, list(args), env=env)


def test_list_shows_every_template_with_the_phi_it_uses() -> None:
    result = run("list")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == len(CATALOG.all()) >= 32
    for t in CATALOG.all():
        assert any(t.name in row and t.channel in row for row in rows)
    assert all("none" in row for row in rows)  # no built-in template uses PHI
    assert f"{len(CATALOG.all())} templates" in result.stdout


def test_list_as_json_carries_references_for_minimum_necessary_callers() -> None:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == len(CATALOG.all())
    order = next(r for r in rows if r["name"] == "order_confirmation" and r["channel"] == "sms")
    assert order["purpose"] == "transactional" and order["languages"] == ["en", "es"]
    assert order["phi_fields"] == [] and "event.amount" in order["references"]


def test_preview_sample_email_prints_subject_text_and_html() -> None:
    result = run("preview", "order_confirmation", "--sample")
    assert result.exit_code == 0, result.output
    assert "subject: Order ord_1042 confirmed" in result.stdout
    assert "Thanks for your order ord_1042" in result.stdout
    assert "<!doctype html>" in result.stdout and "bytes)" in result.stdout


def test_preview_sample_sms_in_spanish_counts_segments() -> None:
    result = run("preview", "order_confirmation", "--channel", "sms", "--language", "es-MX")
    assert result.exit_code == 0, result.output
    assert "Telecrm Health: ¡Gracias, Ana! Confirmamos tu pedido ord_1042" in result.stdout
    assert "1 segment, GSM-7" in result.stdout


def test_preview_of_a_security_template_uses_sample_secrets() -> None:
    result = run("preview", "two_factor_code")  # only an SMS template has this name
    assert result.exit_code == 0, result.output
    assert "482913 is your verification code" in result.stdout


def test_an_unknown_template_is_one_clear_line() -> None:
    result = run("preview", "order_confirmed")
    assert result.exit_code == 1
    assert "no template named 'order_confirmed'" in result.output
    assert "order_confirmation" in result.output  # the known names are listed
    wrong_channel = run("preview", "two_factor_code", "--channel", "email")
    assert wrong_channel.exit_code == 1
    assert "no email template named 'two_factor_code'" in wrong_channel.output
    bad_channel = run("preview", "welcome", "--channel", "fax")
    assert bad_channel.exit_code == 2


def test_a_broken_override_is_reported_with_file_and_line(tmp_path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "welcome.en.j2").write_text("{{ brand.name }}:\n{{ patient.conditions }}\n")
    result = run("list", "--templates-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "sms/welcome.en.j2 line 2: refers to patient.conditions" in result.output
    with_baa = run("list", "--templates-dir", str(tmp_path), "--sms-baa", "--json")
    assert with_baa.exit_code == 0, with_baa.output
    welcome = next(
        r for r in json.loads(with_baa.stdout) if r["name"] == "welcome" and r["channel"] == "sms"
    )
    assert welcome["phi_fields"] == ["conditions"]


@pytest.fixture
def env(engine: Engine, tmp_path) -> dict[str, str]:
    return {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def test_preview_for_a_patient_reads_only_what_it_uses_and_audits_it(
    env: dict[str, str], engine: Engine, clock, tmp_path
) -> None:
    from telecrm.cli import app

    path = tmp_path / "events.jsonl"
    start = clock.now() - timedelta(days=20)
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in customer_journey("pat_1", start)))
    imported = CliRunner().invoke(app, ["import", str(path)], env=env)
    assert imported.exit_code == 0, imported.output

    result = run("preview", "welcome", "--channel", "sms", "--patient", "pat_1", env=env)
    assert result.exit_code == 0, result.output
    assert "Telecrm Health: Welcome, Ada!" in result.stdout
    with engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert (last.action, last.purpose) == ("read", "template preview")
    assert json.loads(last.fields) == ["first_name"]  # not the email, phone or birth date

    missing = run("preview", "welcome", "--patient", "pat_404", env=env)
    assert missing.exit_code == 1 and "no patient matches" in missing.output
