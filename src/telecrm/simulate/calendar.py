"""Simulated time: integer UTC seconds, local days per timezone, and when patients act.

Every instant inside the simulator is an int of seconds since the epoch (UTC); only the wire
format turns it into ISO-8601. Patients act in their own local time: 71% of activity falls
between 08:00 and 18:00 and weekend days carry `weekend_factor` of a weekday's activity
(analytics.md §6.2), and acquisition also follows a yearly cycle and a growth trend.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo

from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.geography import TIMEZONES

DAY = 86_400
HOUR = 3_600
MINUTE = 60
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_OFFSET_MARGIN_DAYS = 3  # offsets are kept a little past both ends; beyond that they are clamped

# How the activity outside 08:00-18:00 splits: evenings (18-23) take two thirds, the night one
# third (assumption; the source gives only the daytime share).
_EVENING_HOURS = range(18, 23)
_DAYTIME_HOURS = range(8, 18)


def weekday(day: int) -> int:
    """Monday = 0 for a day number (days since 1970-01-01)."""
    return (day + _EPOCH_WEEKDAY) % 7


class Calendar:
    """The period's clock: UTC offsets per timezone, day weights, and local-time sampling."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.start = int(config.start_at.timestamp())
        self.end = int(config.end.timestamp())  # exclusive
        self.first_day = self.start // DAY
        self.days = (self.end - self.start) // DAY
        self._offset_base = self.first_day - _OFFSET_MARGIN_DAYS
        self._offsets = [self._offsets_for(tz) for tz in TIMEZONES]
        self._hour_cdf = list(accumulate(_hour_weights(config.daytime_share)))
        self._weekend = config.weekend_factor
        self._iso_days: dict[int, str] = {}

    def _offsets_for(self, tz: str) -> list[int]:
        zone = ZoneInfo(tz)
        base = datetime.fromtimestamp(self._offset_base * DAY, UTC)
        out = []
        for i in range(self.days + 2 * _OFFSET_MARGIN_DAYS + 1):
            noon = base + timedelta(days=i, hours=12)
            offset = noon.astimezone(zone).utcoffset()
            out.append(int(offset.total_seconds()) if offset is not None else 0)
        return out

    # -- local days -------------------------------------------------------------------------
    def offset(self, tz: int, ts: int) -> int:
        table = self._offsets[tz]
        i = ts // DAY - self._offset_base
        return table[0 if i < 0 else (i if i < len(table) else -1)]

    @property
    def latest_offset(self) -> int:
        """The largest UTC offset of any zone: its local midnight comes first."""
        return max(max(table) for table in self._offsets)

    def local_day(self, tz: int, ts: int) -> int:
        return (ts + self.offset(tz, ts)) // DAY

    def local_to_utc(self, tz: int, day: int, second: int) -> int:
        ts = day * DAY + second
        return ts - self.offset(tz, ts)

    def local_hour(self, tz: int, ts: int) -> int:
        return (ts + self.offset(tz, ts)) % DAY // HOUR

    # -- when people act ----------------------------------------------------------------------
    def daytime_second(self, rng: random.Random) -> int:
        """A second of the local day, following the intraday activity profile."""
        hour = bisect(self._hour_cdf, rng.random() * self._hour_cdf[-1])
        return min(hour, 23) * HOUR + int(rng.random() * HOUR)

    def accept_day(self, rng: random.Random, day: int) -> bool:
        """Thin weekend days so that they carry `weekend_factor` of a weekday's activity."""
        return weekday(day) < 5 or rng.random() < self._weekend

    def later(
        self, rng: random.Random, tz: int, after: int, mean_days: float, max_days: int = 60
    ) -> int:
        """A patient's next action, some whole days after `after` (exponential), in local hours."""
        today = self.local_day(tz, after)
        for _ in range(20):  # rejection on weekend days; 20 misses in a row is ~never
            k = int(rng.expovariate(1.0 / mean_days)) if mean_days > 0 else 0
            if k <= max_days and self.accept_day(rng, today + k):
                break
        else:
            k = 1
        ts = self.local_to_utc(tz, today + k, self.daytime_second(rng))
        if ts <= after:  # same day, earlier hour: act a little later instead
            ts = after + rng.randint(5 * MINUTE, 3 * HOUR)
        return ts

    def at_local_day(self, rng: random.Random, tz: int, day: int) -> int:
        return self.local_to_utc(tz, day, self.daytime_second(rng))

    # -- acquisition ------------------------------------------------------------------------
    def acquisition_weights(self) -> list[float]:
        """Relative arrivals per local day of the period: weekday, season and trend."""
        c = self.config
        weights = []
        for i in range(self.days):
            day = self.first_day + i
            doy = datetime.fromtimestamp(day * DAY, UTC).timetuple().tm_yday
            season = 1.0 + c.yearly_amplitude * math.cos(
                2 * math.pi * (doy - c.yearly_peak_day) / 365.25
            )
            trend = (1.0 + c.annual_growth) ** (i / 365.25)
            week = 1.0 if weekday(day) < 5 else c.weekend_factor
            weights.append(week * season * trend)
        return weights

    # -- the wire -----------------------------------------------------------------------------
    def iso(self, ts: int) -> str:
        """ISO-8601 in UTC with an explicit offset, e.g. 2025-01-06T14:03:59+00:00."""
        day, second = divmod(ts, DAY)
        prefix = self._iso_days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * DAY, UTC).strftime("%Y-%m-%dT")
            self._iso_days[day] = prefix
        return prefix + _clock_times()[second]

    def local_date(self, tz: int, ts: int) -> date:
        """The patient's calendar date at `ts`."""
        return _EPOCH_DATE + timedelta(days=self.local_day(tz, ts))


@lru_cache(maxsize=1)
def _clock_times() -> tuple[str, ...]:
    """ "HH:MM:SS+00:00" for every second of a day (~6 MB once): the wire's hottest string."""
    return tuple(
        f"{s // HOUR:02d}:{s % HOUR // MINUTE:02d}:{s % MINUTE:02d}+00:00" for s in range(DAY)
    )


def _hour_weights(daytime_share: float) -> list[float]:
    rest = 1.0 - daytime_share
    weights = []
    for hour in range(24):
        if hour in _DAYTIME_HOURS:
            weights.append(daytime_share / len(_DAYTIME_HOURS))
        elif hour in _EVENING_HOURS:
            weights.append(rest * 2 / 3 / len(_EVENING_HOURS))
        else:
            weights.append(rest / 3 / (24 - len(_DAYTIME_HOURS) - len(_EVENING_HOURS)))
    return weights
