"""Several workers share the queue: every patient is folded once, in order, whatever the interleaving."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from telecrm.ingest.tables import events, pending_patients
from telecrm.profiles.tables import profiles, stage_transitions
from tests.support.builders import customer_journey

DAY = timedelta(days=1)


def test_two_workers_fold_every_patient_exactly_once(api, runtime, clock) -> None:
    start = clock.now() - 30 * DAY
    for i in range(40):
        assert (
            api.post(customer_journey(f"pat_{i:02d}", start + i * timedelta(hours=1))).status_code
            == 202
        )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            runtime.worker().drain(limit=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with runtime.engine.connect() as conn:
        stages = {
            s: n
            for s, n in conn.execute(
                select(profiles.c.stage, func.count()).group_by(profiles.c.stage)
            )
        }
        transitions = conn.execute(select(func.count()).select_from(stage_transitions)).scalar_one()
        unprocessed = conn.execute(
            select(func.count()).select_from(events).where(events.c.processed.is_(False))
        ).scalar_one()
        queued = conn.execute(select(func.count()).select_from(pending_patients)).scalar_one()
    assert stages == {"active_customer": 40}
    assert transitions == 40 * 4  # lead, prospect, patient, active_customer: none twice
    assert unprocessed == 0 and queued == 0
