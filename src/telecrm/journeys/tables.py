"""The journeys part's tables: activity waiting to be matched, registered definition versions,
one row per patient per journey entry (its state and timer), and the step history.

A step's effect (a message in the outbox) and its bookkeeping (the instance's next step and
timer, the history row) are written in one transaction, so a crash never sends twice.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from telecrm.store.metadata import SequenceKey, metadata

# What the projection folded that a journey listens to: events (by type) and stage entries,
# written in the projection's transaction so nothing is lost between the event and its journey.
journey_inbox = Table(
    "journey_inbox",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("patient_key", String(140), nullable=False),
    Column("kind", String(8), nullable=False),  # event | stage
    Column("name", String(60), nullable=False),  # the event type, or the stage entered
    Column("event_id", String(140)),
    Column("occurred_us", BigInteger, nullable=False),
    Column("enqueued_us", BigInteger, nullable=False),
)

# Every version of every journey that ever ran: a patient stays on the version they entered.
journey_definitions = Table(
    "journey_definitions",
    metadata,
    Column("journey", String(60), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the YAML as loaded
    Column("registered_us", BigInteger, nullable=False),
)

# One patient's pass through one journey. `instance_id` is a hash of (journey, patient, entry),
# so the same entry can only ever start one instance.
journey_instances = Table(
    "journey_instances",
    metadata,
    Column("instance_id", String(40), primary_key=True),
    Column("journey", String(60), nullable=False),
    Column("version", Integer, nullable=False),
    Column("patient_key", String(140), nullable=False),
    Column("entry_key", String(200), nullable=False),
    Column("entry_event_id", String(140)),
    Column("grp", String(8), nullable=False),  # journey | holdout
    Column("state", String(10), nullable=False),  # active | completed | exited
    Column("step", String(60)),  # the step to run when the timer fires
    Column("visits", Integer, nullable=False, server_default="0"),  # steps run so far
    Column("due_us", BigInteger),  # the timer; NULL while only an event can move it
    Column("waiting_for", String(60)),  # the event type a wait step listens for
    Column("entered_us", BigInteger, nullable=False),
    Column("finished_us", BigInteger),
    Column("exit_reason", String(60)),
    Column("converted_us", BigInteger),
    Column("lease_until_us", BigInteger, nullable=False, server_default="0"),
    Index("ix_journey_instances_due", "state", "due_us"),
    Index("ix_journey_instances_patient", "patient_key", "journey"),
    Index("ix_journey_instances_journey", "journey", "state"),
)

# What each step did: `journeys stats` counts messages per step from here.
journey_steps = Table(
    "journey_steps",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("instance_id", String(40), nullable=False),
    Column("journey", String(60), nullable=False),
    Column("step", String(60), nullable=False),
    Column("action", String(16), nullable=False),  # wait | branch | split | send | exit | ...
    Column("outcome", String(40), nullable=False),  # queued | suppressed:<reason> | then | ...
    Column("message_id", String(40)),
    Column("at_us", BigInteger, nullable=False),
    Index("ix_journey_steps_instance", "instance_id"),
    Index("ix_journey_steps_journey", "journey", "step"),
)

# When a scheduled journey last looked for patients to enter.
journey_schedule_runs = Table(
    "journey_schedule_runs",
    metadata,
    Column("journey", String(60), primary_key=True),
    Column("last_run_us", BigInteger, nullable=False),
)

# Webhook steps waiting to be delivered (an outbox: written with the step, sent after). The body
# is built at delivery from the profile, so no value waits here; `fields` holds names only.
journey_webhooks = Table(
    "journey_webhooks",
    metadata,
    Column("webhook_id", String(40), primary_key=True),  # also the Standard Webhooks id
    Column("instance_id", String(40), nullable=False),
    Column("journey", String(60), nullable=False),
    Column("step", String(60), nullable=False),
    Column("patient_key", String(140), nullable=False),
    Column("url", String(500), nullable=False),
    Column("secret_env", String(80), nullable=False),
    Column("fields", Text, nullable=False),  # JSON list of catalog field names
    Column("status", String(12), nullable=False),  # pending | delivered | failed | gave_up
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_us", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("delivered_us", BigInteger),
    Column("code", String(40)),  # the last HTTP status or error code, never a body
    Column("lease_until_us", BigInteger, nullable=False, server_default="0"),
    Index("ix_journey_webhooks_due", "status", "due_us"),
)
