"""Live replay: post the simulated platform's events to an intake as signed webhooks, at a rate.

Behaves like a real Standard Webhooks sender: each message keeps its webhook-id across retries
(so a retry after a lost acknowledgement is idempotent) and is signed afresh with the current
timestamp on every attempt; 5xx, 429 and connection errors are retried with exponential backoff
(429's Retry-After is honoured); any other 4xx is a permanent failure, reported, and the sender
moves on. Time is injected (clock, sleep, wall) so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from telecrm.ingest.signatures import signed_headers
from telecrm.retry_policy import RETRYABLE_STATUS, backoff_seconds


@dataclass
class SendReport:
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (status or 0, problem title)
    gave_up: bool = False  # stopped early: the intake kept failing


def _batches(events: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class WebhookSender:
    def __init__(
        self,
        client: httpx.Client,
        path: str,
        secret: str,
        *,
        rate: float,
        batch: int = 100,
        max_attempts: int = 6,
        give_up_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0 or batch < 1:
            raise ValueError("rate must be positive and batch at least 1")
        self._client, self._path, self._secret = client, path, secret
        self._rate, self._batch, self._attempts = rate, batch, max_attempts
        self._give_up_after = give_up_after
        self._clock, self._sleep, self._wall = clock, sleep, wall

    def send(
        self, events: Iterable[dict[str, Any]], on_batch: Callable[[SendReport], None] | None = None
    ) -> SendReport:
        report = SendReport()
        due = self._clock()
        failing = 0
        for batch in _batches(events, self._batch):
            wait = due - self._clock()
            if wait > 0:
                self._sleep(wait)
            due = max(due, self._clock() - 1.0) + len(batch) / self._rate  # no catch-up bursts
            failures_before = len(report.failed)
            self._post(batch, report)
            report.events += len(batch)
            # Batches that fail one after another mean the intake is down, not that one batch
            # is bad: stop rather than spend minutes per batch on the rest of the stream.
            failing = failing + 1 if len(report.failed) > failures_before else 0
            if failing >= self._give_up_after:
                report.gave_up = True
                return report
            if on_batch is not None:
                on_batch(report)
        return report

    def _post(self, batch: list[dict[str, Any]], report: SendReport) -> None:
        body = orjson.dumps(batch[0] if len(batch) == 1 else {"events": batch})
        msg_id = f"msg_{batch[0]['id']}"[:256]
        for attempt in range(self._attempts):
            headers = signed_headers(self._secret, msg_id, int(self._wall()), body)
            headers["content-type"] = "application/json"
            try:
                response = self._client.post(self._path, content=body, headers=headers)
            except httpx.TransportError:
                status, retry_after = 0, None
            else:
                status = response.status_code
                if status < 300:
                    result = response.json()
                    report.accepted += int(result.get("accepted", 0))
                    report.duplicates += int(result.get("duplicates", 0))
                    return
                if status not in RETRYABLE_STATUS:
                    report.failed.append((status, _title(response)))
                    return
                retry_after = response.headers.get("retry-after")
            if attempt == self._attempts - 1:
                report.failed.append((status, "gave up after retries"))
                return
            report.retries += 1
            self._sleep(backoff_seconds(attempt, retry_after))


def _title(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.reason_phrase
    return str(problem.get("title") or problem.get("detail") or response.reason_phrase)[:200]
