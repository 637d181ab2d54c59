"""The built-in journeys end to end: events in, the projection's inbox, entries, timers fired on
an injected clock, messages planned through the messaging rules. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from telecrm.domain.clock import FrozenClock
from tests.journeys.helpers import DAYTIME, consenting, instances, journey_messages, steps_of, tick
from tests.messaging.harness import messaging_harness
from tests.support.builders import event


def test_lead_nurturing_sends_three_touches_over_a_week_then_completes(runtime, clock: FrozenClock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        pid = "lead_ok_1"  # outside the 10 % holdout (the bucket is a hash of the patient)
        h.feed(
            [
                consenting(pid, DAYTIME),
                event("questionnaire.started", pid, DAYTIME, {"questionnaire_id": "q1"}),
            ]
        )
        report = tick(h.runtime, clock)
        assert report.entered == 1
        (inst,) = instances(h.runtime, "lead_nurturing")
        assert (inst.grp, inst.state, inst.waiting_for) == ("journey", "active", "@timer")
        assert journey_messages(h.runtime, "lead_nurturing") == []
        tick(h.runtime, clock, hours=2)
        assert [m.template for m in journey_messages(h.runtime, "lead_nurturing")] == [
            "lead_nurture_1"
        ]
        for _ in range(12):  # a week, in half days
            tick(h.runtime, clock, hours=12)
        sent = [(m.template, m.channel) for m in journey_messages(h.runtime, "lead_nurturing")]
        assert sent == [
            ("lead_nurture_1", "email"),
            ("lead_nurture_2", "email"),
            ("questionnaire_reminder", "sms"),
            ("lead_nurture_3", "email"),
        ]
        (inst,) = instances(h.runtime, "lead_nurturing")
        assert inst.state == "completed"
        path = [s[0] for s in steps_of(h.runtime, inst.instance_id)]
        assert path[:3] == ["settle", "settle", "touch_1"]


def test_a_consultation_exits_the_nurture_and_counts_as_its_goal(runtime, clock: FrozenClock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        pid = "lead_ok_1"
        h.feed(
            [
                consenting(pid, DAYTIME),
                event("questionnaire.started", pid, DAYTIME, {"questionnaire_id": "q1"}),
            ]
        )
        tick(h.runtime, clock)
        tick(h.runtime, clock, hours=3)
        h.feed(
            [
                event(
                    "consultation.submitted",
                    pid,
                    clock.now(),
                    {"consultation_id": "c1"},
                )
            ]
        )
        tick(h.runtime, clock)
        (inst,) = instances(h.runtime, "lead_nurturing")
        assert inst.state == "exited" and inst.exit_reason == "event:consultation.submitted"
        assert inst.converted_us is not None
        for _ in range(10):
            tick(h.runtime, clock, days=1)
        assert [m.template for m in journey_messages(h.runtime, "lead_nurturing")] == [
            "lead_nurture_1"
        ]


def test_no_marketing_consent_means_no_entry(runtime, clock: FrozenClock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        pid = "lead_ok_1"
        h.feed(
            [
                consenting(pid, DAYTIME, marketing_consent=False),
                event("questionnaire.started", pid, DAYTIME, {"questionnaire_id": "q1"}),
            ]
        )
        report = tick(h.runtime, clock)
        assert report.filtered == 1 and instances(h.runtime, "lead_nurturing") == []


def test_history_older_than_the_entry_age_starts_nothing(runtime, clock: FrozenClock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        old = DAYTIME - timedelta(days=30)
        h.feed(
            [
                consenting("lead_ok_1", old),
                event("questionnaire.started", "lead_ok_1", old, {"questionnaire_id": "q1"}),
            ]
        )
        tick(h.runtime, clock)
        assert instances(h.runtime) == []
