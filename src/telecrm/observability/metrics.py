"""Prometheus metrics for the intake and the projection (labels are reason codes, never values)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class QueueCollector(Collector):
    """Queue depth and processing lag, read from the database at scrape time."""

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending_patients, lag = self._read()
        yield GaugeMetricFamily(
            "telecrm_queue_depth",
            "Patients with accepted events not yet folded into their profile",
            pending_patients,
        )
        yield GaugeMetricFamily(
            "telecrm_processing_lag_seconds",
            "How long the longest-waiting patient has waited to be folded (0 when the queue is empty)",
            lag,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_accepted = Counter(
            "telecrm_events_accepted", "Events stored", ["source"], registry=self.registry
        )
        self.events_duplicate = Counter(
            "telecrm_events_duplicate",
            "Events already stored (idempotent retries)",
            ["source"],
            registry=self.registry,
        )
        self.requests_rejected = Counter(
            "telecrm_events_rejected",
            "Intake requests refused, by reason code",
            ["reason"],
            registry=self.registry,
        )
        self.profiles_processed = Counter(
            "telecrm_profiles_processed", "Patients folded by the worker", registry=self.registry
        )
        self.stage_transitions = Counter(
            "telecrm_stage_transitions",
            "Lifecycle stage transitions",
            ["to_stage"],
            registry=self.registry,
        )
        self.sync_records = Counter(
            "telecrm_sync_records",
            "CRM records by what the sync worker did with them",
            ["destination", "outcome"],  # written | unchanged | rejected | deferred | archived
            registry=self.registry,
        )
        self.sync_calls = Counter(
            "telecrm_sync_api_calls",
            "HTTP requests made to a CRM's API by the sync worker",
            ["destination"],
            registry=self.registry,
        )
        self.messages = Counter(
            "telecrm_messages",
            "Patient messages by what the dispatcher did with them",
            ["outcome"],  # sent | rejected | opted_out | suppressed | retried | expired
            registry=self.registry,
        )
        self.provider_callbacks = Counter(
            "telecrm_provider_callbacks",
            "SendGrid and Twilio callbacks by provider and result",
            ["provider", "result"],  # applied | duplicate | unknown_message | rejected
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "telecrm_rate_limited",
            "Requests refused with 429 by the per-client rate limits, by class (never by client)",
            ["class"],  # intake | api | token
            registry=self.registry,
        )
        self.access_denied = Counter(
            "telecrm_access_denied",
            "Read API requests refused (401/403), by status and reason code",
            ["status", "reason"],  # e.g. 401 expired, 403 forbidden
            registry=self.registry,
        )
        self.break_glass = Counter(
            "telecrm_break_glass_reads",
            "Break-glass patient reads (each is audited and should be reviewed), by role",
            ["role"],
            registry=self.registry,
        )
        self.tokens_issued = Counter(
            "telecrm_oauth_tokens_issued",
            "Access tokens issued by POST /oauth/token, by role",
            ["role"],
            registry=self.registry,
        )
        self.intake_seconds = Histogram(
            "telecrm_intake_request_seconds",
            "Time to verify, validate and durably store one intake request",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )

    def watch_queue(self, read: Callable[[], tuple[int, float]]) -> None:
        self.registry.register(QueueCollector(read))
