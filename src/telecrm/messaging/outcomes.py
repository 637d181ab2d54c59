"""What a dispatch round did, written down: statuses, retries with backoff, opt-outs into the
consent ledger, and for every message that left, its disclosure and audit entry."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, and_, bindparam, update

from telecrm.domain.consent import ConsentEntry
from telecrm.messaging.planner import record_consent
from telecrm.messaging.tables import messages
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.sync.tables import disclosures

if TYPE_CHECKING:
    from telecrm.messaging.dispatcher import DispatchReport, Job

MAX_ATTEMPTS = 6
BASE_BACKOFF_S = 30.0


def record_outcomes(
    conn: Connection,
    jobs: Sequence[Job],
    outcomes: dict[str, tuple[str, dict[str, Any]]],
    report: DispatchReport,
    now_us: int,
    rng: random.Random,
) -> None:
    """Every claimed message's outcome, its disclosure and its audit entry, in one transaction."""
    disclosed: list[dict[str, Any]] = []
    read_fields: set[str] = set()
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        r = job.row
        status, info = outcomes[r.message_id]
        values: dict[str, Any] = {"lease_until_us": 0}
        if "fields" in info:  # it reached the provider, sent or refused there: a disclosure
            read_fields.update(info["fields"])
            refused = "" if status == "sent" else f", refused ({status})"
            disclosed.append(
                {
                    "at_us": now_us,
                    "destination": "sendgrid" if r.channel == "email" else "twilio",
                    "patient_key": r.patient_key,
                    "object": r.channel,
                    "record_key": r.message_id,
                    "fields": orjson.dumps(info["fields"]).decode(),
                    "phi": info["phi"],
                    "purpose": f"{r.purpose} message {r.template}{refused}"[:64],
                }
            )
        if status == "sent":
            report.sent += 1
            values.update(
                status="sent",
                sent_us=now_us,
                provider_id=info["provider_id"],
                segments=info["segments"],
                code=None,
            )
        elif status == "queued" and info.get("limited"):
            report.retried += 1
            values.update(
                due_us=now_us + int(info["retry_in"] * 1e6),
                attempts=r.attempts,
                code=info.get("code"),
            )
        elif status == "queued":
            if r.attempts + 1 >= MAX_ATTEMPTS and info.get("code") != "not_configured":
                report.gave_up += 1
                values.update(status="gave_up", reason="gave_up", code=info.get("code"))
            else:
                report.retried += 1
                backoff = BASE_BACKOFF_S * 2 ** min(r.attempts, 6)
                wait = max(info.get("retry_in") or 0.0, backoff * (0.5 + rng.random()))
                values.update(due_us=now_us + int(wait * 1e6), code=info.get("code"))
        elif status == "opted_out":
            report.opted_out += 1
            values.update(status="opted_out", reason="opted_out", code=info.get("code"))
            record_consent(
                conn,
                r.patient_key,
                [
                    ConsentEntry("sms", p, False, "twilio_21610", f"{r.message_id}:21610", now_us)
                    for p in ("transactional", "marketing")
                ],
            )
        elif status == "rejected":
            report.rejected += 1
            report.reasons[str(info.get("reason"))] += 1
            values.update(
                status="rejected",
                reason=str(info.get("reason"))[:40],
                code=str(info.get("code"))[:40],
            )
        elif status == "expired":
            report.expired += 1
            values.update(status="expired", reason=info["reason"])
        else:  # suppressed at send time
            report.suppressed += 1
            report.reasons[info["reason"]] += 1
            trail = orjson.loads(r.trail)
            trail.append(
                {
                    "rule": "send_time_check",
                    "verdict": "suppress",
                    "detail": info.get("why") or info["reason"],
                }
            )
            values.update(
                status="suppressed", reason=info["reason"], trail=orjson.dumps(trail).decode()
            )
        values["mid"] = r.message_id
        by_columns.setdefault(tuple(sorted(values)), []).append(values)
    for columns, rows in by_columns.items():
        # One statement per shape of outcome, executed for many rows (a round is thousands).
        stmt = (
            update(messages)
            .where(and_(messages.c.message_id == bindparam("mid"), messages.c.status == "queued"))
            .values({c: bindparam(c) for c in columns if c != "mid"})
        )
        conn.execute(stmt, rows)
    if disclosed:
        conn.execute(disclosures.insert(), disclosed)
        append_audit(
            conn,
            [
                AuditEntry(
                    actor="messaging",
                    action="disclose",
                    record_type="message",
                    record_ids=[d["record_key"] for d in disclosed],
                    fields=sorted(read_fields),
                    purpose="patient messages to SendGrid / Twilio",
                )
            ],
            at_us=now_us,
        )
