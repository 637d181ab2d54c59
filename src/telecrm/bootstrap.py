"""Wires telecrm together: settings → engine, keys, bus subscriptions, intake, worker, sweep.

The only place that knows which part hears which domain event. Tests build a Runtime on their
own engine and clock and wire only what they need.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, func, select

from telecrm.domain.clock import Clock, SystemClock, to_micros
from telecrm.domain.messages import StageChanged
from telecrm.ingest.intake import EventIntake, prune_webhook_receipts
from telecrm.ingest.signatures import Verifier
from telecrm.ingest.tables import pending_patients
from telecrm.messagebus import MessageBus
from telecrm.observability.metrics import Metrics
from telecrm.profiles.sweep import LifecycleSweep
from telecrm.profiles.worker import ProfileWorker
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.security.errors import MasterKeyMissing
from telecrm.security.keyring import Keyring, parse_master_key
from telecrm.settings import Settings
from telecrm.store.engine import make_engine, read_only
from telecrm.store.migrate import upgrade_to_head
from telecrm.sync.mapping import Mapping, load_mapping
from telecrm.sync.planner import mark_dirty

if TYPE_CHECKING:
    from telecrm.domain.messages import PatientActivity, TriggerFired
    from telecrm.journeys.wiring import Journeys
    from telecrm.messaging.wiring import Messaging
    from telecrm.sync.worker import SyncWorker


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = engine or make_engine(settings.resolved_database_url)
        self.bus = MessageBus()
        self.metrics = Metrics()
        self.work_available = threading.Event()
        self._keyring: Keyring | None = None
        self._keyring_lock = threading.Lock()
        self._mappings: list[Mapping] | None = None
        self._messaging: Messaging | None = None
        self._messaging_lock = threading.Lock()
        self._journeys: Journeys | None = None
        self._journeys_lock = threading.Lock()

    # -- keys -------------------------------------------------------------------------------
    def master_keys(self) -> tuple[bytes, list[bytes]]:
        if self.settings.master_key is None:
            raise MasterKeyMissing()
        current = parse_master_key(self.settings.master_key.get_secret_value())
        previous = [
            parse_master_key(k.get_secret_value()) for k in self.settings.previous_master_keys
        ]
        return current, previous

    @property
    def keyring(self) -> Keyring:
        with self._keyring_lock:
            if self._keyring is None:
                current, previous = self.master_keys()
                with self.engine.begin() as conn:
                    self._keyring = Keyring.open(
                        conn, current, previous, now_us=to_micros(self.clock.now())
                    )
            return self._keyring

    def cipher(self) -> FieldCipher:
        return self.keyring.cipher()

    def blind_index(self) -> BlindIndex:
        return self.keyring.blind_index()

    # -- sync ---------------------------------------------------------------------------------
    def mappings(self) -> list[Mapping]:
        """The destinations kept in sync (TELECRM_DESTINATIONS), loaded and validated once."""
        if self._mappings is None:
            self._mappings = [load_mapping(name) for name in self.settings.destinations]
        return self._mappings

    def use_mappings(self, mappings: list[Mapping]) -> None:
        self._mappings = list(mappings)

    def sync_workers(self) -> list[SyncWorker]:
        """One outbox worker per configured destination, with credentials from the environment."""
        from telecrm.sync.destinations import sync_worker
        from telecrm.sync.rate_gate import clock_sleep

        return [
            sync_worker(m, self.engine, self.cipher, self.clock, clock_sleep(self.clock))
            for m in self.mappings()
        ]

    def profiles_written(self, conn: Connection, patient_keys: list[str], now_us: int) -> None:
        """Marks changed patients for every destination, in the caller's transaction."""
        names = [m.destination for m in self.mappings()]
        if names:
            mark_dirty(conn, names, patient_keys, now_us)

    # -- messaging ----------------------------------------------------------------------------
    def messaging(self) -> Messaging:
        """Templates, rules, providers (from TELECRM_SENDGRID_* / TELECRM_TWILIO_*), tracking."""
        with self._messaging_lock:
            if self._messaging is None:
                from telecrm.messaging.wiring import build_messaging

                self._messaging = build_messaging(self)
            return self._messaging

    def use_messaging(self, messaging: Messaging) -> None:
        self._messaging = messaging

    def _enqueue_triggers(self, conn: Connection, fired: list[TriggerFired], now_us: int) -> None:
        if self.settings.messaging:
            from telecrm.messaging.wiring import enqueue_triggers

            enqueue_triggers(conn, fired, now_us)

    # -- journeys -----------------------------------------------------------------------------
    def journeys(self) -> Journeys:
        """The journey files (validated) and their runner; raises on a bad journey file."""
        with self._journeys_lock:
            if self._journeys is None:
                from telecrm.journeys.wiring import build_journeys

                self._journeys = build_journeys(self)
            return self._journeys

    def use_journeys(self, journeys: Journeys) -> None:
        self._journeys = journeys

    def _record_activity(
        self, conn: Connection, activity: list[PatientActivity], now_us: int
    ) -> None:
        if not (self.settings.journeys and self.settings.messaging):
            return
        from telecrm.journeys.inbox import inbox_writer

        registry = self.journeys().registry
        write = inbox_writer(
            registry.listened_events,
            registry.listens_to_stages,
            int(self.settings.message_max_age_hours * 3_600_000_000),
        )
        write(conn, activity, now_us)

    # -- parts ------------------------------------------------------------------------------
    def verifier(self) -> Verifier:
        return Verifier.from_secrets(
            [s.get_secret_value() for s in self.settings.webhook_secrets],
            self.settings.webhook_tolerance_seconds,
        )

    def intake(self) -> EventIntake:
        return EventIntake(self.engine, self.cipher, self.clock, on_accepted=self._events_accepted)

    def worker(self) -> ProfileWorker:
        return ProfileWorker(
            self.engine,
            self.cipher,
            self.blind_index,
            self.clock,
            self.settings.thresholds,
            publish=self.bus.publish,
            on_written=self.profiles_written,
            on_triggers=self._enqueue_triggers,
            on_activity=self._record_activity if self._journeys_on() else None,
        )

    def sweep(self) -> LifecycleSweep:
        return LifecycleSweep(
            self.engine,
            self.clock,
            self.settings.thresholds,
            publish=self.bus.publish,
            on_written=self.profiles_written,
            on_activity=self._record_activity if self._journeys_on() else None,
        )

    def _journeys_on(self) -> bool:
        return self.settings.journeys and self.settings.messaging

    def queue_stats(self) -> tuple[int, float]:
        """(patients waiting to be folded, seconds the longest of them has waited).

        Read from the small queue table, not the event log, so a scrape costs nothing at scale.
        """
        with read_only(self.engine).connect() as conn:
            patients, oldest = conn.execute(
                select(func.count(), func.min(pending_patients.c.enqueued_us))
            ).one()
        lag = 0.0 if oldest is None else max(0.0, (to_micros(self.clock.now()) - oldest) / 1e6)
        return int(patients), lag

    def prune_webhook_receipts(self) -> int:
        horizon = self.settings.webhook_receipt_days * 86_400_000_000
        return prune_webhook_receipts(
            self.engine, older_than_us=to_micros(self.clock.now()) - horizon
        )

    def _events_accepted(self, count: int) -> None:
        self.work_available.set()


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    migrate: bool = True,
) -> Runtime:
    runtime = Runtime(settings or Settings(), clock=clock, engine=engine)
    if migrate:
        upgrade_to_head(runtime.engine)
    runtime.bus.subscribe(
        StageChanged,
        lambda m: runtime.metrics.stage_transitions.labels(to_stage=m.to_stage.value).inc(),
    )
    runtime.metrics.watch_queue(runtime.queue_stats)
    return runtime


class EmbeddedWorker(threading.Thread):
    """The projection worker inside `telecrm serve`: wakes on new events, sweeps every minute."""

    def __init__(self, runtime: Runtime, *, sweep_every_seconds: float = 60.0) -> None:
        super().__init__(name="telecrm-worker", daemon=True)
        self._runtime = runtime
        self._stop_requested = threading.Event()
        self._sweep_every = sweep_every_seconds

    def stop(self) -> None:
        self._stop_requested.set()
        self._runtime.work_available.set()

    def run(self) -> None:
        import structlog

        log = structlog.get_logger("telecrm.worker")
        worker, sweep = self._runtime.worker(), self._runtime.sweep()
        try:  # one thread per destination: a slow or failing CRM never stalls ingest or the others
            syncs = [
                SyncThread(w, self._stop_requested, self._runtime.metrics)
                for w in self._runtime.sync_workers()
            ]
        except Exception as exc:  # a destination without credentials must not stop ingest
            log.error("sync.not_started", problem=str(exc))
            syncs = []
        for thread in syncs:
            thread.start()
        messaging = None
        if self._runtime.settings.messaging:
            try:
                messaging = MessagingThread(self._runtime, self._stop_requested)
                messaging.start()
            except Exception as exc:  # bad templates or config: ingest goes on, the error says why
                log.error("messaging.not_started", problem=str(exc))
        since_sweep = self._sweep_every
        while not self._stop_requested.is_set():
            # Cleared before draining, so events accepted during a drain wake the next round.
            self._runtime.work_available.clear()
            try:
                report = worker.drain()
                if report.patients:
                    self._runtime.metrics.profiles_processed.inc(report.patients)
                if since_sweep >= self._sweep_every:
                    sweep.run()
                    self._runtime.prune_webhook_receipts()
                    since_sweep = 0.0
            except Exception:
                log.exception("worker.batch_failed")
            woke = self._runtime.work_available.wait(timeout=1.0)
            since_sweep += 0.0 if woke else 1.0
        for thread in syncs:  # each finishes the round it is in: its commit is not cut short
            thread.join(timeout=60)
        if messaging is not None:
            messaging.join(timeout=60)


class SyncThread(threading.Thread):
    """The outbox worker of one destination inside `telecrm serve`: drains, then polls every second."""

    def __init__(self, worker: SyncWorker, stop: threading.Event, metrics: Metrics) -> None:
        super().__init__(name=f"telecrm-sync-{worker.destination}", daemon=True)
        self._worker = worker
        self._stop_requested = stop
        self._metrics = metrics

    def run(self) -> None:
        import structlog

        log = structlog.get_logger("telecrm.sync")
        while not self._stop_requested.is_set():
            try:
                report = self._worker.drain()
                dest = self._worker.destination
                for outcome in ("written", "unchanged", "rejected", "deferred", "archived"):
                    count = getattr(report, outcome)
                    if count:
                        self._metrics.sync_records.labels(dest, outcome).inc(count)
                if report.calls:
                    self._metrics.sync_calls.labels(dest).inc(report.calls)
            except Exception as exc:
                log.error(
                    "sync.round_failed", destination=self._worker.destination, problem=str(exc)
                )
            self._stop_requested.wait(timeout=1.0)


class MessagingThread(threading.Thread):
    """Plans waiting triggers and sends due messages inside `telecrm serve`, every second."""

    def __init__(self, runtime: Runtime, stop: threading.Event) -> None:
        super().__init__(name="telecrm-messaging", daemon=True)
        self._runtime = runtime
        self._parts = runtime.messaging()  # raises here, in the caller, on a bad configuration
        self._journeys = runtime.journeys() if runtime.settings.journeys else None
        self._stop_requested = stop

    def run(self) -> None:
        import structlog

        log = structlog.get_logger("telecrm.messaging")
        metrics = self._runtime.metrics
        while not self._stop_requested.is_set():
            try:
                self._parts.planner.drain()
                if self._journeys is not None:
                    self._journeys.runner.drain()
                    self._journeys.webhooks.drain()
                report = self._parts.dispatcher.drain()
                for outcome in (
                    "sent",
                    "rejected",
                    "opted_out",
                    "suppressed",
                    "retried",
                    "expired",
                ):
                    count = getattr(report, outcome)
                    if count:
                        metrics.messages.labels(outcome).inc(count)
            except Exception as exc:
                log.error("messaging.round_failed", problem=str(exc))
            self._stop_requested.wait(timeout=1.0)
