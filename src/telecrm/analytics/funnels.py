"""The 4 funnels of DESIGN.md §4.2 over time: conversion within a window, median time to convert,
by acquisition channel and by monthly cohort, from the stored stage history.

The funnels and their counting rule are the domain's (`telecrm.domain.funnels`): a patient who
reached a rung has entered every rung below it, at the instant they first reached that rung or a
higher one. With no window this reproduces `profiles.views.stats` exactly; with a window a
patient counts as converted only if they reached the funnel's end within `window` of entering
it, and patients who entered less than `window` before `as_of` are left out (still pending:
they have not had the whole window yet, so counting them would understate conversion).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import numpy as np
import orjson
from sqlalchemy import Connection, select

from telecrm.domain.funnels import FUNNELS, Funnel, FunnelResult
from telecrm.domain.lifecycle import LADDER, RANK, Stage
from telecrm.profiles.tables import profiles, stage_transitions

NEVER = -1
US_PER_DAY = 86_400_000_000
UNKNOWN_CHANNEL = "unknown"
GroupBy = Literal["all", "channel", "cohort"]


@dataclass(frozen=True, slots=True)
class Ladder:
    """Per live patient: when they first reached each rung (µs since the epoch, -1 = never)."""

    keys: np.ndarray  # object array of patient keys
    reached_us: np.ndarray  # int64, shape (patients, len(LADDER))
    channel: np.ndarray  # object array: acquisition channel, "unknown" when none was recorded

    @property
    def patients(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class FunnelRow:
    """One funnel for one group. `result` is the domain's count; the rest is about time."""

    result: FunnelResult
    group: str
    median_days: float | None  # among converters; None when nobody converted
    pending: int  # entered less than the window before as_of: not counted either way

    @property
    def funnel(self) -> Funnel:
        return self.result.funnel


def ladder_from_transitions(
    transitions: Iterable[tuple[str, str, int]], channels: dict[str, str] | None = None
) -> Ladder:
    """From (patient key, to_stage, at µs) rows; stages off the ladder (at_risk...) are skipped."""
    index: dict[str, int] = {}
    rows: list[int] = []
    ranks: list[int] = []
    ats: list[int] = []
    for key, to_stage, at_us in transitions:
        rank = RANK.get(Stage(to_stage))
        if rank is None:
            continue
        rows.append(index.setdefault(key, len(index)))
        ranks.append(rank)
        ats.append(int(at_us))
    sentinel = np.iinfo(np.int64).max
    first = np.full((len(index), len(LADDER)), sentinel, dtype=np.int64)
    np.minimum.at(first, (np.asarray(rows, dtype=np.int64), np.asarray(ranks, dtype=np.int64)), ats)
    # Reaching rung r means having entered every rung below it: a reverse running minimum.
    reached = np.minimum.accumulate(first[:, ::-1], axis=1)[:, ::-1].copy()
    reached[reached == sentinel] = NEVER
    keys = np.asarray(list(index), dtype=object)
    known = channels or {}
    channel = np.asarray([known.get(k) or UNKNOWN_CHANNEL for k in keys], dtype=object)
    return Ladder(keys, reached, channel)


def load_ladder(conn: Connection) -> Ladder:
    """Every live (not merged, not erased) patient's ladder, in two queries.

    The acquisition channel is a clear catalog field (DESIGN.md §4.1 platform usage, internal),
    so no sealed value is read here.
    """
    live = profiles.c.merged_into.is_(None) & profiles.c.deleted.is_(False)
    channels: dict[str, str] = {}
    for key, attributes in conn.execute(
        select(profiles.c.patient_key, profiles.c.attributes).where(live)
    ):
        value = orjson.loads(attributes).get("values", {}).get("acquisition_channel")
        if isinstance(value, str) and value:
            channels[key] = value
    query = (
        select(
            stage_transitions.c.patient_key, stage_transitions.c.to_stage, stage_transitions.c.at_us
        )
        .join(profiles, profiles.c.patient_key == stage_transitions.c.patient_key)
        .where(live)
        .where(stage_transitions.c.to_stage.in_([s.value for s in LADDER]))
    )
    return ladder_from_transitions(((r[0], r[1], r[2]) for r in conn.execute(query)), channels)


def funnel_conversions(
    ladder: Ladder,
    *,
    as_of_us: int,
    window: timedelta | None = None,
    by: GroupBy = "all",
    funnels: tuple[Funnel, ...] = FUNNELS,
) -> list[FunnelRow]:
    """Conversion of each funnel, per group (acquisition channel or month entered), in funnel order.

    Entries after `as_of_us` are ignored, so the answer is the one that could be given then.
    """
    window_us = None if window is None else int(window.total_seconds() * 1_000_000)
    out: list[FunnelRow] = []
    for f in funnels:
        start = ladder.reached_us[:, RANK[f.start]]
        end = ladder.reached_us[:, RANK[f.end]]
        entered = (start != NEVER) & (start <= as_of_us)
        converted_at = np.where((end != NEVER) & (end <= as_of_us), end, NEVER)
        if window_us is None:
            pending = np.zeros_like(entered)
            converted = entered & (converted_at != NEVER)
        else:
            pending = entered & (start + window_us > as_of_us)
            entered = entered & ~pending
            converted = entered & (converted_at != NEVER) & (converted_at - start <= window_us)
        for group, members in _groups(ladder, start, by):
            e, c, p = entered & members, converted & members, pending & members
            if not (e.any() or p.any()):
                continue
            days = (converted_at[c] - start[c]) / US_PER_DAY
            out.append(
                FunnelRow(
                    FunnelResult(f, int(e.sum()), int(c.sum())),
                    group,
                    float(np.median(days)) if len(days) else None,
                    int(p.sum()),
                )
            )
    return out


def _groups(ladder: Ladder, start: np.ndarray, by: GroupBy) -> list[tuple[str, np.ndarray]]:
    if by == "all":
        return [("all", np.ones(ladder.patients, dtype=bool))]
    if by == "channel":
        names = sorted({str(v) for v in ladder.channel})
        return [(name, ladder.channel == name) for name in names]
    months = month_index(start)
    seen = np.unique(months[start != NEVER])
    return [(month_label(int(m)), (months == m) & (start != NEVER)) for m in seen]


def month_index(at_us: np.ndarray) -> np.ndarray:
    """Calendar months since 1970-01 (UTC) of µs timestamps, vectorised."""
    seconds = np.asarray(at_us, dtype=np.int64) // 1_000_000
    return seconds.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)


def month_label(index: int) -> str:
    return f"{1970 + index // 12:04d}-{index % 12 + 1:02d}"
