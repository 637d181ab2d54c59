"""Crashes and edits: a runner killed between a step's effect and its bookkeeping sends nothing
twice; a journey edited while patients are inside keeps them on the version they entered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import FrozenClock
from tests.journeys.helpers import DAYTIME, consenting, instances, journey_messages, tick
from tests.support.builders import MASTER_KEY, event

HERE = Path(__file__).parent


def _questionnaire(pid: str, at):  # type: ignore[no-untyped-def]
    return event("questionnaire.started", pid, at, {"questionnaire_id": f"q_{pid}"})


def _feed(runtime: Runtime, events: list[dict]) -> None:
    from telecrm.domain.events import parse_event

    now = runtime.clock.now()
    runtime.intake().accept([parse_event(e, now=now) for e in events], source="webhook", actor="t")
    runtime.worker().drain()


def test_a_runner_killed_after_planning_a_message_sends_it_once(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    pid = "lead_ok_1"
    _feed(runtime, [consenting(pid, DAYTIME), _questionnaire(pid, DAYTIME)])
    tick(runtime, clock)
    clock.advance(timedelta(hours=2))  # the first touch is due now
    env = {
        **os.environ,
        "TELECRM_DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
        "TELECRM_EMBEDDED_WORKER": "false",
    }
    child = subprocess.run(
        [sys.executable, str(HERE / "killed_runner.py"), clock.now().isoformat()],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    # The kill rolled the whole step back: no message, the instance still waits at `settle`.
    assert journey_messages(runtime, "lead_nurturing") == []
    (inst,) = instances(runtime, "lead_nurturing")
    assert (inst.step, inst.waiting_for) == ("settle", "@timer")
    tick(runtime, clock)
    tick(runtime, clock)
    assert [m.template for m in journey_messages(runtime, "lead_nurturing")] == ["lead_nurture_1"]
    (inst,) = instances(runtime, "lead_nurturing")
    assert inst.step == "pause_1"


JOURNEY = """version: 1
name: probe_offer
entry: {{event: questionnaire.started}}
re_entry: always
steps:
  - {{id: pause, wait: 1d}}
  - {{id: offer, send_email: {template}}}
"""


def test_editing_a_journey_keeps_patients_inside_on_their_version(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "probe_offer.yaml").write_text(JOURNEY.format(template="win_back"))
    rt1 = bootstrap(
        runtime.settings.model_copy(update={"journeys_dir": folder}),
        clock=clock,
        engine=runtime.engine,
        migrate=False,
    )
    _feed(rt1, [consenting("early", DAYTIME), _questionnaire("early", DAYTIME)])
    tick(rt1, clock)
    # Edited: the offer changes. A new process loads the new text as version 2.
    (folder / "probe_offer.yaml").write_text(JOURNEY.format(template="upsell_offer"))
    clock.advance(timedelta(hours=1))
    rt2 = bootstrap(rt1.settings, clock=clock, engine=runtime.engine, migrate=False)
    _feed(rt2, [consenting("late", clock.now()), _questionnaire("late", clock.now())])
    tick(rt2, clock)
    versions = {i.patient_key: i.version for i in instances(rt2, "probe_offer")}
    assert versions == {"early": 1, "late": 2}
    tick(rt2, clock, days=1, hours=1)
    sent = {(m.patient_key, m.template) for m in journey_messages(rt2, "probe_offer")}
    assert sent == {("early", "win_back"), ("late", "upsell_offer")}


SCHEDULED = """version: 1
name: probe_weekly
entry: {schedule: {every: 7d}}
filters: [{stage: [lead]}]
re_entry: always
steps:
  - {id: note, exit: seen}
"""


def test_a_scheduled_journey_enters_each_matching_patient_once_per_period(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "probe_weekly.yaml").write_text(SCHEDULED)
    rt = bootstrap(
        runtime.settings.model_copy(update={"journeys_dir": folder}),
        clock=clock,
        engine=runtime.engine,
        migrate=False,
    )
    _feed(rt, [consenting(f"lead_{i}", DAYTIME) for i in range(3)])
    first = tick(rt, clock)
    assert first.entered == 3  # every registered patient is a lead; none was entered before
    assert tick(rt, clock, hours=1).entered == 0  # the same period: nobody twice
    assert tick(rt, clock, days=7).entered == 3  # the next period, once more each
    runs = {(i.patient_key, i.entry_key) for i in instances(rt, "probe_weekly")}
    assert len(runs) == 6 and all(key.startswith("schedule:") for _, key in runs)
