"""Group commit: concurrent intake requests share one transaction, written by one thread.

SQLite has one writer at a time; sixteen request threads each committing alone would queue on its
lock (and its busy handler sleeps). Here every request hands its validated batch to one writer
thread, which takes whatever is waiting (up to MAX_GROUP_EVENTS), stores it with
`EventIntake.store_group` in one transaction and answers each request when that commits. Each
request still gets its own outcome: a refused submission leaves no trace and does not affect
the others in its group.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import structlog

from telecrm.ingest.errors import IntakeRejected
from telecrm.ingest.intake import EventIntake, IntakeResult, Submission

MAX_GROUP_EVENTS = 5000  # bounds one transaction's size (and so the latency of its first request)

log = structlog.get_logger(__name__)

_Pending = tuple[Submission, "Future[IntakeResult]"]


class WriterStopped(RuntimeError):
    """The writer is shutting down and takes no more work."""


class GroupCommitWriter:
    def __init__(self, intake: EventIntake, *, max_group_events: int = MAX_GROUP_EVENTS) -> None:
        self._intake = intake
        self._max = max_group_events
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="telecrm-intake-writer", daemon=True)
        self._stopping = False
        self.groups = 0
        self.items = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, item: Submission) -> Future[IntakeResult]:
        if self._stopping:
            raise WriterStopped("the intake writer is shutting down")
        future: Future[IntakeResult] = Future()
        self._queue.put((item, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first[0].batch)
            stop_after = False
            while size < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop_after = True
                    break
                group.append(nxt)
                size += len(nxt[0].batch)
            self._write(group)
            if stop_after:
                return

    def _write(self, group: list[_Pending]) -> None:
        try:
            self._intake.store_group([item for item, _ in group])
        except Exception as exc:
            if len(group) > 1:
                # Find the one that fails; the others must not pay for it.
                for pending in group:
                    self._write([pending])
                return
            log.exception("intake.write_failed", error_type=type(exc).__name__)
            group[0][1].set_exception(exc)
            return
        self.groups += 1
        self.items += len(group)
        for item, future in group:
            outcome = item.outcome
            if isinstance(outcome, IntakeRejected):
                future.set_exception(outcome)
            elif outcome is not None:
                future.set_result(outcome)
            else:  # pragma: no cover - store_group sets every outcome
                future.set_exception(RuntimeError("submission without an outcome"))
