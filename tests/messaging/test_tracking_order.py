"""Callbacks arrive in any order, in any batching, and again: a message's status only moves
forward, ends at the furthest state its reports reached, and a replay changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from telecrm.messaging.provider_events import DeliveryReport
from telecrm.messaging.tables import messages
from telecrm.messaging.tracking import RANK
from tests.messaging.harness import messaging_harness
from tests.support.builders import registration

DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
EMAIL_KINDS = ("processed", "delivered", "opened", "clicked", "deferred")
STATUS_OF = {"delivered": "delivered", "opened": "opened", "clicked": "clicked"}

kinds = st.lists(st.sampled_from(EMAIL_KINDS), min_size=1, max_size=8)
cuts = st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8)


def test_status_is_the_furthest_state_whatever_the_order_and_batching(runtime, clock) -> None:
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.feed([registration("p1", DAYTIME)])
        h.run()
        with h.runtime.engine.connect() as conn:
            message_id = conn.execute(
                select(messages.c.message_id).where(messages.c.channel == "email")
            ).scalar_one()
        tracker = h.parts.tracker

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(order=kinds, sizes=cuts)
        def check(order: list[str], sizes: list[int]) -> None:
            with h.runtime.engine.begin() as conn:
                conn.execute(
                    update(messages)
                    .where(messages.c.message_id == message_id)
                    .values(status="sent", delivered_us=None, opened_us=None, clicked_us=None)
                )
            reports = [
                DeliveryReport(
                    provider="sendgrid",
                    receipt_id=uuid.uuid4().hex,
                    kind=kind,  # type: ignore[arg-type]
                    at=DAYTIME + timedelta(seconds=i),
                    message_id=message_id,
                    address="p1@example.com",
                )
                for i, kind in enumerate(order)
            ]
            start = 0
            for size in sizes * 8:
                if start >= len(reports):
                    break
                tracker.apply_reports(reports[start : start + size])
                start += size
            replay = tracker.apply_reports(reports)
            assert replay.duplicates == len(reports) and replay.applied == 0
            reached = [STATUS_OF[k] for k in order if k in STATUS_OF]
            expected = max(reached, key=RANK.__getitem__) if reached else "sent"
            with h.runtime.engine.connect() as conn:
                row = conn.execute(
                    select(messages).where(messages.c.message_id == message_id)
                ).one()
            assert row.status == expected
            assert (row.delivered_us is not None) == ("delivered" in order)
            assert (row.opened_us is not None) == ("opened" in order)

        check()
