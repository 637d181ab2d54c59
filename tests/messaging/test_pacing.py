"""Twilio's request limit: the dispatcher paces its calls from the account's shared budget, so a
round of SMS never draws a 429 under the configured rate, and a 429 that still comes (a storm)
costs the messages no attempt and pauses the whole account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from telecrm.messaging.tables import messages
from telecrm.sandbox.faults import Faults
from telecrm.sync.tables import rate_budgets
from tests.messaging.harness import messaging_harness
from tests.support.builders import registration

DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def _patients(n: int) -> list[dict]:
    return [
        registration(
            f"p{i}",
            DAYTIME,
            data={
                "email": f"p{i}@example.com",
                "phone": f"+1415555{i:04d}",
                "communication_preferences": {"sms_consent": True},
            },
        )
        for i in range(n)
    ]


def test_a_round_of_sms_stays_under_the_providers_limit(runtime, clock) -> None:
    clock.set(DAYTIME)
    with messaging_harness(
        runtime, clock, settings={"twilio_rate": 8.0}, twilio={"requests_per_second": 10}
    ) as h:
        h.feed(_patients(30))
        h.plan()
        started = h.clock.now()
        report = h.send()
        assert report.sent == 60
        assert h.twilio.stats.rate_limited == 0
        # 30 calls 125 ms apart: the round cannot take less than 29 intervals.
        assert h.clock.now() - started >= timedelta(seconds=29 / 8)


def test_a_429_storm_retries_after_the_pause_without_spending_attempts(runtime, clock) -> None:
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.feed(_patients(3))
        h.plan()
        h.twilio.faults.set(Faults(storm_requests=100))
        first = h.send()
        assert first.sent == 3  # the emails
        with h.runtime.engine.connect() as conn:
            sms = conn.execute(select(messages).where(messages.c.channel == "sms")).all()
            budget = conn.execute(
                select(rate_budgets).where(rate_budgets.c.account.like("twilio:%"))
            ).one()
        assert {(r.status, r.attempts, r.code) for r in sms} == {("queued", 0, "20429")}
        assert budget.paused_until_us > 0 and budget.refusals >= 1
        h.twilio.faults.set(Faults())
        h.later(seconds=2)
        assert h.send().sent == 3
