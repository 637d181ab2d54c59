"""Canary PHI: planted values never show in clear text in the database, the logs, or any error."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy import Engine, MetaData, select

from telecrm.observability.logs import configure_logging
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_MEDICATION,
    CANARY_PHONE,
    event,
    registration,
)

CANARIES = (
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_EMAIL,
    CANARY_PHONE,
    CANARY_CONDITION,
    CANARY_MEDICATION,
)
DAY = timedelta(days=1)


def plant(api, clock) -> list:
    now = clock.now()
    responses = [
        api.post(
            [
                registration(
                    "pat_canary",
                    now - 3 * DAY,
                    data={
                        "first_name": CANARY_FIRST,
                        "last_name": CANARY_LAST,
                        "email": CANARY_EMAIL,
                        "phone": CANARY_PHONE,
                        "conditions": [CANARY_CONDITION],
                    },
                ),
                event(
                    "consultation.submitted",
                    "pat_canary",
                    now - 2 * DAY,
                    {"consultation_id": "c1", "medications": [CANARY_MEDICATION]},
                ),
            ]
        ),
        # Bad input that carries the canaries: the errors must not echo them.
        api.post(
            registration(
                "pat_bad",
                now,
                data={"first_name": CANARY_FIRST + "\x00", "email": CANARY_EMAIL + "@@"},
            )
        ),
        api.post(
            event(
                "patient.updated",
                "pat_nobody",
                now,
                {"first_name": CANARY_LAST, "phone": CANARY_PHONE},
            )
        ),
        api.post(None, raw=b'{"first_name": "' + CANARY_FIRST.encode() + b'", '),
    ]
    return responses


def database_text(engine: Engine) -> str:
    """Every value of every table, as the database returns it."""
    meta = MetaData()
    meta.reflect(engine)
    out = io.StringIO()
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    out.write(value.decode("latin-1") if isinstance(value, bytes) else str(value))
                    out.write("\n")
    return out.getvalue()


def test_canary_phi_is_nowhere_in_clear_text(
    api, runtime, clock, engine: Engine, tmp_path: Path
) -> None:
    log_stream = io.StringIO()
    configure_logging("DEBUG", stream=log_stream)
    try:
        responses = plant(api, clock)
        runtime.worker().drain()
        clock.advance(200 * DAY)
        runtime.sweep().run()
        structlog.get_logger("test").info("canary.done", email=CANARY_EMAIL, patient="pat_canary")
    finally:
        logging.getLogger().handlers.clear()
    assert responses[0].status_code == 202
    assert [r.status_code for r in responses[1:]] == [422, 422, 400]

    leaks: dict[str, list[str]] = {}
    errors = "\n".join(r.text for r in responses[1:])
    places = {
        "error responses": errors,
        "logs": log_stream.getvalue(),
        "database": database_text(engine),
    }
    if engine.dialect.name == "sqlite":
        db_path = Path(engine.url.database or "")
        raw_conn = engine.raw_connection()  # a checkpoint runs outside any transaction
        try:
            raw_conn.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw_conn.close()
        raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        places["database file"] = raw.decode("latin-1")
    for where, content in places.items():
        found = [c for c in CANARIES if c.lower() in content.lower()]
        if found:
            leaks[where] = found
    assert leaks == {}
    assert "[redacted]" in log_stream.getvalue()  # the seat belt caught the deliberate one

    with engine.begin() as conn:
        from telecrm.profiles.views import patient_view

        view = patient_view(
            conn, runtime.cipher(), "pat_canary", actor="test", reveal_reason="test", now_us=0
        )
    assert (
        view.fields["email"] == CANARY_EMAIL
    )  # and yet it is all there for those allowed to see it
    assert CANARY_MEDICATION in view.fields["medications"]
