"""The demo's journeys part: the eight built-ins replayed over simulated months.

The main demo database holds history, and history is not news (it starts no journey). So this
part replays a smaller simulated platform into a database of its own on an injected clock that
steps six hours at a time: each step feeds the events of those hours, folds them, sweeps the
lifecycle (at-risk and churned patients appear as time passes), and runs the journey runner. The
messages are planned through the real messaging rules (consent, quiet hours, caps) and not sent.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from telecrm.bootstrap import bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.domain.events import parse_event
from telecrm.journeys.stats import all_journey_names, journey_stats
from telecrm.messaging.tables import messages
from telecrm.settings import Settings
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import generate

STEP = timedelta(hours=6)


def demo_journeys(
    home: Path, master_key: str, console: Console, *, patients: int, months: int, seed: int
) -> dict[str, int]:
    db = home / "demo" / "journeys.db"
    db.unlink(missing_ok=True)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=30 * months)).date()
    config = SimulationConfig(patients=patients, months=months, seed=seed, start=start)
    clock = FrozenClock(datetime(start.year, start.month, start.day, tzinfo=UTC))
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{db.as_posix()}",
        master_key=master_key,
        log_level="WARNING",
        embedded_worker=False,
    )
    rt = bootstrap(settings, clock=clock)
    runner = rt.journeys().runner
    intake, worker, sweep = rt.intake(), rt.worker(), rt.sweep()
    console.print(
        f"replaying {patients:,} simulated patients over {months} months on a simulated clock "
        f"(6-hour steps): events in, lifecycle swept, the {len(rt.journeys().registry.loaded)} "
        "built-in journeys run; messages planned through the rules, not sent"
    )
    started = time.perf_counter()
    events = generate(config)
    pending = next(events, None)
    ticks = int((end - clock.now()) / STEP) + 1
    totals = {"entered": 0, "steps": 0, "sends": 0}
    with Progress(
        TextColumn("[bold]journeys"), BarColumn(), MofNCompleteColumn(), TextColumn("6-hour steps"),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("replay", total=ticks)
        for _ in range(ticks):
            clock.advance(STEP)
            now = clock.now()
            batch = []
            while pending is not None and datetime.fromisoformat(pending["occurred_at"]) <= now:
                batch.append(parse_event(pending, now=now))
                pending = next(events, None)
            if batch:
                intake.accept(batch, source="webhook", actor="demo")
            worker.drain()
            sweep.run()
            report = runner.drain()
            totals["entered"] += report.entered
            totals["steps"] += report.steps
            totals["sends"] += report.sends
            bar.advance(task)
    elapsed = time.perf_counter() - started
    with rt.engine.connect() as conn:
        stats = [journey_stats(conn, n) for n in all_journey_names(conn)]
        by_status: dict[str, int] = dict(
            conn.execute(
                select(messages.c.status, func.count())
                .where(messages.c.source.like("journey:%"))
                .group_by(messages.c.status)
            ).all()
        )
    table = Table(
        "journey", "entered", "held out", "active", "completed", "exited", "messages",
        "conversion", "holdout conv.", "lift",
        title=f"journeys over {months} simulated months ({elapsed:.0f} s)",
    )  # fmt: skip
    for s in stats:
        j = s.groups.get("journey")
        h = s.groups.get("holdout")
        if j is None:
            continue
        sent = sum(sum(c.values()) for c in s.steps.values())
        table.add_row(
            s.journey,
            f"{j.entered + (h.entered if h else 0):,}",
            f"{h.entered:,}" if h else "-",
            f"{j.active:,}",
            f"{j.completed:,}",
            f"{j.exited:,}",
            f"{sent:,}",
            "-" if j.rate is None else f"{j.rate:.1%}",
            "-" if h is None or h.rate is None else f"{h.rate:.1%}",
            "-" if s.lift is None else f"{s.lift:+.0%}",
        )
    console.print(table)
    console.print(
        "journey messages by status: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(by_status.items(), key=lambda kv: -kv[1])),
        highlight=False,
    )
    console.print(
        "The simulator's patients do not react to messages, so lift here measures noise: it is "
        "shown to prove the holdout is counted, not that the journeys work.",
        style="dim",
    )
    totals["messages"] = sum(by_status.values())
    return totals
