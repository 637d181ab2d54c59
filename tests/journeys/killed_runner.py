"""Run by test_journey_faults: one due pass of the journey runner that dies by SIGKILL right after
the messaging planner wrote the step's message, before the transaction commits."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime

from telecrm.bootstrap import bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.messaging.planner import MessagePlanner

original = MessagePlanner.plan


def plan_then_die(self, conn, requests, *args, **kwargs):  # type: ignore[no-untyped-def]
    report = original(self, conn, requests, *args, **kwargs)
    assert report.planned, "the step's message should have been written before the kill"
    os.kill(os.getpid(), signal.SIGKILL)
    return report


MessagePlanner.plan = plan_then_die  # type: ignore[method-assign]
runtime = bootstrap(clock=FrozenClock(datetime.fromisoformat(sys.argv[1])), migrate=False)
runtime.journeys().runner.fire_due()
sys.exit(3)  # not reached: the kill comes first
