"""`telecrm patients erase`: the values go, the patient gets nothing more, the log says who and why,
and a rebuild of the projection erases them again. Both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from telecrm.bootstrap import Runtime
from telecrm.cli import app
from telecrm.domain.clock import FrozenClock
from telecrm.ingest.tables import events
from telecrm.messaging.tables import messages
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profiles
from telecrm.security import compliance_commands
from telecrm.security.audit import audit_rows
from tests.security.compliance_seed import CANARIES, PID, seeded_patient
from tests.support.builders import event


def refill(at, due_on: str) -> dict:  # type: ignore[no-untyped-def]
    return event("refill.due", PID, at, {"prescription_id": "rx_rights", "due_on": due_on})


def test_erasure_removes_every_value_stops_messages_and_is_audited(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with seeded_patient(runtime, clock, tmp_path) as s:
        monkeypatch.setattr(compliance_commands, "runtime", lambda: s.runtime)
        # Control: before the erasure, the next refill reminder reaches Twilio.
        texts = len(s.messaging.twilio.messages)
        s.clock.advance(timedelta(days=1))
        s.messaging.feed([refill(s.clock.now(), "2026-04-08")])
        s.messaging.run()
        assert len(s.messaging.twilio.messages) == texts + 1
        runner = CliRunner()
        args = ["patients", "erase", PID, "--reason", "patient request #9", "--yes"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "erased" in result.stdout and "event payloads now unreadable" in result.stdout
        assert not any(c in result.output for c in CANARIES)
        engine = s.runtime.engine
        with engine.connect() as conn:
            row = conn.execute(select(profiles).where(profiles.c.patient_key == PID)).one()
            erasures = conn.execute(
                select(events.c.type).where(events.c.source == "erasure")
            ).scalars()
            assert list(erasures) == ["patient.deleted"]
            entries = [e for e in audit_rows(conn, record_id=PID) if e["action"] == "erase"]
        assert row.deleted and orjson.loads(row.sealed) == {}
        assert not any(c in row.attributes for c in CANARIES)
        assert [e["purpose"] for e in entries] == ["patient request #9"]
        # A trigger after the erasure sends nothing.
        with engine.connect() as conn:
            before = conn.execute(select(messages.c.message_id)).all()
        texts, emails = len(s.messaging.twilio.messages), len(s.messaging.sendgrid.messages)
        s.clock.advance(timedelta(days=1))
        s.messaging.feed([refill(s.clock.now(), "2026-05-08")])
        s.messaging.run()
        assert len(s.messaging.twilio.messages) == texts  # no reminder reached Twilio
        assert len(s.messaging.sendgrid.messages) == emails
        with engine.connect() as conn:
            sent_after = conn.execute(
                select(messages.c.status).where(
                    messages.c.message_id.not_in([r.message_id for r in before])
                )
            ).scalars()
            assert all(status != "sent" for status in sent_after)
        # Again: nothing left to remove; an unknown id: one red line.
        again = runner.invoke(app, args)
        assert again.exit_code == 1 and "erased before" in again.output
        unknown = runner.invoke(app, ["patients", "erase", "nobody", "--reason", "x y", "--yes"])
        assert unknown.exit_code == 1
        # The erasure is in the log, so a rebuild gives the same erased profile.
        digest = projection_digest(engine, s.runtime.cipher())
        rebuild_projection(engine, s.runtime.worker(), s.clock)
        assert projection_digest(engine, s.runtime.cipher()) == digest


def test_erasure_asks_before_it_acts(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with seeded_patient(runtime, clock, tmp_path) as s:
        monkeypatch.setattr(compliance_commands, "runtime", lambda: s.runtime)
        result = CliRunner().invoke(
            app, ["patients", "erase", PID, "--reason", "patient request #9"], input="n\n"
        )
        assert result.exit_code == 1  # aborted
        with s.runtime.engine.connect() as conn:
            deleted = conn.execute(
                select(profiles.c.deleted).where(profiles.c.patient_key == PID)
            ).scalar_one()
        assert not deleted
