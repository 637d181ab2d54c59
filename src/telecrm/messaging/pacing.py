"""The request budget of one messaging provider account, shared through the database.

Twilio's Messages API takes one message per request and refuses a client that goes too fast
(HTTP 429, code 20429: research/messaging.md §5). Every dispatcher, in every process, reserves its
round's requests from the same `rate_budgets` row (one transaction per round, not per message)
and then starts them `interval` apart: together they stay under `rate_per_s`. A 429 that still
happens (another app on the account, a lower limit than configured) pauses the whole account.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select, update

from telecrm.domain.clock import Clock, FrozenClock, to_micros
from telecrm.store.upsert import insert_ignoring_conflicts
from telecrm.sync.rate_gate import pause_account
from telecrm.sync.tables import rate_budgets


class ProviderBudget:
    def __init__(
        self,
        engine: Engine,
        account: str,
        rate_per_s: float,
        clock: Clock,
        sleep: Callable[[float], None],
    ) -> None:
        self._engine = engine
        self.account = account
        self.interval_us = max(1, int(1_000_000 / rate_per_s))
        self._clock = clock
        self.sleep = sleep
        # A test's clock moves when "slept" on, at once: calls then go one after another, each at
        # its slot, instead of racing the clock from several threads.
        self.simulated = isinstance(clock, FrozenClock)

    def reserve(self, requests: int) -> int:
        """Book `requests` slots; the instant (µs) the first may start, the rest `interval_us` apart."""
        now_us = to_micros(self._clock.now())
        with self._engine.begin() as conn:
            insert_ignoring_conflicts(
                conn, rate_budgets, [{"account": self.account, "tat_us": now_us}], ["account"]
            )
            query = select(rate_budgets).where(rate_budgets.c.account == self.account)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one()
            start = max(row.tat_us, now_us, row.paused_until_us)
            conn.execute(
                update(rate_budgets)
                .where(rate_budgets.c.account == self.account)
                .values(tat_us=start + requests * self.interval_us, calls=row.calls + requests)
            )
        return int(start)

    def wait_until(self, at_us: int) -> None:
        wait = (at_us - to_micros(self._clock.now())) / 1e6
        # Under a millisecond is not worth a sleep (the OS would oversleep it): the next slots
        # stay where they are, so the pace over a round is unchanged.
        if wait > (0.001 if not self.simulated else 0):
            self.sleep(wait)

    def back_off(self, seconds: float) -> None:
        """The provider refused for its limit: every dispatcher of this account waits."""
        pause_account(self._engine, self.account, to_micros(self._clock.now()) + int(seconds * 1e6))
