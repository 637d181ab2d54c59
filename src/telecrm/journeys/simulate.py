"""`journeys simulate NAME --patient ID`: the path a patient would take, sending nothing.

It walks the same step code as the runner on a virtual clock, from now: no event arrives during
the simulation (waits for an event time out), branches read the patient's profile and consent as
they are now, random splits use the same stable bucket as the runner, and each send shows
whether the patient's consent for its purpose would let it go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telecrm.domain.clock import from_micros, to_micros
from telecrm.journeys.conditions import PatientView, all_hold
from telecrm.journeys.definition import Journey
from telecrm.journeys.runner import instance_id_for
from telecrm.journeys.steps import Context, Position, advance, bucket
from telecrm.messaging.templates import TemplateCatalog

MAX_TICKS = 200


@dataclass(frozen=True, slots=True)
class SimulatedStep:
    at: datetime
    step: str
    action: str
    outcome: str


@dataclass
class Simulation:
    enters: bool
    why_not: str | None
    group: str
    path: list[SimulatedStep]
    ends: str


def simulate(
    j: Journey,
    patient_key: str,
    view: PatientView,
    now: datetime,
    catalog: TemplateCatalog,
    default_timezone: str,
) -> Simulation:
    if view.profile is None:
        return Simulation(False, "no such patient (or erased)", "-", [], "-")
    group = "holdout" if bucket(patient_key, f"holdout:{j.name}") < j.holdout else "journey"
    if j.filters and not all_hold(j.filters, view):
        return Simulation(False, "the entry filters do not hold today", group, [], "-")
    if group == "holdout":
        return Simulation(True, None, group, [], "held out: takes no step (counted for lift)")
    now_us = to_micros(now)
    pos = Position(
        instance_id_for(j.name, patient_key, f"simulation:{now_us}"),
        j.name, patient_key, now_us, j.steps[0].id, 0, now_us, None,
    )  # fmt: skip
    path: list[SimulatedStep] = []
    t = now

    def ctx() -> Context:
        return Context(view, None, now, lambda _type: False, default_timezone)

    for _ in range(MAX_TICKS):
        result = advance(j, pos, t, ctx)
        sends = {s.dedupe_key: s for s in result.sends}
        for step, action, outcome, key in result.history:
            if key is not None:
                send = sends[key]
                purpose = catalog.get(send.template, send.channel).purpose
                verdict = "would be planned"
                if view.consent is not None and purpose != "security":
                    allowed, why = view.consent.allows(send.channel, purpose)
                    verdict = "would be planned" if allowed else f"would be suppressed ({why})"
                outcome = f"{send.channel} {send.template} ({purpose}): {verdict}"
            path.append(SimulatedStep(t, step, action, outcome))
        if pos.state != "active" or pos.due_us is None:
            break
        t = from_micros(pos.due_us)
    ends = pos.state if pos.exit_reason is None else f"{pos.state} ({pos.exit_reason})"
    return Simulation(True, None, group, path, ends)
