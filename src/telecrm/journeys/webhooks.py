"""Delivers journey webhook steps: signed Standard Webhooks POSTs, retried, accounted for.

The step wrote a row to `journey_webhooks` in its own transaction; this sender claims due rows,
builds each body from the patient's profile at that moment (only the fields the step names; a
PHI field only if the step said `baa: true`, which validation already required), signs it with
the secret in the named environment variable, and POSTs it. The row's id is the `webhook-id`,
so a receiver that deduplicates on it sees each step once even when a delivery is retried.

2xx: delivered (and a PHI field is recorded as a disclosure, and audited). 408, 429, 5xx or a
network error: retried with exponential backoff, up to MAX_ATTEMPTS, then `gave_up`. Any other
4xx: `failed` at once (the receiver refused the message; retrying sends the same refusal). The
row keeps the HTTP status or error code, never a body.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, bindparam, select, update

from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.fields import FIELDS
from telecrm.ingest.signatures import signed_headers
from telecrm.journeys.tables import journey_webhooks
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.security.secret_files import SecretFileError, resolve_secret
from telecrm.sync.tables import disclosures

MAX_ATTEMPTS = 8
BASE_BACKOFF_S = 30.0
LEASE_S = 120
RETRYABLE = frozenset({408, 429})


@dataclass
class WebhookReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    gave_up: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.failed + self.gave_up


class JourneyWebhookSender:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        clock: Clock,
        client: httpx.Client | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock
        self._client = client or httpx.Client(timeout=10.0)
        self._environ = environ if environ is not None else os.environ

    def run_once(self, limit: int = 100) -> WebhookReport:
        cipher = self._cipher()
        report = WebhookReport()
        now_us = to_micros(self._clock.now())
        with self._engine.begin() as conn:  # claim: a lease, so two senders never double up
            query = (
                select(journey_webhooks)
                .where(
                    journey_webhooks.c.status == "pending",
                    journey_webhooks.c.due_us <= now_us,
                    journey_webhooks.c.lease_until_us <= now_us,
                )
                .order_by(journey_webhooks.c.due_us)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(query))
            if not rows:
                return report
            conn.execute(
                update(journey_webhooks)
                .where(journey_webhooks.c.webhook_id.in_([r.webhook_id for r in rows]))
                .values(lease_until_us=now_us + LEASE_S * 1_000_000)
            )
            keys = sorted({r.patient_key for r in rows})
            values = {
                row.patient_key: decode(row, cipher).profile
                for row in conn.execute(select(profiles).where(profiles.c.patient_key.in_(keys)))
            }
        changes: list[dict[str, Any]] = []
        disclosed: list[dict[str, Any]] = []
        for r in rows:
            fields = orjson.loads(r.fields)
            profile = values.get(r.patient_key)
            data: dict[str, Any] = {}
            if profile is not None and not profile.deleted:
                for name in fields:
                    if name == "stage":
                        data[name] = profile.stage.value if profile.stage else None
                    elif name in profile.values:
                        data[name] = profile.values[name]
            body = orjson.dumps(
                {
                    "type": "journey.webhook",
                    "journey": r.journey,
                    "step": r.step,
                    "patient": {"id": r.patient_key},
                    "data": data,
                }
            )
            outcome = self._post(r, body)
            status, code = outcome
            attempts = r.attempts + 1
            change = {
                "b_id": r.webhook_id,
                "b_status": status,
                "b_attempts": attempts,
                "b_code": code,
                "b_due": r.due_us,
                "b_delivered": None,
            }
            if status == "delivered":
                report.delivered += 1
                change["b_delivered"] = now_us
                phi = sorted(n for n in data if n in FIELDS and FIELDS[n].is_phi)
                disclosed.append(
                    {
                        "at_us": now_us,
                        "destination": "webhook:" + httpx.URL(r.url).host[:30],
                        "patient_key": r.patient_key,
                        "object": "journey_webhook",
                        "record_key": r.webhook_id,
                        "fields": orjson.dumps(sorted(data)).decode(),
                        "phi": bool(phi),
                        "purpose": f"journey {r.journey}"[:64],
                    }
                )
            elif status == "retry" and attempts < MAX_ATTEMPTS:
                report.retried += 1
                change["b_status"] = "pending"
                change["b_due"] = now_us + int(BASE_BACKOFF_S * 2 ** (attempts - 1) * 1_000_000)
            elif status == "retry":
                report.gave_up += 1
                change["b_status"] = "gave_up"
            else:
                report.failed += 1
            changes.append(change)
        with self._engine.begin() as conn:
            conn.execute(
                update(journey_webhooks)
                .where(journey_webhooks.c.webhook_id == bindparam("b_id"))
                .values(
                    status=bindparam("b_status"),
                    attempts=bindparam("b_attempts"),
                    code=bindparam("b_code"),
                    due_us=bindparam("b_due"),
                    delivered_us=bindparam("b_delivered"),
                    lease_until_us=0,
                ),
                changes,
            )
            if disclosed:
                conn.execute(disclosures.insert(), disclosed)
                phi_ids = [d["record_key"] for d in disclosed if d["phi"]]
                if phi_ids:
                    append_audit(
                        conn,
                        [
                            AuditEntry(
                                actor="journeys",
                                action="disclose",
                                record_type="journey_webhook",
                                record_ids=phi_ids,
                                fields=sorted(
                                    {f for d in disclosed for f in orjson.loads(d["fields"])}
                                ),
                                purpose="journey webhook steps",
                            )
                        ],
                        at_us=now_us,
                    )
        return report

    def drain(self, limit: int = 100) -> WebhookReport:
        total = WebhookReport()
        while True:
            report = self.run_once(limit)
            for name in ("delivered", "retried", "failed", "gave_up"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            if not report.attempted or report.retried == report.attempted:
                return total

    def _post(self, r: Any, body: bytes) -> tuple[str, str]:
        try:  # the variable, or the file its NAME_FILE twin names (security/secret_files.py)
            secret = resolve_secret(r.secret_env, self._environ)
        except SecretFileError:
            return "retry", "secret_file"  # configuration again: `telecrm doctor` says what
        if not secret:
            return "retry", "no_secret"  # configuration, not the receiver: fixable, so retried
        timestamp = int(self._clock.now().timestamp())
        try:
            headers = signed_headers(secret, r.webhook_id, timestamp, body)
        except ValueError:
            return "failed", "bad_secret"
        headers["content-type"] = "application/json"
        try:
            response = self._client.post(r.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return "retry", type(exc).__name__[:40]
        code = str(response.status_code)
        if response.is_success:
            return "delivered", code
        if response.status_code in RETRYABLE or response.status_code >= 500:
            return "retry", code
        return "failed", code
