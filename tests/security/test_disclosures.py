"""The accounting of disclosures: every way a patient's data leaves telecrm (a CRM sync under a
BAA, an SMS naming a medication, a journey webhook) shows up as one row a patient can read,
with the recipient, the kind of data and why; kept six years, pruned only after."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI, Request, Response
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from telecrm.bootstrap import Runtime, bootstrap
from telecrm.cli import app
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.domain.events import parse_event
from telecrm.journeys.webhooks import JourneyWebhookSender
from telecrm.messaging.templates import BUILTIN_DIR as TEMPLATES_ROOT
from telecrm.observability.logs import configure_logging
from telecrm.sandbox.faults import sandbox_client
from telecrm.security import compliance_commands
from telecrm.security.audit import audit_rows
from telecrm.security.disclosures import (
    InvalidSince,
    RetentionTooShort,
    disclosures_for,
    parse_since,
    prune_disclosures,
)
from telecrm.settings import Settings
from telecrm.sync.tables import disclosures
from tests.journeys.helpers import consenting, tick
from tests.messaging.harness import messaging_harness
from tests.security.compliance_seed import CANARIES, PID, seeded_patient
from tests.support.builders import CANARY_MEDICATION, event, registration

DAY_US = 86_400 * 1_000_000
SIX_YEARS = 2192


def test_the_accounting_lists_the_crm_sync_and_the_phi_sms_with_recipient_data_and_purpose(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    with seeded_patient(runtime, clock, tmp_path) as s, s.runtime.engine.connect() as conn:
        found = disclosures_for(conn, PID)
    assert [d.at for d in found] == sorted(d.at for d in found)
    crm = [d for d in found if d.destination == "dynamics"]
    assert crm and {d.source for d in crm} == {"sync"}
    contact = next(d for d in crm if d.object == "contact")
    assert contact.recipient == "Microsoft Corporation (Dynamics 365 CRM)"
    assert contact.phi
    assert {"Full name and contact", "Medical history and conditions"} <= set(contact.data_points)
    assert "customer relationship records" in contact.purpose
    sms = [d for d in found if d.destination == "twilio"]
    (refill,) = [d for d in sms if d.phi]  # only the refill reminder names a health value
    assert refill.purpose_code == "transactional message refill_reminder"
    assert (refill.source, refill.object) == ("messaging", "sms")
    assert refill.recipient_address == "api.twilio.com"
    assert "Current medications and allergies" in refill.data_points
    assert refill.purpose == (
        "Delivering a text message to you: refill reminder (about your care or your account)"
    )
    email = next(d for d in found if d.destination == "sendgrid")
    assert (email.object, email.phi) == ("email", False)
    assert email.data_points == ("Full name and contact",)


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/hooks")
        async def hooks(request: Request) -> Response:
            self.bodies.append(await request.body())
            return Response(status_code=204)

        return api


PHI_WEBHOOK = """version: 1
name: care_handoff
entry: {event: questionnaire.started}
steps:
  - id: tell
    webhook: {url: "https://care.example.com/hooks", secret_env: HANDOFF_SECRET,
              fields: [medications, stage], baa: true}
"""


def test_a_journey_webhook_carrying_phi_is_accounted_as_health_information(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    from tests.journeys.helpers import DAYTIME

    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "care_handoff.yaml").write_text(PHI_WEBHOOK)
    clock.set(DAYTIME)
    rt = bootstrap(
        runtime.settings.model_copy(update={"journeys_dir": folder}),
        clock=clock, engine=runtime.engine, migrate=False,
    )  # fmt: skip
    reg = consenting("p_hook", DAYTIME)
    reg["data"]["medications"] = [CANARY_MEDICATION]
    raw = [reg, event("questionnaire.started", "p_hook", DAYTIME, {"questionnaire_id": "q1"})]
    rt.intake().accept([parse_event(e, now=DAYTIME) for e in raw], source="webhook", actor="t")
    tick(rt, clock)
    receiver = Receiver()
    sender = JourneyWebhookSender(
        rt.engine, rt.cipher, clock,
        sandbox_client(receiver.app(), base_url="https://care.example.com"),
        environ={"HANDOFF_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
    )  # fmt: skip
    assert sender.drain().delivered == 1
    assert CANARY_MEDICATION.encode() in receiver.bodies[0]  # it really left, under the BAA
    with rt.engine.connect() as conn:
        (hook,) = disclosures_for(conn, "p_hook")
    assert (hook.source, hook.phi) == ("journeys", True)
    assert hook.recipient_address == "care.example.com"
    assert hook.data_points == ("Current medications and allergies", "Lifecycle stage")
    assert hook.purpose.startswith("Care program step (care handoff)")


def test_an_email_accounts_for_the_first_name_its_display_name_carries(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    """A template that never shows the first name still sends it as the recipient's name."""
    folder = tmp_path / "templates"
    (folder / "email").mkdir(parents=True)
    for language in ("en", "es"):
        welcome = (TEMPLATES_ROOT / "email" / f"welcome.{language}.j2").read_text()
        (folder / "email" / f"welcome.{language}.j2").write_text(
            welcome.replace('{{ patient.first_name | default("there") }}', "there").replace(
                "{% if patient.first_name %}, {{ patient.first_name }}{% endif %}", ""
            )
        )
    at = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    clock.set(at)
    with messaging_harness(runtime, clock, settings={"templates_dir": folder}) as h:
        h.feed([registration("p_mail", at, data={"first_name": "Grace"})])
        h.run()
        sent = b"".join(h.sent_bytes["sendgrid"])
        with h.runtime.engine.connect() as conn:
            (email,) = [d for d in disclosures_for(conn, "p_mail") if d.object == "email"]
    assert b'"name":"Grace"' in sent.replace(b" ", b"")
    assert "first_name" in email.fields and "email" in email.fields


def _row(patient: str, at_us: int, **values: object) -> dict[str, object]:
    return {
        "at_us": at_us,
        "destination": "hubspot",
        "patient_key": patient,
        "object": "contacts",
        "record_key": patient,
        "fields": orjson.dumps(["email", "first_name"]).decode(),
        "phi": False,
        "purpose": "crm sync",
        **values,
    }


def test_since_keeps_only_the_disclosures_from_that_instant_on(runtime: Runtime) -> None:
    now_us = to_micros(runtime.clock.now())
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(disclosures),
            [_row("p1", now_us - 10 * DAY_US), _row("p1", now_us - DAY_US), _row("p2", now_us)],
        )
        since = runtime.clock.now() - timedelta(days=2)
        recent = disclosures_for(conn, "p1", since=since)
        everything = disclosures_for(conn, "p1")
    assert [d.at for d in recent] == [runtime.clock.now() - timedelta(days=1)]
    assert len(everything) == 2
    assert {d.recipient for d in everything} == {"HubSpot, Inc. (HubSpot CRM)"}


def test_prune_deletes_only_rows_older_than_the_retention_and_audits_it(
    runtime: Runtime,
) -> None:
    now_us = to_micros(runtime.clock.now())
    ages = {"seven_years": 7 * 366, "just_over": SIX_YEARS + 1, "just_under": SIX_YEARS - 1,
            "last_week": 7}  # fmt: skip
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(disclosures),
            [_row(f"p_{name}", now_us - days * DAY_US) for name, days in ages.items()],
        )
    with runtime.engine.begin() as conn:
        report = prune_disclosures(conn, now_us=now_us, retention_days=SIX_YEARS, actor="ops")
    with runtime.engine.connect() as conn:
        left = set(conn.execute(select(disclosures.c.patient_key)).scalars())
        (entry,) = audit_rows(conn, record_id="p_seven_years")
    assert (report.deleted, report.patients) == (2, 2)
    assert left == {"p_just_under", "p_last_week"}
    assert (entry["actor"], entry["action"], entry["record_type"]) == (
        "ops",
        "delete",
        "disclosures",
    )
    assert sorted(entry["record_ids"]) == ["p_just_over", "p_seven_years"]
    assert entry["purpose"] == f"retention: disclosures older than {SIX_YEARS} days"


def test_a_retention_under_six_years_is_refused_with_the_reason(runtime: Runtime) -> None:
    with pytest.raises(ValidationError, match="at least 2192 days"):
        Settings(disclosure_retention_days=365)
    assert Settings().disclosure_retention_days == SIX_YEARS
    with runtime.engine.begin() as conn, pytest.raises(RetentionTooShort, match="six years"):
        prune_disclosures(conn, now_us=0, retention_days=2000, actor="ops")
    result = CliRunner().invoke(
        app, ["disclosures", "prune"], env={"TELECRM_DISCLOSURE_RETENTION_DAYS": "2000"}
    )
    assert result.exit_code == 2
    assert "TELECRM_DISCLOSURE_RETENTION_DAYS" in result.output and "2192" in result.output


# -- the command ---------------------------------------------------------------------------------
def test_the_command_gives_the_accounting_as_table_json_and_escaped_html_and_audits_each_read(
    runtime: Runtime,
    clock: FrozenClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wide_console: None,
) -> None:
    logs = io.StringIO()
    configure_logging("DEBUG", stream=logs)
    try:
        with seeded_patient(runtime, clock, tmp_path) as s:
            rt = bootstrap(
                s.runtime.settings.model_copy(update={"brand_name": "<b>Acme</b> & Co"}),
                clock=clock, engine=runtime.engine, migrate=False,
            )  # fmt: skip
            monkeypatch.setattr(compliance_commands, "runtime", lambda: rt)
            runner = CliRunner()
            table = runner.invoke(app, ["disclosures", PID, "--reason", "patient request #12"])
            as_json = runner.invoke(
                app, ["disclosures", PID, "--reason", "patient request #12", "--format", "json"]
            )
            page = tmp_path / "accounting.html"
            html = runner.invoke(
                app,
                ["disclosures", "show", PID, "--reason", "patient request #12",
                 "--format", "html", "--out", str(page)],
            )  # fmt: skip
            clock.advance(timedelta(days=1))
            later = runner.invoke(
                app,
                ["disclosures", PID, "--reason", "r", "--format", "json",
                 "--since", (clock.now() - timedelta(hours=1)).isoformat()],
            )  # fmt: skip
            with rt.engine.connect() as conn:
                reads = [e for e in audit_rows(conn, record_id=PID) if e["action"] == "read"
                         and e["record_type"] == "disclosures"]  # fmt: skip
    finally:
        configure_logging("WARNING")
    for result in (table, as_json, html, later):
        assert result.exit_code == 0, result.output
    assert "Microsoft Corporation" in table.output and "Twilio Inc." in table.output
    assert "refill reminder" in table.output
    doc = orjson.loads(as_json.stdout)
    assert doc["organisation"] == "<b>Acme</b> & Co"
    destinations = [d["destination"] for d in doc["disclosures"]]
    assert "dynamics" in destinations and "twilio" in destinations
    assert doc["period_start"] < doc["disclosures"][0]["at"] <= doc["period_end"]
    assert orjson.loads(later.stdout)["disclosures"] == []  # nothing left since the seed
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text
    assert "&lt;b&gt;Acme&lt;/b&gt; &amp; Co" in text and "<b>Acme" not in text
    assert text.count("<tr>") == len(doc["disclosures"]) + 1  # a header row, one per disclosure
    assert '<th scope="col">Purpose</th>' in text
    assert len(reads) == 4 and {e["purpose"] for e in reads} == {"patient request #12", "r"}
    shown = table.output + as_json.output + text + logs.getvalue()
    for canary in CANARIES:
        assert canary.lower() not in shown.lower(), canary


def test_the_command_refuses_what_it_cannot_answer_in_one_line(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, wide_console: None
) -> None:
    monkeypatch.setattr(compliance_commands, "runtime", lambda: runtime)
    runner = CliRunner()
    no_reason = runner.invoke(app, ["disclosures", "p1"])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    too_long = runner.invoke(app, ["disclosures", "p1", "--reason", "x" * 65])
    assert too_long.exit_code == 2 and "at most 64" in too_long.output
    unknown = runner.invoke(app, ["disclosures", "p_nobody", "--reason", "check"])
    assert unknown.exit_code == 1 and "no patient matches" in unknown.output
    future = runner.invoke(app, ["disclosures", "p1", "--reason", "r", "--since", "2999-01-01"])
    assert future.exit_code == 2 and "in the future" in future.output
    garbled = runner.invoke(app, ["disclosures", "p1", "--reason", "r", "--since", "last week"])
    assert garbled.exit_code == 2 and "2025-01-31" in garbled.output
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(disclosures)).scalar_one() == 0


def test_prune_from_the_command_line_keeps_what_is_younger_than_six_years(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, wide_console: None
) -> None:
    now_us = to_micros(runtime.clock.now())
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(disclosures),
            [_row("p_old", now_us - 3000 * DAY_US), _row("p_new", now_us - 2000 * DAY_US)],
        )
    monkeypatch.setattr(compliance_commands, "runtime", lambda: runtime)
    result = CliRunner().invoke(app, ["disclosures", "prune", "--actor", "retention-job"])
    assert result.exit_code == 0, result.output
    assert "deleted 1 disclosures of 1 patients" in result.output
    with runtime.engine.connect() as conn:
        assert list(conn.execute(select(disclosures.c.patient_key)).scalars()) == ["p_new"]


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2026, 3, 1)))
def test_since_reads_back_any_past_date_or_time_it_is_given(at: datetime) -> None:
    aware = at.replace(tzinfo=UTC)
    assert parse_since(aware.isoformat(), now=NOW) == aware
    assert parse_since(at.isoformat(), now=NOW) == aware  # no zone: UTC
    assert parse_since(at.date().isoformat(), now=NOW) == datetime.combine(
        at.date(), datetime.min.time(), tzinfo=UTC
    )


@given(st.text(max_size=30))
def test_since_refuses_anything_else_with_the_format_it_wants(text: str) -> None:
    try:
        parsed = parse_since(text, now=NOW)
    except InvalidSince as exc:  # one of three fixed messages: the input is never echoed
        assert str(exc) in {
            str(InvalidSince(why))
            for why in ("is empty", "is not a date or time", "is in the future")
        }
    else:
        assert parsed <= NOW and parsed.tzinfo is not None
