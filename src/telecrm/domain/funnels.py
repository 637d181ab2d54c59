"""The 4 funnels of DESIGN.md §4.2, computed from how far up the ladder each patient got."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from telecrm.domain.lifecycle import RANK, Stage


@dataclass(frozen=True, slots=True)
class Funnel:
    name: str
    start: Stage
    end: Stage


FUNNELS: tuple[Funnel, ...] = (
    Funnel("consultation", Stage.VISITOR, Stage.PATIENT),
    Funnel("purchase", Stage.PATIENT, Stage.ACTIVE_CUSTOMER),
    Funnel("subscription", Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER),
    Funnel("advocacy", Stage.SUBSCRIBER, Stage.ADVOCATE),
)


@dataclass(frozen=True, slots=True)
class FunnelResult:
    funnel: Funnel
    entered: int
    converted: int

    @property
    def rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


def funnel_results(patients_by_max_rank: Mapping[int, int]) -> list[FunnelResult]:
    """`patients_by_max_rank[r]` = patients whose highest ladder rung ever reached is rank r.

    A patient who reached a rung counts as having entered every rung below it (a registration
    with no tracked session still started at the top of the consultation funnel).
    """

    def reached(stage: Stage) -> int:
        return sum(n for rank, n in patients_by_max_rank.items() if rank >= RANK[stage])

    return [FunnelResult(f, reached(f.start), reached(f.end)) for f in FUNNELS]
