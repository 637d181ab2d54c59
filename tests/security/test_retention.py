"""Event retention: a patient inactive for longer than the retention goes whole (with the visitor
history linked to them), an active one keeps every event however old, the prune is audited, and
a rebuild afterwards agrees with the live projection. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from telecrm.bootstrap import Runtime
from telecrm.cli import app
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.ingest.tables import events, identity_links, known_patients
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profiles, stage_transitions
from telecrm.security import compliance_commands
from telecrm.security.audit import audit_rows
from telecrm.security.retention import RetentionTooShortForEvents, prune_inactive_patients
from telecrm.security.tables import patient_salts
from tests.support.builders import SignedClient, event, registration

START = datetime(2019, 1, 7, 15, 0, tzinfo=UTC)
LATER = START + timedelta(days=2400)  # past six years
OLD, ACTIVE = "pat_old_1", "pat_active_1"
SIX_YEARS = 2192


def _post(api: SignedClient, clock: FrozenClock, at: datetime, payloads: list[dict]) -> None:  # type: ignore[type-arg]
    clock.set(at)
    api.now = at
    for payload in payloads:
        answer = api.post(payload)
        assert answer.status_code == 202, answer.text


def _seed(runtime: Runtime, api: SignedClient, clock: FrozenClock) -> None:
    h = timedelta(hours=1)
    _post(
        api,
        clock,
        START + 2 * h,
        [
            event("session.tracked", None, START, {"channel": "email"}, anonymous_id="v_old"),
            registration(OLD, START + h, anonymous_id="v_old"),
            event("order.paid", OLD, START + 2 * h, {"order_id": "o_old", "amount": 20.0}),
            registration(ACTIVE, START + h),  # as old as OLD's, but ACTIVE comes back later
        ],
    )
    _post(
        api,
        clock,
        LATER,
        [event("order.paid", ACTIVE, LATER, {"order_id": "o_active", "amount": 30.0})],
    )
    runtime.worker().drain()


def _count(runtime: Runtime, table, column, value) -> int:  # type: ignore[no-untyped-def]
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(column == value)
            ).scalar_one()
        )


def test_an_inactive_patient_goes_whole_and_an_active_one_keeps_every_event(
    runtime: Runtime, api: SignedClient, clock: FrozenClock
) -> None:
    _seed(runtime, api, clock)
    active_events = _count(runtime, events, events.c.patient_key, ACTIVE)
    assert active_events == 2
    now_us = to_micros(LATER + timedelta(days=1))
    with runtime.engine.begin() as conn:
        dry = prune_inactive_patients(
            conn, now_us=now_us, retention_days=SIX_YEARS, actor="test", dry_run=True
        )
    assert (dry.patients, dry.events) == (2, 3)  # OLD and its visitor; 3 events
    assert _count(runtime, events, events.c.patient_key, OLD) == 2  # the dry run changed nothing
    with runtime.engine.begin() as conn:
        report = prune_inactive_patients(
            conn, now_us=now_us, retention_days=SIX_YEARS, actor="test"
        )
    assert (report.patients, report.events) == (2, 3)
    for table, column, value in (
        (events, events.c.patient_key, OLD),
        (events, events.c.patient_key, "anon:v_old"),
        (profiles, profiles.c.patient_key, OLD),
        (profiles, profiles.c.patient_key, "anon:v_old"),
        (stage_transitions, stage_transitions.c.patient_key, OLD),
        (patient_salts, patient_salts.c.patient_key, OLD),
        (identity_links, identity_links.c.patient_id, OLD),
        (known_patients, known_patients.c.patient_id, OLD),
    ):
        assert _count(runtime, table, column, value) == 0, (table.name, value)
    assert _count(runtime, events, events.c.patient_key, ACTIVE) == active_events
    assert _count(runtime, profiles, profiles.c.patient_key, ACTIVE) == 1
    with runtime.engine.connect() as conn:
        pruned = [e for e in audit_rows(conn, record_id=OLD) if e["action"] == "delete"]
    assert pruned and "retention" in pruned[0]["purpose"]
    live = projection_digest(runtime.engine, runtime.cipher())
    rebuild_projection(runtime.engine, runtime.worker(), clock)
    assert projection_digest(runtime.engine, runtime.cipher()) == live


def test_a_retention_shorter_than_six_years_is_refused(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn, pytest.raises(RetentionTooShortForEvents) as caught:
        prune_inactive_patients(conn, now_us=0, retention_days=365, actor="test")
    assert "2192" in str(caught.value)


def test_the_command_needs_a_configured_retention_and_counts_before_it_acts(
    runtime: Runtime, api: SignedClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(runtime, api, clock)
    clock.set(LATER + timedelta(days=1))
    monkeypatch.setattr(compliance_commands, "runtime", lambda: runtime)
    runner = CliRunner()
    unset = runner.invoke(app, ["retention", "prune", "--dry-run"])
    assert unset.exit_code == 2 and "TELECRM_EVENT_RETENTION_DAYS" in unset.output
    monkeypatch.setattr(
        runtime, "settings", runtime.settings.model_copy(update={"event_retention_days": SIX_YEARS})
    )
    dry = runner.invoke(app, ["retention", "prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove 2 patients" in dry.output and "3 events" in dry.output
    assert _count(runtime, events, events.c.patient_key, OLD) == 2
    done = runner.invoke(app, ["retention", "prune", "--yes"])
    assert done.exit_code == 0, done.output
    assert "removed 2 patients" in done.output
    assert _count(runtime, events, events.c.patient_key, OLD) == 0
