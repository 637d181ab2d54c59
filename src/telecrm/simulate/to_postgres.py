"""`telecrm simulate --to-postgres URL`: the simulated platform's own database, platform-shaped.

The simulator's events are replayed, in time order, into the tables a telehealth platform keeps
(patients, providers, consultations, orders and order items, prescriptions and their items,
subscriptions, treatment plans, support tickets). Every row carries `created_at` and `updated_at`
taken from the simulated clock; a change moves `updated_at`, so a reader that follows
`updated_at` sees the platform change over simulated time.

`PlatformDatabase.advance(until)` applies the events up to an instant and stops; the next call
goes on from there. `simulation_state` remembers how far the world got, so a second
`telecrm simulate --to-postgres URL --until LATER` with the same seed applies only what is new.
Writes go in batches of `BATCH` events per transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import Simulation

BATCH = 2000  # events per transaction: large enough to amortise the commit, small enough to see

SCHEMA = """
CREATE TABLE IF NOT EXISTS simulation_state (
    id int PRIMARY KEY CHECK (id = 1),
    seed bigint NOT NULL, patients int NOT NULL, months int NOT NULL, start date NOT NULL,
    applied_until timestamptz NOT NULL, events_applied bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS providers (
    id text PRIMARY KEY, display_name text NOT NULL, median_response_minutes real,
    capacity real, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    id text PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
    email text NOT NULL, phone text, date_of_birth date, sex text, language text,
    address_line1 text, city text, state text, postal_code text, timezone text,
    acquisition_channel text, email_consent boolean, sms_consent boolean,
    marketing_consent boolean, provider_preference text,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, deleted_at timestamptz
);
CREATE TABLE IF NOT EXISTS consultations (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id),
    provider_id text REFERENCES providers(id), status text NOT NULL, condition_area text,
    assigned_at timestamptz, accepted_at timestamptz,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS prescriptions (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id),
    consultation_id text, provider_id text, status text NOT NULL, approved_at timestamptz,
    days_supply int NOT NULL, refills int NOT NULL, next_refill_due date,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS prescription_items (
    id text PRIMARY KEY, prescription_id text NOT NULL REFERENCES prescriptions(id),
    medication text NOT NULL, days_supply int NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id), tier text NOT NULL,
    billing_interval text NOT NULL, amount numeric(10, 2) NOT NULL, status text NOT NULL,
    started_at timestamptz NOT NULL, renews_at timestamptz, renewals int NOT NULL DEFAULT 0,
    cancelled_at timestamptz, ends_at timestamptz, cancel_reason text,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id),
    subscription_id text, status text NOT NULL, total numeric(10, 2) NOT NULL,
    currency text NOT NULL, recurring boolean NOT NULL, card_brand text, card_last4 text,
    paid_at timestamptz, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    id text PRIMARY KEY, order_id text NOT NULL REFERENCES orders(id), description text NOT NULL,
    quantity int NOT NULL, unit_price numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS treatment_plans (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id), status text NOT NULL,
    outcome text, progress text,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS support_tickets (
    id text PRIMARY KEY, patient_id text NOT NULL REFERENCES patients(id), category text NOT NULL,
    priority text NOT NULL, status text NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
"""

# Children before parents, for --reset.
TABLES = (
    "order_items",
    "orders",
    "prescription_items",
    "prescriptions",
    "treatment_plans",
    "support_tickets",
    "subscriptions",
    "consultations",
    "patients",
    "providers",
    "simulation_state",
)

Statement = tuple[str, tuple[Any, ...]]


class PlatformDatabaseError(RuntimeError):
    """The platform database cannot be written; the message says what to fix (no row values)."""


@dataclass
class AdvanceReport:
    events_applied: int = 0
    statements: int = 0
    applied_until: datetime | None = None


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def statements_for(event: dict[str, Any]) -> list[Statement]:
    """The SQL a platform would have run for what `event` records (none for what it keeps no
    table of: sessions, questionnaires, referrals, reviews)."""
    patient = (event.get("patient") or {}).get("id")
    if not patient:
        return []
    kind, at, d = event["type"], _at(event["occurred_at"]), event.get("data") or {}
    if kind == "patient.registered":
        address, prefs = d.get("address") or {}, d.get("communication_preferences") or {}
        return [
            (
                "INSERT INTO patients (id, first_name, last_name, email, phone, date_of_birth, sex,"
                " language, address_line1, city, state, postal_code, timezone,"
                " acquisition_channel, email_consent, sms_consent, marketing_consent,"
                " created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    patient,
                    d["first_name"],
                    d["last_name"],
                    d["email"],
                    d.get("phone"),
                    d.get("date_of_birth"),
                    d.get("sex"),
                    d.get("language"),
                    address.get("line1"),
                    address.get("city"),
                    address.get("state"),
                    address.get("postal_code"),
                    d.get("timezone"),
                    d.get("acquisition_channel"),
                    prefs.get("email_consent"),
                    prefs.get("sms_consent"),
                    prefs.get("marketing_consent"),
                    at,
                    at,
                ),
            )
        ]
    if kind == "patient.updated":
        changes = {
            k: d[k]
            for k in ("first_name", "last_name", "email", "phone", "provider_preference")
            if d.get(k) is not None
        }
        if (d.get("address") or {}).get("state"):
            changes["state"] = d["address"]["state"]
        if not changes:
            return []
        sets = ", ".join(f"{column} = %s" for column in changes)
        return [
            (
                f"UPDATE patients SET {sets}, updated_at = greatest(updated_at, %s) WHERE id = %s",  # noqa: S608 (column names from the tuple above)
                (*changes.values(), at, patient),
            )
        ]
    return _clinical(kind, patient, at, d) + _commerce(kind, patient, at, d)


def _clinical(kind: str, patient: str, at: datetime, d: dict[str, Any]) -> list[Statement]:
    if kind == "consultation.submitted":
        return [
            (
                "INSERT INTO consultations (id, patient_id, status, condition_area, created_at,"
                " updated_at) VALUES (%s, %s, 'pending', %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (d["consultation_id"], patient, d.get("condition_area"), at, at),
            )
        ]
    if kind == "consultation.assigned":
        return [
            (
                "UPDATE consultations SET status = 'assigned', provider_id = %s, assigned_at = %s,"
                " updated_at = greatest(updated_at, %s) WHERE id = %s",
                (d["provider_id"], at, at, d["consultation_id"]),
            )
        ]
    if kind == "consultation.accepted":
        return [
            (
                "UPDATE consultations SET status = 'accepted', provider_id = %s, accepted_at = %s,"
                " updated_at = greatest(updated_at, %s) WHERE id = %s",
                (d["provider_id"], at, at, d["consultation_id"]),
            )
        ]
    if kind == "prescription.approved":
        rx = d["prescription_id"]
        return [
            (
                "INSERT INTO prescriptions (id, patient_id, consultation_id, provider_id, status,"
                " approved_at, days_supply, refills, created_at, updated_at)"
                " SELECT %s, %s, %s, (SELECT provider_id FROM consultations WHERE id = %s),"
                " 'approved', %s, %s, %s, %s, %s ON CONFLICT (id) DO NOTHING",
                (
                    rx,
                    patient,
                    d.get("consultation_id"),
                    d.get("consultation_id"),
                    at,
                    d.get("days_supply", 30),
                    d.get("refills", 0),
                    at,
                    at,
                ),
            ),
            (
                "INSERT INTO prescription_items (id, prescription_id, medication, days_supply,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (f"{rx}-1", rx, d["medication"], d.get("days_supply", 30), at, at),
            ),
        ]
    if kind == "refill.due":
        return [
            (
                "UPDATE prescriptions SET next_refill_due = %s,"
                " updated_at = greatest(updated_at, %s) WHERE id = %s",
                (d["due_on"], at, d["prescription_id"]),
            )
        ]
    if kind == "treatment_plan.updated":
        return [
            (
                "INSERT INTO treatment_plans (id, patient_id, status, outcome, progress,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                " outcome = coalesce(excluded.outcome, treatment_plans.outcome),"
                " progress = coalesce(excluded.progress, treatment_plans.progress),"
                " updated_at = greatest(treatment_plans.updated_at, excluded.updated_at)",
                (
                    d["treatment_plan_id"],
                    patient,
                    d["status"],
                    d.get("outcome"),
                    d.get("progress"),
                    at,
                    at,
                ),
            )
        ]
    if kind == "support_ticket.created":
        return [
            (
                "INSERT INTO support_tickets (id, patient_id, category, priority, status,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, 'open', %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (d["ticket_id"], patient, d["category"], d.get("priority", "normal"), at, at),
            )
        ]
    return []


def _commerce(kind: str, patient: str, at: datetime, d: dict[str, Any]) -> list[Statement]:
    if kind == "order.paid":
        order, card = d["order_id"], d.get("payment_method") or {}
        return [
            (
                "INSERT INTO orders (id, patient_id, subscription_id, status, total, currency,"
                " recurring, card_brand, card_last4, paid_at, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'paid', %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    order,
                    patient,
                    d.get("subscription_id"),
                    d["amount"],
                    d.get("currency", "USD"),
                    bool(d.get("recurring")),
                    card.get("brand"),
                    card.get("last4"),
                    at,
                    at,
                    at,
                ),
            ),
            (
                "INSERT INTO order_items (id, order_id, description, quantity, unit_price,"
                " created_at, updated_at) VALUES (%s, %s, %s, 1, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    f"{order}-1",
                    order,
                    "refill" if d.get("recurring") else "first fill",
                    d["amount"],
                    at,
                    at,
                ),
            ),
        ]
    if kind == "subscription.started":
        return [
            (
                "INSERT INTO subscriptions (id, patient_id, tier, billing_interval, amount, status,"
                " started_at, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'active', %s,"
                " %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    d["subscription_id"],
                    patient,
                    d["tier"],
                    d.get("interval", "monthly"),
                    d["amount"],
                    at,
                    at,
                    at,
                ),
            )
        ]
    if kind == "subscription.renewal_approaching":
        return [
            (
                "UPDATE subscriptions SET renews_at = %s, updated_at = greatest(updated_at, %s)"
                " WHERE id = %s",
                (_at(d["renews_at"]), at, d["subscription_id"]),
            )
        ]
    if kind == "subscription.renewed":
        return [
            (
                "UPDATE subscriptions SET renewals = renewals + 1, status = 'active',"
                " updated_at = greatest(updated_at, %s) WHERE id = %s",
                (at, d["subscription_id"]),
            )
        ]
    if kind == "subscription.cancelled":
        return [
            (
                "UPDATE subscriptions SET status = 'cancelled', cancelled_at = %s, ends_at = %s,"
                " cancel_reason = %s, updated_at = greatest(updated_at, %s) WHERE id = %s",
                (at, _at(d["ends_at"]), d.get("reason"), at, d["subscription_id"]),
            )
        ]
    if kind == "payment.failed" and d.get("subscription_id"):
        return [
            (
                "UPDATE subscriptions SET status = 'past_due', updated_at = greatest(updated_at, %s)"
                " WHERE id = %s",
                (at, d["subscription_id"]),
            )
        ]
    return []


def _libpq(url: str) -> str:
    """psycopg takes `postgresql://`; accept SQLAlchemy's `postgresql+psycopg://` too."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class PlatformDatabase:
    """A simulated world written into a PostgreSQL database, advanced through simulated time."""

    def __init__(self, url: str, config: SimulationConfig, *, batch: int = BATCH) -> None:
        self._url, self.config, self._batch = _libpq(url), config, batch
        self._sim = Simulation(config)
        self._events: Iterator[dict[str, Any]] = iter(self._sim.events())
        self._next: dict[str, Any] | None = None
        self.applied_until: datetime | None = None
        self.events_applied = 0

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, connect_timeout=10)
        except psycopg.OperationalError:
            raise PlatformDatabaseError(
                "cannot connect to the platform database: check --to-postgres (host, port, "
                "database, user) and that the server is up"
            ) from None

    def create(self, *, reset: bool = False) -> None:
        """Create the tables (dropping them first with `reset`) and the provider panel; resume
        from `simulation_state` when it holds the same world."""
        start = self.config.start_at
        with self._connect() as conn:
            if reset:
                conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")
            conn.execute(SCHEMA)
            state = conn.execute(
                "SELECT seed, patients, months, start, applied_until, events_applied"
                " FROM simulation_state WHERE id = 1"
            ).fetchone()
            if state is not None:
                if tuple(state[:4]) != (
                    self.config.seed,
                    self.config.patients,
                    self.config.months,
                    self.config.start,
                ):
                    raise PlatformDatabaseError(
                        "the database holds another simulated world (seed, patients, months or "
                        "start differ): pass the same settings, or --reset to start over"
                    )
                self.applied_until, self.events_applied = state[4], int(state[5])
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO providers (id, display_name, median_response_minutes, capacity,"
                    " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO NOTHING",
                    [
                        (
                            p["provider_id"],
                            f"Provider {p['provider_id'].split('_')[-1]}",
                            p["median_response_minutes"],
                            p["capacity"],
                            start,
                            start,
                        )
                        for p in self._sim.providers
                    ],
                )
        if self.applied_until is not None:  # skip what an earlier run applied (same seed)
            for skipped, event in enumerate(self._pending()):
                if skipped >= self.events_applied:
                    self._next = event
                    break

    def _pending(self) -> Iterator[dict[str, Any]]:
        while True:
            if self._next is not None:
                event, self._next = self._next, None
                yield event
                continue
            upcoming: dict[str, Any] | None = next(self._events, None)
            if upcoming is None:
                return
            yield upcoming

    def advance(self, until: datetime | None = None, *, on_batch: Any = None) -> AdvanceReport:
        """Apply the events that happen up to `until` (default: the end of the period)."""
        limit = until or self.config.end
        report = AdvanceReport()
        buffer: list[dict[str, Any]] = []
        for event in self._pending():
            if _at(event["occurred_at"]) > limit:
                self._next = event
                break
            buffer.append(event)
            if len(buffer) >= self._batch:
                self._write(buffer, report, limit)
                buffer = []
                if on_batch is not None:
                    on_batch(report)
        self._write(buffer, report, limit)
        return report

    def _write(
        self, events: Iterable[dict[str, Any]], report: AdvanceReport, until: datetime
    ) -> None:
        statements = [s for e in events for s in statements_for(e)]
        count = sum(1 for _ in events) if not isinstance(events, list) else len(events)
        with self._connect() as conn, conn.cursor() as cur:
            run: list[tuple[Any, ...]] = []
            sql: str | None = None
            for text, params in statements:  # consecutive equal statements go as one executemany
                if text != sql and run:
                    cur.executemany(sql, run)  # type: ignore[arg-type]
                    run = []
                sql = text
                run.append(params)
            if run:
                cur.executemany(sql, run)  # type: ignore[arg-type]
            self.events_applied += count
            applied = min(until, self.config.end)
            cur.execute(
                "INSERT INTO simulation_state (id, seed, patients, months, start, applied_until,"
                " events_applied) VALUES (1, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
                " SET applied_until = excluded.applied_until,"
                " events_applied = excluded.events_applied",
                (
                    self.config.seed,
                    self.config.patients,
                    self.config.months,
                    self.config.start,
                    applied,
                    self.events_applied,
                ),
            )
        self.applied_until = applied
        report.events_applied += count
        report.statements += len(statements)
        report.applied_until = applied


def write_platform_database(
    config: SimulationConfig, url: str, until: str | None, *, reset: bool, show: bool
) -> None:
    """The `--to-postgres` command: create, advance to `until`, report (one red line on failure)."""
    import time

    import typer
    from rich.console import Console

    err = Console(stderr=True)
    limit: datetime | None = None
    if until is not None:
        try:
            limit = datetime.fromisoformat(until)
        except ValueError:
            err.print(
                "[bold red]error:[/] --until is not a date or time\n[dim]write it as "
                "YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)[/]"
            )
            raise typer.Exit(2) from None
        limit = limit.replace(tzinfo=UTC) if limit.tzinfo is None else limit.astimezone(UTC)
    began = time.perf_counter()
    db = PlatformDatabase(url, config)
    try:
        db.create(reset=reset)
        with err.status("writing the platform database", spinner="dots") as status:
            report = db.advance(
                limit,
                on_batch=lambda r: (
                    status.update(f"writing: {r.events_applied:,} events applied") if show else None
                ),
            )
    except (PlatformDatabaseError, psycopg.Error) as exc:
        problem = str(exc) if isinstance(exc, PlatformDatabaseError) else type(exc).__name__
        err.print(f"[bold red]error:[/] {problem}")
        raise typer.Exit(1) from None
    seconds = time.perf_counter() - began
    with db._connect() as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]  # noqa: S608 (our table names)
            for t in TABLES
            if t != "simulation_state"
        }
    err.print(
        f"applied {report.events_applied:,} events up to {db.applied_until:%Y-%m-%d %H:%M} UTC "
        f"in {seconds:.1f} s; " + ", ".join(f"{t} {n:,}" for t, n in counts.items()),
        highlight=False,
        soft_wrap=True,
    )
