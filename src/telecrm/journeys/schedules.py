"""Scheduled entries: `entry: {schedule: {every: 7d}}` looks for patients who pass the filters
once per period. The entry key names the period, so a period enters a patient at most once even
when two runners race or one crashes half-way through the scan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from telecrm.domain.clock import to_micros
from telecrm.journeys.conditions import all_hold
from telecrm.journeys.tables import journey_instances, journey_schedule_runs
from telecrm.profiles.tables import profiles
from telecrm.store.upsert import insert_ignoring_conflicts, upsert

if TYPE_CHECKING:
    from telecrm.journeys.runner import JourneyRunner, RunReport

SCAN_CHUNK = 1000


def run_schedules(runner: JourneyRunner) -> RunReport:
    from telecrm.journeys.runner import RunReport, patient_views

    report = RunReport()
    scheduled = [j for j in runner.registry.journeys if j.entry.schedule is not None]
    if not scheduled:
        return report
    cipher = runner._cipher()
    now_us = to_micros(runner._clock.now())
    for j in scheduled:
        assert j.entry.schedule is not None
        every_us = int(j.entry.schedule.every.total_seconds() * 1_000_000)
        period = now_us // every_us * every_us
        with runner._engine.connect() as conn:
            last = conn.execute(
                select(journey_schedule_runs.c.last_run_us).where(
                    journey_schedule_runs.c.journey == j.name
                )
            ).scalar_one_or_none()
        if last is not None and last >= period:
            continue
        after = ""
        while True:  # one transaction per chunk: a long scan never holds the writer
            with runner._engine.begin() as conn:
                runner.registry.register(conn, now_us)
                keys = list(
                    conn.execute(
                        select(profiles.c.patient_key)
                        .where(
                            profiles.c.patient_key > after,
                            profiles.c.patient_id.is_not(None),
                            profiles.c.deleted.is_(False),
                        )
                        .order_by(profiles.c.patient_key)
                        .limit(SCAN_CHUNK)
                    ).scalars()
                )
                if not keys:
                    upsert(
                        conn,
                        journey_schedule_runs,
                        [{"journey": j.name, "last_run_us": period}],
                        ["journey"],
                        ["last_run_us"],
                    )
                    break
                after = keys[-1]
                views = patient_views(conn, cipher, keys, now_us)
                mine: dict[str, list[dict[str, object]]] = {k: [] for k in keys}
                for i in conn.execute(
                    select(journey_instances).where(
                        journey_instances.c.journey == j.name,
                        journey_instances.c.patient_key.in_(keys),
                    )
                ):
                    mine[i.patient_key].append(dict(i._mapping))
                rows = []
                for key in keys:
                    view = views.get(key)
                    if view is None or not runner.may_enter(j, mine[key], now_us):
                        continue
                    if not all_hold(j.filters, view):
                        report.filtered += 1
                        continue
                    row = runner.new_instance(j, key, f"schedule:{period}", None, now_us, now_us)
                    report.entered += 1
                    report.held_out += row["grp"] == "holdout"
                    rows.append(row)
                insert_ignoring_conflicts(conn, journey_instances, rows, ["instance_id"])
    return report
