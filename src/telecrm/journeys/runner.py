"""The journey runner: matches activity to journeys, fires due timers, runs steps exactly once.

Two passes, each one transaction per batch:
- the inbox pass reads what the projection folded (`journey_inbox`): goals convert, exits end
  instances, waits for an event resume, and entries start new instances (filters, re-entry
  policy, holdout group decided here);
- the due pass claims instances whose timer is due (`SKIP LOCKED` on PostgreSQL), walks their
  steps (steps.py) and writes, in the same transaction, the messages (through the messaging
  planner: consent, quiet hours, caps, dedupe), the new position and timer, and the history.
A crash anywhere rolls the whole batch back; the same entry can only start one instance (its id
is a hash of the entry) and the same step visit can only plan one message (its dedupe key).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, select, update

from telecrm.domain.clock import Clock, from_micros, to_micros
from telecrm.domain.consent import ConsentBook
from telecrm.ingest.intake import EventIntake
from telecrm.ingest.tables import events
from telecrm.journeys.conditions import PatientView, all_hold, needs_profile
from telecrm.journeys.definition import Journey
from telecrm.journeys.effects import write_effects
from telecrm.journeys.registry import JourneyRegistry
from telecrm.journeys.steps import Context, Effect, Position, advance, bucket
from telecrm.journeys.tables import (
    journey_inbox,
    journey_instances,
    journey_steps,
)
from telecrm.messaging.planner import (
    MessagePlanner,
    PlanRequest,
    consent_books,
    load_event_data,
    message_id_for,
)
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import insert_ignoring_conflicts

IN_CHUNK = 500
ERASED = "patient.deleted"


@dataclass(slots=True)
class RunReport:
    activity: int = 0
    stale: int = 0
    entered: int = 0
    held_out: int = 0
    filtered: int = 0
    exited: int = 0
    converted: int = 0
    resumed: int = 0
    fired: int = 0
    steps: int = 0
    sends: int = 0
    completed: int = 0

    def add(self, other: RunReport) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def busy(self) -> bool:
        return bool(self.activity or self.fired)


def instance_id_for(journey: str, patient_key: str, entry_key: str) -> str:
    return (
        "ji_"
        + hashlib.sha256(f"{journey}\x00{patient_key}\x00{entry_key}".encode()).hexdigest()[:24]
    )


def _claim(query: Any, conn: Connection) -> list[Any]:
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query))


def patient_views(
    conn: Connection, cipher: FieldCipher, keys: Sequence[str], now_us: int
) -> dict[str, PatientView]:
    """Decrypted profiles and consent books for `keys` (absent or erased patients get none)."""
    out: dict[str, PatientView] = {}
    keys = sorted(set(keys))
    books = consent_books(conn, keys)
    for start in range(0, len(keys), IN_CHUNK):
        for row in conn.execute(
            select(profiles).where(profiles.c.patient_key.in_(keys[start : start + IN_CHUNK]))
        ):
            p = decode(row, cipher).profile
            if p.deleted:
                continue
            entries = books.get(row.patient_key, [])
            entries = entries + ConsentBook(entries).profile_changes(p.values, now_us)
            out[row.patient_key] = PatientView(p, ConsentBook(entries))
    return out


def _event_seen(conn: Connection, patient_key: str, since_us: int) -> Callable[[str], bool]:
    def seen(event_type: str) -> bool:
        return (
            conn.execute(
                select(events.c.seq)
                .where(
                    events.c.patient_key == patient_key,
                    events.c.occurred_us >= since_us,
                    events.c.type == event_type,
                )
                .limit(1)
            ).first()
            is not None
        )

    return seen


def _entry_matches(j: Journey, kind: str, name: str, data: dict[str, Any] | None) -> bool:
    if kind == "event" and j.entry.event == name:
        return all((data or {}).get(k) == v for k, v in j.entry.when.items())
    return kind == "stage" and j.entry.stage is not None and j.entry.stage.value == name


def _goal_matches(j: Journey, kind: str, name: str) -> bool:
    g = j.goal
    if g is None:
        return False
    return (kind == "event" and g.event == name) or (
        kind == "stage" and g.stage is not None and g.stage.value == name
    )


def _exit_matches(j: Journey, kind: str, name: str) -> bool:
    if kind == "event":
        return name in j.exit.events or name == ERASED
    return name in {s.value for s in j.exit.stages}


class JourneyRunner:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        index: Callable[[], BlindIndex],
        clock: Clock,
        registry: JourneyRegistry,
        planner: MessagePlanner,
        *,
        max_entry_age_hours: float = 48.0,
        intake: EventIntake | None = None,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._index = index
        self._clock = clock
        self.registry = registry
        self.planner = planner
        self.max_entry_age_us = int(max_entry_age_hours * 3_600_000_000)
        self._intake = intake

    # -- the loop ----------------------------------------------------------------------------
    def run_once(self, limit: int = 1000) -> RunReport:
        report = self.process_inbox(limit)
        from telecrm.journeys.schedules import run_schedules

        report.add(run_schedules(self))
        report.add(self.fire_due(limit))
        return report

    def drain(self, limit: int = 1000) -> RunReport:
        """Until no activity waits and no timer is due at the clock's current time."""
        total = RunReport()
        while True:
            report = self.run_once(limit)
            total.add(report)
            if not report.busy:
                return total

    # -- activity ----------------------------------------------------------------------------
    def process_inbox(self, limit: int = 1000) -> RunReport:
        cipher = self._cipher()
        report = RunReport()
        with self._engine.begin() as conn:
            now_us = to_micros(self._clock.now())
            self.registry.register(conn, now_us)
            rows = _claim(select(journey_inbox).order_by(journey_inbox.c.id).limit(limit), conn)
            if not rows:
                return report
            report.activity = len(rows)
            keys = sorted({r.patient_key for r in rows})
            instances: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for start in range(0, len(keys), IN_CHUNK):
                for i in conn.execute(
                    select(journey_instances).where(
                        journey_instances.c.patient_key.in_(keys[start : start + IN_CHUNK])
                    )
                ):
                    instances[i.patient_key].append(dict(i._mapping))
            current = self.registry.journeys
            with_when = {j.entry.event for j in current if j.entry.when}
            data = load_event_data(
                conn, cipher, [r.event_id for r in rows if r.event_id and r.name in with_when]
            )
            oldest = now_us - self.max_entry_age_us
            matches: dict[int, list[Journey]] = {}
            for r in rows:
                if r.occurred_us >= oldest:
                    event_data = data.get(r.event_id or "", ("", None))[1]
                    matches[r.id] = [
                        j for j in current if _entry_matches(j, r.kind, r.name, event_data)
                    ]
            need = {
                r.patient_key
                for r in rows
                if any(needs_profile(j.filters) for j in matches.get(r.id, []))
            }
            views = patient_views(conn, cipher, sorted(need), now_us) if need else {}
            history: list[dict[str, Any]] = []
            new: list[dict[str, Any]] = []
            for r in sorted(rows, key=lambda r: (r.occurred_us, r.id)):
                for inst in instances[r.patient_key]:
                    if inst.get("_entry_row") != r.id:
                        self._apply_activity(conn, inst, r, now_us, history, report)
                if r.id not in matches:
                    report.stale += 1
                    continue
                for j in matches[r.id]:
                    row = self._enter(j, r, instances[r.patient_key], views, now_us, report)
                    if row is not None:
                        instances[r.patient_key].append(row)
                        new.append(row)
            insert_ignoring_conflicts(
                conn,
                journey_instances,
                [{k: v for k, v in row.items() if not k.startswith("_")} for row in new],
                ["instance_id"],
            )
            self._write_changes(conn, instances)
            if history:
                conn.execute(journey_steps.insert(), history)
            conn.execute(delete(journey_inbox).where(journey_inbox.c.id.in_([r.id for r in rows])))
        return report

    def _apply_activity(
        self,
        conn: Connection,
        inst: dict[str, Any],
        r: Any,
        now_us: int,
        history: list[dict[str, Any]],
        report: RunReport,
    ) -> None:
        if r.occurred_us < inst["entered_us"]:
            return  # what happened before the patient entered neither converts nor exits them
        j = self.registry.definition(conn, inst["journey"], inst["version"])
        if (
            inst["converted_us"] is None
            and _goal_matches(j, r.kind, r.name)
            and j.goal is not None
            and r.occurred_us <= inst["entered_us"] + to_micros_delta(j.goal.within)
        ):
            inst["converted_us"] = r.occurred_us
            inst["_changed"] = True
            report.converted += 1
        if inst["state"] != "active":
            return

        def log(step: str, action: str, outcome: str) -> None:
            history.append(
                {
                    "instance_id": inst["instance_id"],
                    "journey": inst["journey"],
                    "step": step,
                    "action": action,
                    "outcome": outcome,
                    "message_id": None,
                    "at_us": now_us,
                }
            )

        if _exit_matches(j, r.kind, r.name):
            inst.update(
                state="exited",
                exit_reason=f"{r.kind}:{r.name}"[:60],
                finished_us=now_us,
                due_us=None,
                waiting_for=None,
                _changed=True,
            )
            log(inst["step"] or "-", "exit", f"{r.kind}:{r.name}")
            report.exited += 1
        elif r.kind == "event" and inst["waiting_for"] == r.name and inst["step"]:
            wait_step = j.step(inst["step"])
            spec = wait_step.wait_spec
            target = (spec.on_event if spec else None) or j.following(wait_step)
            log(wait_step.id, "wait", f"event:{r.name}")
            if target is None:
                inst.update(state="completed", finished_us=now_us, step=None, due_us=None)
            else:
                inst.update(step=target, due_us=now_us)
            inst.update(waiting_for=None, _changed=True)
            report.resumed += 1

    def _enter(
        self,
        j: Journey,
        r: Any,
        patient_instances: list[dict[str, Any]],
        views: dict[str, PatientView],
        now_us: int,
        report: RunReport,
    ) -> dict[str, Any] | None:
        entry_key = r.event_id or f"{r.kind}:{r.name}:{r.occurred_us}"
        row = self.new_instance(j, r.patient_key, entry_key, r.event_id, r.occurred_us, now_us)
        mine = [i for i in patient_instances if i["journey"] == j.name]
        if any(i["instance_id"] == row["instance_id"] for i in mine):
            return None
        if not self.may_enter(j, mine, r.occurred_us):
            return None
        view = views.get(r.patient_key, PatientView(None, None))
        if j.filters and not all_hold(j.filters, view):
            report.filtered += 1
            return None
        report.entered += 1
        report.held_out += row["grp"] == "holdout"
        row.update(_new=True, _entry_row=r.id)
        return row

    @staticmethod
    def may_enter(j: Journey, mine: list[dict[str, Any]], now_us: int) -> bool:
        """The re-entry policy: once ever, whenever not inside, or after a cooldown."""
        if not mine:
            return True
        if j.re_entry == "once":
            return False
        if any(i["state"] == "active" for i in mine):
            return False
        cooldown = j.cooldown
        if cooldown is None:
            return True
        return max(i["entered_us"] for i in mine) + to_micros_delta(cooldown) <= now_us

    def new_instance(
        self,
        j: Journey,
        patient_key: str,
        entry_key: str,
        event_id: str | None,
        occurred_us: int,
        now_us: int,
    ) -> dict[str, Any]:
        instance_id = instance_id_for(j.name, patient_key, entry_key)
        held_out = bucket(patient_key, f"holdout:{j.name}") < j.holdout
        return {
            "instance_id": instance_id,
            "journey": j.name,
            "version": self.registry.version_of(j.name),
            "patient_key": patient_key,
            "entry_key": entry_key[:200],
            "entry_event_id": event_id,
            "grp": "holdout" if held_out else "journey",
            # The holdout group enters (so its conversions are counted) but takes no step.
            "state": "completed" if held_out else "active",
            "step": None if held_out else j.steps[0].id,
            "visits": 0,
            "due_us": None if held_out else now_us,
            "waiting_for": None,
            "entered_us": min(occurred_us, now_us),  # goals and exits count from the entry
            "finished_us": now_us if held_out else None,
            "exit_reason": "holdout" if held_out else None,
            "converted_us": None,
            "lease_until_us": 0,
        }

    @staticmethod
    def _write_changes(conn: Connection, instances: dict[str, list[dict[str, Any]]]) -> None:
        changed = [
            i
            for rows in instances.values()
            for i in rows
            if i.get("_changed") and not i.get("_new")
        ]
        if not changed:
            return
        update_instances(
            conn,
            [
                {
                    "instance_id": i["instance_id"],
                    **{c: i[c] for c in ("state", "step", "due_us", "waiting_for")},
                    **{c: i[c] for c in ("finished_us", "exit_reason", "converted_us")},
                }
                for i in changed
            ],
        )

    # -- timers ------------------------------------------------------------------------------
    def fire_due(self, limit: int = 1000) -> RunReport:
        cipher, index = self._cipher(), self._index()  # keys before the transaction
        report = RunReport()
        with self._engine.begin() as conn:
            now = self._clock.now()
            now_us = to_micros(now)
            self.registry.register(conn, now_us)
            rows = _claim(
                select(journey_instances)
                .where(
                    and_(
                        journey_instances.c.state == "active", journey_instances.c.due_us <= now_us
                    )
                )
                .order_by(journey_instances.c.due_us)
                .limit(limit),
                conn,
            )
            if not rows:
                return report
            defs = {
                (r.journey, r.version): self.registry.definition(conn, r.journey, r.version)
                for r in rows
            }
            need_view = {
                r.patient_key for r in rows if _needs_context(defs[(r.journey, r.version)])
            }
            views = patient_views(conn, cipher, sorted(need_view), now_us) if need_view else {}
            entry_data = load_event_data(
                conn, cipher, [r.entry_event_id for r in rows if r.entry_event_id]
            )
            default_zone = self.planner.config.default_timezone
            requests: list[PlanRequest] = []
            effects: list[tuple[Any, Effect]] = []
            history: list[dict[str, Any]] = []
            changes: list[dict[str, Any]] = []
            for r in rows:
                j = defs[(r.journey, r.version)]
                pos = Position(
                    r.instance_id, r.journey, r.patient_key, r.entered_us, r.step, r.visits,
                    r.due_us, r.waiting_for,
                )  # fmt: skip
                event_type, data = entry_data.get(r.entry_event_id or "", (None, None))

                def ctx(r: Any = r, data: Any = data) -> Context:
                    return Context(
                        views.get(r.patient_key, PatientView(None, None)),
                        data,
                        from_micros(r.entered_us),
                        _event_seen(conn, r.patient_key, r.entered_us),
                        default_zone,
                    )

                result = advance(j, pos, now, ctx)
                report.fired += 1
                report.steps += len(result.history)
                report.completed += pos.state == "completed"
                report.exited += pos.state == "exited"
                for step, action, outcome, key in result.history:
                    history.append(
                        {
                            "instance_id": r.instance_id,
                            "journey": r.journey,
                            "step": step,
                            "action": action,
                            "outcome": outcome if key is None else "planned",
                            "message_id": message_id_for(key) if key else None,
                            "at_us": now_us,
                        }
                    )
                effects.extend((r, e) for e in result.effects)
                for send in result.sends:
                    requests.append(
                        PlanRequest(
                            patient_key=r.patient_key,
                            template=send.template,
                            channel=send.channel,
                            source=f"journey:{r.journey}",
                            dedupe_key=send.dedupe_key,
                            event_id=r.entry_event_id,
                            event_type=event_type,
                            event_data=data or {},
                        )
                    )
                changes.append(
                    {
                        "instance_id": pos.instance_id,
                        "state": pos.state,
                        "step": pos.step,
                        "visits": pos.visits,
                        "due_us": pos.due_us if pos.state == "active" else None,
                        "waiting_for": pos.waiting_for,
                        "finished_us": pos.finished_us,
                        "exit_reason": pos.exit_reason,
                    }
                )
            report.sends = len(requests)
            if requests:
                self.planner.plan(conn, requests, cipher, index, now=now)
            if effects:
                write_effects(conn, self._intake, effects, now)
            update_instances(conn, changes)
            if history:
                conn.execute(journey_steps.insert(), history)
        return report


def update_instances(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write instances' changed columns by id in one executemany (each row: instance_id and the
    same columns)."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "instance_id"]
    conn.execute(
        update(journey_instances)
        .where(journey_instances.c.instance_id == bindparam("b_instance_id"))
        .values({c: bindparam(f"b_{c}") for c in columns}),
        [{f"b_{k}": v for k, v in r.items()} for r in rows],
    )


def _needs_context(j: Journey) -> bool:
    """Does any step look at the patient (branch conditions, local time of day)?"""
    for s in j.steps:
        if s.branch is not None and needs_profile(s.branch.conditions()):
            return True
        wait = s.wait_spec
        if wait is not None and wait.until_time is not None:
            return True
    return False


def to_micros_delta(delta: Any) -> int:
    return int(delta.total_seconds() * 1_000_000)
