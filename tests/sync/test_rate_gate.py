"""The shared call budget: no window over the limit, the pace the limit allows, pauses for all."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.sync.mapping import Limits
from telecrm.sync.rate_gate import DbCallGate, clock_sleep
from telecrm.sync.tables import rate_budgets


def gate(
    engine: Engine, clock: FrozenClock, limits: Limits, account: str = "hubspot"
) -> DbCallGate:
    return DbCallGate(engine, account, limits, clock, clock_sleep(clock))


def test_no_rolling_window_ever_holds_more_calls_than_the_limit(
    engine: Engine, clock: FrozenClock
) -> None:
    limits = Limits(requests=100, per_seconds=10.0, burst=5)  # HubSpot's private-app default
    g = gate(engine, clock, limits)
    times = []
    for _ in range(400):
        g.wait_turn()
        times.append(to_micros(clock.now()))
    window = int(limits.per_seconds * 1e6)
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= limits.requests
    elapsed = (times[-1] - times[0]) / 1e6
    allowed = len(times) * limits.per_seconds / limits.requests
    assert elapsed <= 1.1 * allowed  # the pace the limit allows, not slower


def test_two_workers_share_one_budget(engine: Engine, clock: FrozenClock) -> None:
    limits = Limits(requests=10, per_seconds=1.0, burst=1)
    a, b = gate(engine, clock, limits), gate(engine, clock, limits)
    start = clock.now()
    for _ in range(10):
        a.wait_turn()
        b.wait_turn()
    # 20 calls at 10 per second: the second worker waited for the first one's calls too.
    assert clock.now() - start >= timedelta(seconds=1.8)


def test_back_off_pauses_every_worker_of_the_account(engine: Engine, clock: FrozenClock) -> None:
    limits = Limits(requests=100, per_seconds=10.0, burst=5)
    a, b = gate(engine, clock, limits), gate(engine, clock, limits)
    a.wait_turn()
    a.back_off(30.0)
    start = clock.now()
    b.wait_turn()
    assert clock.now() - start >= timedelta(seconds=30)
    with engine.connect() as conn:
        assert conn.execute(select(rate_budgets.c.refusals)).scalar_one() == 1


def test_the_daily_cap_waits_for_the_next_utc_day(engine: Engine, clock: FrozenClock) -> None:
    g = gate(engine, clock, Limits(requests=1000, per_seconds=1.0, daily=3, burst=10))
    for _ in range(3):
        g.wait_turn()
    day = clock.now().date()
    g.wait_turn()
    assert clock.now().date() == day + timedelta(days=1)
    assert clock.now().hour == 0


def test_salesforce_usage_header_near_the_allocation_pauses_the_account(
    engine: Engine, clock: FrozenClock
) -> None:
    g = gate(engine, clock, Limits(requests=100000, per_seconds=86400, burst=50000), "sf")
    g.wait_turn()
    g.observe(200, {"sforce-limit-info": "api-usage=99000/100000"})
    start = clock.now()
    g.wait_turn()
    assert clock.now() - start >= timedelta(minutes=59)
    with engine.connect() as conn:
        row = conn.execute(select(rate_budgets)).one()
    assert (row.crm_used, row.crm_max) == (99000, 100000)


def test_a_full_hubspot_window_reported_by_the_crm_pauses_a_tenth_of_the_window(
    engine: Engine, clock: FrozenClock
) -> None:
    g = gate(engine, clock, Limits(requests=100, per_seconds=10.0, burst=5))
    g.wait_turn()
    g.observe(200, {"x-hubspot-ratelimit-remaining": "0"})
    start = clock.now()
    g.wait_turn()
    assert timedelta(seconds=1) <= clock.now() - start < timedelta(seconds=2)


def test_pipedrive_window_headers_pause_until_the_reset(engine: Engine, clock: FrozenClock) -> None:
    g = gate(engine, clock, Limits(requests=100, per_seconds=2.0, burst=5))
    g.wait_turn()
    g.observe(200, {"x-ratelimit-remaining": "3", "x-ratelimit-reset": "2"})
    start = clock.now()
    g.wait_turn()
    assert clock.now() - start < timedelta(seconds=1)  # budget left: no pause
    g.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"})
    start = clock.now()
    g.wait_turn()
    assert timedelta(seconds=2) <= clock.now() - start < timedelta(seconds=3)


def test_pipedrive_daily_write_budget_spent_pauses_until_utc_midnight(
    engine: Engine, clock: FrozenClock
) -> None:
    g = gate(engine, clock, Limits(requests=100, per_seconds=2.0, burst=5))
    g.wait_turn()
    g.observe(201, {"x-daily-requests-left": "0"})
    g.wait_turn()
    now = clock.now()
    assert (now.hour, now.minute) == (0, 0) and now.second < 2
