"""What a journey did: entries by group, where instances are, conversions against the holdout,
exit reasons, and messages per step with what became of them."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from telecrm.journeys.tables import journey_instances, journey_steps
from telecrm.messaging.tables import messages


@dataclass
class GroupStats:
    entered: int = 0
    active: int = 0
    completed: int = 0
    exited: int = 0
    converted: int = 0

    @property
    def rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


@dataclass
class JourneyStats:
    journey: str
    groups: dict[str, GroupStats] = field(default_factory=dict)
    exits: Counter[str] = field(default_factory=Counter)
    steps: dict[str, Counter[str]] = field(default_factory=dict)  # step -> message status -> n

    @property
    def lift(self) -> float | None:
        """Relative lift of the journey group's conversion over the holdout's."""
        j, h = self.groups.get("journey"), self.groups.get("holdout")
        if not j or not h or j.rate is None or not h.rate:
            return None
        return (j.rate - h.rate) / h.rate

    @property
    def p_value(self) -> float | None:
        """Two-sided two-proportion z-test of journey vs holdout conversion (pooled variance)."""
        j, h = self.groups.get("journey"), self.groups.get("holdout")
        if not j or not h or not j.entered or not h.entered:
            return None
        pooled = (j.converted + h.converted) / (j.entered + h.entered)
        se = math.sqrt(pooled * (1 - pooled) * (1 / j.entered + 1 / h.entered))
        if se == 0:
            return None
        z = ((j.rate or 0) - (h.rate or 0)) / se
        return math.erfc(abs(z) / math.sqrt(2))

    def as_json(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "groups": {
                g: {**s.__dict__, "conversion": s.rate} for g, s in sorted(self.groups.items())
            },
            "lift": self.lift,
            "p_value": self.p_value,
            "exits": dict(self.exits),
            "messages_per_step": {k: dict(v) for k, v in self.steps.items()},
        }


def journey_stats(conn: Connection, journey: str) -> JourneyStats:
    out = JourneyStats(journey)
    i = journey_instances.c
    for grp, state, converted, n in conn.execute(
        select(i.grp, i.state, i.converted_us.is_not(None), func.count())
        .where(i.journey == journey)
        .group_by(i.grp, i.state, i.converted_us.is_not(None))
    ):
        g = out.groups.setdefault(grp, GroupStats())
        g.entered += n
        if state in ("active", "completed", "exited"):
            setattr(g, state, getattr(g, state) + n)
        if converted:
            g.converted += n
    for reason, n in conn.execute(
        select(i.exit_reason, func.count())
        .where(i.journey == journey, i.state == "exited")
        .group_by(i.exit_reason)
    ):
        out.exits[reason or "?"] += n
    s = journey_steps.c
    for step, status, n in conn.execute(
        select(s.step, messages.c.status, func.count())
        .select_from(journey_steps.join(messages, messages.c.message_id == s.message_id))
        .where(s.journey == journey)
        .group_by(s.step, messages.c.status)
    ):
        out.steps.setdefault(step, Counter())[status] += n
    return out


def all_journey_names(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(journey_instances.c.journey).distinct()).scalars())
