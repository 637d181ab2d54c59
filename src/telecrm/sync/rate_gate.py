"""The call budget of one CRM account, kept in the database so every worker on every machine shares it.

A generic cell rate algorithm (GCRA): one row per account holds the theoretical arrival time of
the next call. With `requests` per `per_seconds` and `burst` calls allowed back to back, calls are
spaced `per_seconds / (requests - burst)` apart, so no rolling window of `per_seconds` ever holds
more than `requests` calls and a backfill runs at the pace the limit allows. A daily cap, a pause
after a refusal (`back_off`) and the CRM's own usage headers (`observe`) complete it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Engine, select, update

from telecrm.domain.clock import Clock, FrozenClock, to_micros
from telecrm.store.upsert import insert_ignoring_conflicts
from telecrm.sync.mapping import Limits
from telecrm.sync.tables import rate_budgets

DAY_US = 86_400_000_000
_SFORCE = re.compile(r"api-usage=(\d+)/(\d+)")
CRM_USAGE_RESERVE = 0.02  # stop when the CRM says less than 2 % of its allocation is left


def spacing_us(limits: Limits) -> int:
    spare = limits.requests - limits.burst if limits.requests > limits.burst else limits.requests
    return max(1, int(limits.per_seconds * 1_000_000 / spare))


class DbCallGate:
    """CallGate backed by `rate_budgets`; `sleep` is injected so tests move a clock instead."""

    def __init__(
        self,
        engine: Engine,
        account: str,
        limits: Limits,
        clock: Clock,
        sleep: Callable[[float], None],
    ) -> None:
        self._engine = engine
        self.account = account
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._interval = spacing_us(limits)
        self._tolerance = (limits.burst - 1) * self._interval
        self._seen_usage: tuple[int, int] | None = None
        self.waited_seconds = 0.0

    def wait_turn(self) -> None:
        while True:
            wait = self._try_take()
            if wait <= 0:
                return
            self.waited_seconds += wait
            self._sleep(wait)

    def _try_take(self) -> float:
        now_us = to_micros(self._clock.now())
        with self._engine.begin() as conn:
            insert_ignoring_conflicts(
                conn, rate_budgets, [{"account": self.account, "tat_us": now_us}], ["account"]
            )
            query = select(rate_budgets).where(rate_budgets.c.account == self.account)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one()
            changes: dict[str, object] = {}
            if self._seen_usage is not None:
                changes.update(crm_used=self._seen_usage[0], crm_max=self._seen_usage[1])
            if row.paused_until_us > now_us:
                wait = (row.paused_until_us - now_us) / 1e6
            else:
                day = now_us // DAY_US
                day_calls = row.day_calls if row.day == day else 0
                allowed_at = max(row.tat_us, now_us) - self._tolerance
                if self._limits.daily is not None and day_calls >= self._limits.daily:
                    wait = ((day + 1) * DAY_US - now_us) / 1e6
                elif allowed_at > now_us:
                    wait = (allowed_at - now_us) / 1e6
                else:
                    wait = 0.0
                    changes.update(
                        tat_us=max(row.tat_us, now_us) + self._interval,
                        day=day,
                        day_calls=day_calls + 1,
                        calls=row.calls + 1,
                    )
            if changes:
                conn.execute(
                    update(rate_budgets)
                    .where(rate_budgets.c.account == self.account)
                    .values(**changes)
                )
        return wait

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Read the CRM's own counters; pause every worker when the CRM says the budget is spent."""
        info = headers.get("sforce-limit-info")
        if info and (m := _SFORCE.search(info)):
            used, most = int(m.group(1)), int(m.group(2))
            self._seen_usage = (used, most)
            if most and used >= most * (1 - CRM_USAGE_RESERVE):
                # Salesforce counts a rolling 24 h: an hour's pause lets the oldest calls age out.
                self.back_off(3600.0 * self._limits.per_seconds / 86_400)
        remaining = headers.get("x-hubspot-ratelimit-remaining")
        if remaining is not None and remaining.isdigit() and int(remaining) == 0:
            # The window is full: our own pacing keeps it from overflowing, so the calls of some
            # other app of the account filled it. A tenth of the window lets theirs age out
            # without idling a whole window; a 429 still pauses for the whole window.
            self.back_off(self._limits.per_seconds / 10)
        # Pipedrive: the window's x-ratelimit-remaining / -reset (seconds left in the window), and
        # the api_token writes' x-daily-requests-left, counted per UTC day (crm-apis.md §3.3).
        left, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        if left == "0" and reset is not None and reset.replace(".", "", 1).isdigit():
            self.back_off(float(reset))
        if headers.get("x-daily-requests-left") == "0":
            now = self._clock.now().astimezone(UTC)
            midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
            self.back_off((midnight - now).total_seconds(), daily=True)

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        pause_account(self._engine, self.account, to_micros(self._clock.now()) + int(seconds * 1e6))


def pause_account(engine: Engine, account: str, until_us: int) -> None:
    """Every caller of this account waits until `until_us` (a refusal counted)."""
    with engine.begin() as conn:
        insert_ignoring_conflicts(
            conn, rate_budgets, [{"account": account, "tat_us": 0}], ["account"]
        )
        row = conn.execute(
            select(rate_budgets.c.paused_until_us, rate_budgets.c.refusals).where(
                rate_budgets.c.account == account
            )
        ).one()
        conn.execute(
            update(rate_budgets)
            .where(rate_budgets.c.account == account)
            .values(paused_until_us=max(row.paused_until_us, until_us), refusals=row.refusals + 1)
        )


def clock_sleep(clock: Clock) -> Callable[[float], None]:
    """The sleep that goes with a clock: a FrozenClock moves, a real clock really waits."""
    if isinstance(clock, FrozenClock):
        return lambda seconds: clock.advance(timedelta(seconds=seconds))
    import time

    return time.sleep
