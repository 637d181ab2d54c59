"""Patients' dated events as columns (patient index, type code, time), the input every score reads.

Scores are sums over events, so a million patients' events go through numpy in a few passes
instead of a Python loop per patient. Only clear columns of the event log are needed (type and
time): behaviour scoring decrypts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from telecrm.domain.clock import to_micros
from telecrm.domain.events import EVENT_TYPES, MAX_FUTURE_SKEW

TYPE_CODES: dict[str, int] = {name: i for i, name in enumerate(sorted(EVENT_TYPES))}
DAY_US = 86_400_000_000
_SKEW_US = int(MAX_FUTURE_SKEW.total_seconds() * 1_000_000)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EventTable:
    """Events of `patients` patients: row i is patient `patient[i]`'s event of `type_code[i]`."""

    patients: int
    patient: IntArray
    type_code: IntArray
    occurred_us: IntArray

    @classmethod
    def from_rows(cls, patients: int, rows: Iterable[tuple[int, str, int]]) -> EventTable:
        """From (patient index, event type, occurred_us) rows; unknown types are dropped."""
        kept = [(p, TYPE_CODES[t], us) for p, t, us in rows if t in TYPE_CODES]
        if not kept:
            return cls.empty(patients)
        arr = np.array(kept, dtype=np.int64)
        return cls(patients, arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())

    @classmethod
    def for_one(cls, events: Sequence[tuple[str, datetime]]) -> EventTable:
        """One patient's (event type, occurred_at) pairs."""
        return cls.from_rows(1, ((0, t, to_micros(at)) for t, at in events))

    @classmethod
    def empty(cls, patients: int) -> EventTable:
        none = np.zeros(0, dtype=np.int64)
        return cls(patients, none, none.copy(), none.copy())

    def decayed_counts(
        self, event_type: str, now_us: int, half_life_days: float, *, max_per_day: int | None = None
    ) -> FloatArray:
        """Per patient: sum of 0.5 ** (age_days / half_life) over events of one type.

        Events later than `now` (beyond the 5 minutes of clock skew the intake allows) are not
        yet history and count for nothing; skewed ones count as happening now. With
        `max_per_day`, a day with more events counts as `max_per_day` of them.
        """
        code = TYPE_CODES.get(event_type)
        if code is None:
            raise KeyError(f"{event_type} is not an event type")
        mask = (self.type_code == code) & (self.occurred_us <= now_us + _SKEW_US)
        patient = self.patient[mask]
        age_us = np.maximum(now_us - self.occurred_us[mask], 0)
        weights = np.exp2(-(age_us / DAY_US) / half_life_days)
        if max_per_day is not None and patient.size:
            day = age_us // DAY_US
            key = patient * (int(day.max()) + 1) + day
            _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
            weights = weights * np.minimum(1.0, max_per_day / counts)[inverse.ravel()]
        return np.bincount(patient, weights=weights, minlength=self.patients).astype(np.float64)
