"""The time sweep: moves customers to at_risk and churned as the clock passes their thresholds.

It reads only clear facts (no sealed field is decrypted), and stamps each move at the instant
the threshold was crossed, so the history equals what a replay of the log would produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select, update

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.lifecycle import Thresholds, Transition
from telecrm.domain.messages import PatientActivity, StageChanged
from telecrm.domain.profile import advance_time
from telecrm.profiles.codec import ActivityFolded, ProfilesWritten, decode, encode, transition_rows
from telecrm.profiles.tables import profiles, stage_transitions

SWEEP_COLUMNS = (
    "stage",
    "stage_since_us",
    "max_rank",
    "attributes",
    "as_of_us",
    "next_check_us",
    "updated_us",
)


@dataclass
class SweepReport:
    examined: int = 0
    moved: int = 0
    transitions: int = 0
    messages: list[object] = field(default_factory=list)


class LifecycleSweep:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        thresholds: Thresholds,
        *,
        publish: Callable[[object], None] | None = None,
        on_written: ProfilesWritten | None = None,
        on_activity: ActivityFolded | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._thresholds = thresholds
        self._publish = publish
        self._on_written = on_written
        self._on_activity = on_activity

    def run(self, batch: int = 2000) -> SweepReport:
        total = SweepReport()
        while True:
            report = self._one_batch(batch)
            total.examined += report.examined
            total.moved += report.moved
            total.transitions += report.transitions
            if self._publish is not None:
                for message in report.messages:
                    self._publish(message)
            if report.examined < batch:
                return total

    def _one_batch(self, batch: int) -> SweepReport:
        now = self._clock.now()
        now_us = to_micros(now)
        report = SweepReport()
        with self._engine.begin() as conn:
            query = (
                select(profiles)
                .where(profiles.c.next_check_us <= now_us, profiles.c.deleted.is_(False))
                .order_by(profiles.c.next_check_us)
                .limit(batch)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            report.examined = len(rows)
            new_transitions: list[dict[str, object]] = []
            for row in rows:
                stored = decode(row, None)
                history: list[Transition] = []
                advance_time(stored.profile, now, self._thresholds, history)
                stored.profile.as_of = now
                new_transitions.extend(
                    transition_rows(row.patient_key, stored.transitions, history)
                )
                stored.transitions += len(history)
                out = encode(
                    stored, cipher=None, index=None, thresholds=self._thresholds, now_us=now_us
                )
                if history:
                    report.moved += 1
                    report.transitions += len(history)
                    report.messages.extend(
                        StageChanged(
                            row.patient_key,
                            out["patient_id"],
                            t.from_stage,
                            t.to_stage,
                            t.at,
                            t.reason,
                        )
                        for t in history
                    )
                conn.execute(
                    update(profiles)
                    .where(profiles.c.patient_key == row.patient_key)
                    .values({c: out[c] for c in SWEEP_COLUMNS})
                )
            if new_transitions:
                conn.execute(insert(stage_transitions), new_transitions)
            moved = sorted({m.patient_key for m in report.messages if isinstance(m, StageChanged)})
            if moved and self._on_written is not None:
                self._on_written(conn, moved, now_us)
            if self._on_activity is not None:
                activity = [
                    PatientActivity(m.patient_key, "stage", m.to_stage.value, None, to_micros(m.at))
                    for m in report.messages
                    if isinstance(m, StageChanged) and m.patient_id is not None
                ]
                if activity:
                    self._on_activity(conn, activity, now_us)
        return report
