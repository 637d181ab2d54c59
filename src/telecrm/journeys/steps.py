"""What one step does to one journey instance: pure decisions, no database.

The runner hands each due instance to `advance`, which walks steps until the instance waits or
ends and returns what happened: the new position and timer, the history rows and the messages to
plan. The runner then writes all of it in one transaction, which is what makes a step's effect
and its bookkeeping happen together or not at all. `journeys simulate` walks the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from telecrm.domain.clock import from_micros, to_micros
from telecrm.journeys.conditions import EventSeen, PatientView, all_hold
from telecrm.journeys.definition import CaseSpec, Journey, Step, WebhookSpec
from telecrm.messaging.timezones import resolve

MAX_STEPS_PER_TICK = 100  # validation forbids loops without waits; this is a second guard
TIMER = "@timer"  # `waiting_for` of an instance sitting in a plain timed wait


@dataclass(slots=True)
class Position:
    """Where an instance is (the mutable part of a journey_instances row)."""

    instance_id: str
    journey: str
    patient_key: str
    entered_us: int
    step: str | None
    visits: int
    due_us: int | None
    waiting_for: str | None
    state: str = "active"
    exit_reason: str | None = None
    finished_us: int | None = None


@dataclass(frozen=True, slots=True)
class Send:
    step: str
    template: str
    channel: str
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class Effect:
    """A non-message effect: a milestone event, or a webhook delivery, keyed for exactly-once."""

    step: str
    key: str
    milestone: str | None = None
    webhook: WebhookSpec | None = None
    case: CaseSpec | None = None
    case_kind: str | None = None  # task | case
    update: dict[str, Any] | None = None


@dataclass(slots=True)
class Advance:
    history: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)


@dataclass(slots=True)
class Context:
    """What steps may consult about the patient, loaded by the runner for the batch."""

    patient: PatientView
    entry_data: dict[str, Any] | None
    entry_at: datetime | None
    event_seen: EventSeen | None
    default_timezone: str


def dedupe_key(instance_id: str, step: str, visit: int) -> str:
    return f"journey:{instance_id}:{step}:{visit}"


def bucket(instance_id: str, step: str) -> float:
    """A stable number in [0, 100) for a random split: the same instance always lands alike."""
    digest = hashlib.sha256(f"{instance_id}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


def next_local_time(
    now: datetime, hhmm: str, zone_name: object, state: object, default: str
) -> datetime:
    """The next instant after `now` when the patient's wall clock shows HH:MM (DST-safe)."""
    zone, _ = resolve(zone_name, state, default)
    hour, minute = (int(x) for x in hhmm.split(":"))
    local = now.astimezone(zone)
    for days in range(0, 3):
        day = (local + timedelta(days=days)).date()
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        # A wall time skipped by a DST jump resolves forward through UTC, like any scheduler.
        instant = candidate.astimezone(now.tzinfo)
        if instant > now:
            return instant
    raise AssertionError("unreachable: a day always has the time")


def advance(
    j: Journey,
    pos: Position,
    now: datetime,
    ctx: Callable[[], Context],
) -> Advance:
    """Run `pos` from its current step until it waits or ends (mutates `pos`)."""
    out = Advance()
    now_us = to_micros(now)

    def log(step: str, action: str, outcome: str, message_id: str | None = None) -> None:
        out.history.append((step, action, outcome, message_id))

    def finish(state: str, reason: str | None) -> None:
        pos.state, pos.exit_reason, pos.finished_us = state, reason, now_us
        pos.step, pos.due_us, pos.waiting_for = None, None, None

    # The timer of a wait fired: leave the wait.
    if pos.waiting_for is not None and pos.step is not None:
        wait_step = j.step(pos.step)
        spec = wait_step.wait_spec
        if pos.waiting_for == TIMER or spec is None:
            target = j.following(wait_step)
            log(wait_step.id, "wait", "elapsed")
        else:
            target = spec.on_timeout or j.following(wait_step)
            log(wait_step.id, "wait", "timed_out")
        pos.waiting_for, pos.step = None, target
        if target is None:
            finish("completed", None)
            return out

    for _ in range(MAX_STEPS_PER_TICK):
        if pos.step is None:
            finish("completed", None)
            return out
        step = j.step(pos.step)
        pos.visits += 1
        target = _run(j, step, pos, now, ctx, out, log)
        if pos.state != "active":
            return out
        if pos.waiting_for is not None:  # the step is a wait: the timer (or an event) resumes it
            return out
        pos.step = target
    pos.due_us = now_us + 60_000_000  # a guard, not a path: validation refuses such loops
    return out


def _run(
    j: Journey,
    step: Step,
    pos: Position,
    now: datetime,
    ctx: Callable[[], Context],
    out: Advance,
    log: Callable[..., None],
) -> str | None:
    now_us = to_micros(now)
    for channel in ("email", "sms"):
        template = getattr(step, f"send_{channel}")
        if template is not None:
            key = dedupe_key(pos.instance_id, step.id, pos.visits)
            out.sends.append(Send(step.id, template, channel, key))
            log(step.id, "send", "planned", key)
            return j.following(step)
    if step.emit_event is not None:
        key = dedupe_key(pos.instance_id, step.id, pos.visits)
        out.effects.append(Effect(step.id, key, milestone=step.emit_event.milestone))
        log(step.id, "emit", step.emit_event.milestone)
        return j.following(step)
    if step.webhook is not None:
        key = dedupe_key(pos.instance_id, step.id, pos.visits)
        out.effects.append(Effect(step.id, key, webhook=step.webhook))
        log(step.id, "webhook", "queued")
        return j.following(step)
    for kind in ("task", "case"):
        spec = getattr(step, f"crm_{kind}")
        if spec is not None:
            key = dedupe_key(pos.instance_id, step.id, pos.visits)
            out.effects.append(Effect(step.id, key, case=spec, case_kind=kind))
            log(step.id, f"crm_{kind}", spec.priority)
            return j.following(step)
    if step.crm_update is not None:
        key = dedupe_key(pos.instance_id, step.id, pos.visits)
        out.effects.append(Effect(step.id, key, update=dict(step.crm_update.set)))
        log(step.id, "crm_update", ",".join(sorted(step.crm_update.set))[:40])
        return j.following(step)
    if step.exit is not None:
        log(step.id, "exit", step.exit)
        pos.state, pos.exit_reason, pos.finished_us = "exited", f"step:{step.exit}", now_us
        pos.step, pos.due_us, pos.waiting_for = None, None, None
        return None
    if step.branch is not None:
        c = ctx()
        taken = all_hold(step.branch.conditions(), c.patient, c.event_seen)
        log(step.id, "branch", "then" if taken else "else")
        return step.branch.then if taken else step.branch.else_
    if step.split is not None:
        point, edge = bucket(pos.instance_id, step.id), 0.0
        for name, arm in step.split.items():
            edge += arm.percent
            if point < edge:
                log(step.id, "split", name)
                return arm.next
        name, arm = list(step.split.items())[-1]
        log(step.id, "split", name)
        return arm.next
    spec = step.wait_spec
    assert spec is not None, f"validation admits no step without an action ({step.id})"
    if spec.for_ is not None:
        due = now + spec.for_
    elif spec.until_time is not None:
        c = ctx()
        due = next_local_time(
            now,
            spec.until_time,
            c.patient.value("timezone"),
            c.patient.value("state"),
            c.default_timezone,
        )
    elif spec.after_entry is not None:
        c = ctx()
        raw = (c.entry_data or {}).get(spec.after_entry.days_from)
        if not isinstance(raw, int | float) or isinstance(raw, bool) or c.entry_at is None:
            log(step.id, "wait", "no_anchor")  # nothing to count from: go straight on
            return j.following(step)
        due = max(now, c.entry_at + timedelta(days=float(raw)) + spec.after_entry.offset)
    else:
        assert spec.event is not None and spec.timeout is not None
        pos.waiting_for, pos.due_us = spec.event, to_micros(now + spec.timeout)
        log(step.id, "wait", f"for:{spec.event}")
        return step.id
    pos.waiting_for, pos.due_us = TIMER, to_micros(due)
    log(step.id, "wait", "until:" + from_micros(pos.due_us).isoformat(timespec="minutes"))
    return step.id
