"""The messaging part's tables: triggers waiting to be planned, messages (the outbox), the consent
ledger, address suppressions, provider receipts (replay guard) and survey answers.

No table holds a rendered body, an address or a secret: bodies are rendered at send time from
the encrypted profile, addresses appear only as blind indexes, and security codes never touch
the database.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, false

from telecrm.store.metadata import SequenceKey, metadata

# The projection's triggers (DESIGN.md §4.3), written in the same transaction as the profile
# change, so a trigger is never lost between the event and its message.
message_triggers = Table(
    "message_triggers",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("patient_key", String(140), nullable=False),
    Column("trigger", String(60), nullable=False),
    Column("event_id", String(140), nullable=False),
    Column("occurred_us", BigInteger, nullable=False),
    Column("enqueued_us", BigInteger, nullable=False),
    Column("lease_until_us", BigInteger, nullable=False, server_default="0"),
)

# The outbox of patient messages. `dedupe_key` makes planning exactly-once: the same event,
# template and channel can only ever become one message.
messages = Table(
    "messages",
    metadata,
    Column("message_id", String(40), primary_key=True),
    Column("patient_key", String(140), nullable=False),
    Column("channel", String(8), nullable=False),  # email | sms
    Column("template", String(60), nullable=False),
    Column("purpose", String(16), nullable=False),  # transactional | marketing | security
    Column("language", String(8), nullable=False),
    Column("source", String(80), nullable=False),  # the trigger, "api", or "journey:<name>"
    Column("event_id", String(140)),
    Column("dedupe_key", String(240), nullable=False, unique=True),
    # queued | sending | sent | delivered | opened | clicked | replied | bounced | dropped |
    # failed | undelivered | rejected | opted_out | suppressed | expired | gave_up
    Column("status", String(16), nullable=False),
    Column("reason", String(40)),  # why suppressed / deferred / rejected (a code, never a value)
    Column("trail", Text, nullable=False),  # JSON: every rule's verdict, for `messages why`
    Column("context_sealed", Text),  # event variables, encrypted (they may hold PHI for BAA SMS)
    Column("created_us", BigInteger, nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("deferred", Boolean, nullable=False, server_default=false()),
    Column("local_day", String(10)),  # the patient's calendar day it counts against (caps)
    Column("sent_us", BigInteger),
    Column("delivered_us", BigInteger),
    Column("opened_us", BigInteger),
    Column("clicked_us", BigInteger),
    Column("replied_us", BigInteger),
    Column("provider_id", String(80)),
    Column("segments", Integer),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("code", String(40)),  # the provider's error code
    Column("lease_until_us", BigInteger, nullable=False, server_default="0"),
    Index("ix_messages_due", "status", "due_us"),
    Index("ix_messages_patient", "patient_key", "channel", "due_us"),
    Index("ix_messages_provider_id", "provider_id"),
)

# Consent evidence: every grant and revocation, with its source and time. The latest entry per
# (patient, channel, purpose) is the patient's consent; nothing is ever updated or deleted.
consent_ledger = Table(
    "consent_ledger",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("patient_key", String(140), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("purpose", String(16), nullable=False),  # transactional | marketing
    Column("granted", Boolean, nullable=False),
    # profile | sms_keyword | sms_revocation | sendgrid_unsubscribe | sendgrid_group |
    # twilio_21610 | cli | api
    Column("source", String(32), nullable=False),
    Column("evidence", String(160), nullable=False),  # a receipt id or keyword class: no values
    Column("at_us", BigInteger, nullable=False),
    Index("ix_consent_ledger_patient", "patient_key", "channel", "purpose", "at_us"),
)

# Addresses that must not be mailed or texted again (hard bounce, spam report, invalid), by
# blind index: suppression works without keeping the address.
message_suppressions = Table(
    "message_suppressions",
    metadata,
    Column("channel", String(8), primary_key=True),
    Column("address_bidx", String(64), primary_key=True),
    Column("reason", String(32), nullable=False),  # hard_bounce | spam_report | invalid
    Column("source", String(80), nullable=False),
    Column("at_us", BigInteger, nullable=False),
)

# Provider callbacks already applied: a replayed sg_event_id or MessageSid:status changes nothing.
provider_receipts = Table(
    "provider_receipts",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("receipt_id", String(120), primary_key=True),
    Column("at_us", BigInteger, nullable=False),
)

# Answers to satisfaction_survey (0-10). The provider id is PHI (a care relationship): sealed.
nps_responses = Table(
    "nps_responses",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("patient_key", String(140), nullable=False),
    Column("message_id", String(40), nullable=False),
    Column("score", Integer, nullable=False),
    Column("provider_sealed", Text),
    Column("at_us", BigInteger, nullable=False),
    Index("ix_nps_responses_patient", "patient_key", "at_us"),
)
