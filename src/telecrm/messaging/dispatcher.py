"""Sends due messages: claim from the outbox, check consent again, render, hand to the provider,
record what happened (status, provider id, disclosures, audit) in one transaction per round.

A message is claimed with a lease, so a crashed dispatcher's messages are picked up again once
the lease runs out; the provider call is the only thing outside a transaction. Between planning
and sending the patient may have texted STOP or bounced: consent and suppression are read again
here, and a message that no longer passes is suppressed with the reason.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, update

from telecrm.connectors.base import ConnectorError, RateLimited, TransientFailure
from telecrm.connectors.messaging_base import (
    EmailMessage,
    EmailProvider,
    SendResult,
    SmsMessage,
    SmsProvider,
)
from telecrm.domain.clock import Clock, to_micros
from telecrm.domain.consent import ConsentBook
from telecrm.domain.fields import FIELDS
from telecrm.messaging.content_guard import phi_leaks
from telecrm.messaging.context import Brand, Links
from telecrm.messaging.outcomes import record_outcomes
from telecrm.messaging.pacing import ProviderBudget
from telecrm.messaging.planner import address_bidx, consent_books
from telecrm.messaging.secrets_vault import SecretVault
from telecrm.messaging.tables import message_suppressions, messages
from telecrm.messaging.templates import TemplateCatalog
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher

LEASE_US = 120_000_000


# Refusals telecrm makes itself before a call: nothing reached the provider.
KEPT_BACK = frozenset({"render_failed", "PHI_REFUSED"})


@dataclass(slots=True)
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    rejected: int = 0
    opted_out: int = 0
    suppressed: int = 0
    retried: int = 0
    gave_up: int = 0
    expired: int = 0
    calls: int = 0
    full: bool = False  # a channel had more due than one round takes
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: DispatchReport) -> None:
        for name in (
            "claimed",
            "sent",
            "rejected",
            "opted_out",
            "suppressed",
            "retried",
            "gave_up",
            "expired",
            "calls",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)


@dataclass(slots=True)
class Job:
    row: Any
    values: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    fields_used: list[str] = field(default_factory=list)
    phi: bool = False
    segments: int | None = None


class MessageDispatcher:
    def __init__(
        self,
        engine: Engine,
        cipher: Callable[[], FieldCipher],
        index: Callable[[], BlindIndex],
        clock: Clock,
        catalog: TemplateCatalog,
        *,
        email: EmailProvider | None,
        sms: SmsProvider | None,
        links: Links,
        brand: Brand,
        vault: SecretVault | None = None,
        unsubscribe_groups: dict[str, int] | None = None,
        sms_baa: bool = False,
        max_age_hours: float = 48.0,
        concurrency: int = 8,
        budgets: dict[str, ProviderBudget] | None = None,
        hosted_templates: dict[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._index = index
        self._clock = clock
        self.catalog = catalog
        self.providers: dict[str, Any] = {"email": email, "sms": sms}
        self.links = links
        self.brand = brand
        self.vault = vault or SecretVault()
        self.unsubscribe_groups = dict(unsubscribe_groups or {})
        self.sms_baa = sms_baa
        self.max_age_us = int(max_age_hours * 3_600_000_000)
        self.concurrency = concurrency
        self.budgets = dict(budgets or {})
        self.hosted_templates = dict(hosted_templates or {})
        self._random = random.Random(seed)
        self._full = False

    def drain(self, limit: int = 1000) -> DispatchReport:
        total = DispatchReport()
        while True:
            report = self.run_once(limit)
            total.add(report)
            if not report.full or report.claimed == report.retried:
                return total

    def run_once(self, limit: int = 1000) -> DispatchReport:
        cipher, index = self._cipher(), self._index()
        now_us = to_micros(self._clock.now())
        report = DispatchReport()
        self._full = False
        with self._engine.begin() as conn:
            jobs = self._claim(conn, cipher, limit, now_us)
            report.full = self._full
            report.claimed = len(jobs)
            if not jobs:
                return report
            # Consent and suppression again: a STOP or a bounce may have come since planning.
            books = consent_books(conn, sorted({j.row.patient_key for j in jobs}))
            wanted = sorted(
                {b for j in jobs if (b := address_bidx(index, j.row.channel, j.values)[0])}
            )
            suppressed: set[tuple[str, str]] = set()
            for start in range(0, len(wanted), 500):
                suppressed.update(
                    (r.channel, r.address_bidx)
                    for r in conn.execute(
                        select(
                            message_suppressions.c.channel, message_suppressions.c.address_bidx
                        ).where(
                            message_suppressions.c.address_bidx.in_(wanted[start : start + 500])
                        )
                    )
                )
        outcomes: dict[str, tuple[str, dict[str, Any]]] = {}
        ready: dict[str, list[Job]] = {"email": [], "sms": []}
        for job in jobs:
            r = job.row
            bidx, valid = address_bidx(index, r.channel, job.values)
            allowed, why = ConsentBook(books.get(r.patient_key, [])).allows(r.channel, r.purpose)
            if not bidx or not valid:
                outcomes[r.message_id] = ("suppressed", {"reason": "no_address"})
            elif (r.channel, bidx) in suppressed:
                outcomes[r.message_id] = ("suppressed", {"reason": "suppressed_address"})
            elif not allowed:
                outcomes[r.message_id] = ("suppressed", {"reason": "no_consent", "why": why})
            elif self.providers[r.channel] is None:
                outcomes[r.message_id] = ("queued", {"retry_in": 300.0, "code": "not_configured"})
            else:
                problem = self._prepare(job, cipher)
                if problem is not None:
                    outcomes[r.message_id] = problem
                else:
                    ready[r.channel].append(job)
        results: list[tuple[Job, SendResult]] = []
        for channel, pending in ready.items():
            if pending:  # a channel without a provider has nothing ready (and no provider)
                results.extend(self._send(channel, pending, report))
        for job, result in results:
            outcomes[job.row.message_id] = self._outcome(job, result)
        with self._engine.begin() as conn:
            record_outcomes(conn, jobs, outcomes, report, now_us, self._random)
        return report

    # -- steps ------------------------------------------------------------------------------------
    def _claim(self, conn: Connection, cipher: FieldCipher, limit: int, now_us: int) -> list[Job]:
        def due(channel: str) -> Any:
            # Per channel: a round's emails fill SendGrid's batches whatever the SMS queue holds.
            query = (
                select(messages)
                .where(
                    messages.c.status == "queued",
                    messages.c.channel == channel,
                    messages.c.due_us <= now_us,
                    messages.c.lease_until_us < now_us,
                )
                .order_by(messages.c.due_us)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            return query

        # A message that could not go for so long is stale: configuring a provider later must
        # not send yesterday's reminders in a flood.
        conn.execute(
            update(messages)
            .where(messages.c.status == "queued", messages.c.due_us < now_us - self.max_age_us)
            .values(status="expired", reason="stale")
        )
        rows: list[Any] = []
        for channel in ("email", "sms"):
            got = list(conn.execute(due(channel)))
            self._full = self._full or len(got) == limit
            rows.extend(got)
        if not rows:
            return []
        ids = [r.message_id for r in rows]
        conn.execute(
            update(messages)
            .where(messages.c.message_id.in_(ids))
            .values(lease_until_us=now_us + LEASE_US, attempts=messages.c.attempts + 1)
        )
        keys = sorted({r.patient_key for r in rows})
        values: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            for row in conn.execute(
                select(profiles).where(profiles.c.patient_key.in_(keys[start : start + 500]))
            ):
                stored = decode(row, cipher)
                if not stored.profile.deleted:
                    values[row.patient_key] = stored.profile.values
        return [Job(r, values.get(r.patient_key, {})) for r in rows]

    def _prepare(self, job: Job, cipher: FieldCipher) -> tuple[str, dict[str, Any]] | None:
        """Build the minimum-necessary context; None when the job is ready to render."""
        r = job.row
        refs = self.catalog.references(r.template, r.channel)
        patient = {
            ref.split(".", 1)[1]: job.values[ref.split(".", 1)[1]]
            for ref in refs
            if ref.startswith("patient.") and ref.split(".", 1)[1] in job.values
        }
        event_vars: dict[str, Any] = {}
        if r.context_sealed:
            event_vars = cipher.decrypt_json(
                r.context_sealed, record_id=r.message_id, field="context"
            )
        secrets: dict[str, str] = {}
        if r.purpose == "security":
            taken = self.vault.take(r.message_id)
            if taken is None:
                return ("expired", {"reason": "secret_gone"})
            secrets = taken
        job.context = {
            "patient": patient,
            "event": event_vars,
            "links": self.links.for_message(
                r.message_id, event_vars, reset_url=secrets.get("reset_url")
            ),
            "brand": asdict(self.brand),
            "secret": secrets,
            "message": {"id": r.message_id},
        }
        address_field = "email" if r.channel == "email" else "phone"
        # An email also carries the first name as the recipient's display name (`_send`),
        # whether or not the template shows it: the accounting of disclosures must say so.
        shown_name = (
            {"first_name"} if r.channel == "email" and "first_name" in job.values else set()
        )
        job.fields_used = sorted({*patient, address_field, *shown_name})
        job.phi = any(FIELDS[n].is_phi for n in patient) or any(
            FIELDS[f].is_phi for f in self.catalog.phi_fields(r.template, r.channel)
        )
        return None

    def _send(
        self, channel: str, jobs: list[Job], report: DispatchReport
    ) -> list[tuple[Job, SendResult]]:
        provider = self.providers[channel]
        out: list[tuple[Job, SendResult]] = []
        rendered: list[tuple[Job, EmailMessage | SmsMessage]] = []
        for job in jobs:
            r = job.row
            try:
                if channel == "email":
                    e = self.catalog.render_email(r.template, r.language, job.context)
                    hosted = self.hosted_templates.get(r.template)
                    data = (
                        self.catalog.data_for(r.template, "email", job.context) if hosted else None
                    )
                    msg: EmailMessage | SmsMessage = EmailMessage(
                        message_id=r.message_id,
                        to_email=str(job.values["email"]),
                        to_name=job.values.get("first_name"),
                        subject=e.subject,
                        html=e.html,
                        text=e.text,
                        category=r.template,
                        unsubscribe_group=self.unsubscribe_groups.get(r.purpose),
                        template_id=hosted,
                        dynamic_data=data,
                    )
                    texts: tuple[str, ...] = (e.subject, e.html, e.text)
                    if data is not None:
                        texts += (orjson.dumps(data).decode(),)
                else:
                    s = self.catalog.render_sms(r.template, r.language, job.context)
                    msg = SmsMessage(r.message_id, str(job.values["phone"]), s.body)
                    job.segments = s.segments.segments
                    texts = (s.body,)
            except Exception as exc:  # a template that cannot render is the operator's to fix
                out.append(
                    (
                        job,
                        SendResult(
                            r.message_id,
                            "rejected",
                            code="render_failed",
                            detail=type(exc).__name__,
                        ),
                    )
                )
                continue
            baa = channel == "sms" and self.sms_baa
            if not baa and phi_leaks(job.values, texts):
                out.append(
                    (
                        job,
                        SendResult(
                            r.message_id,
                            "rejected",
                            code="PHI_REFUSED",
                            detail="rendered content holds a PHI value",
                        ),
                    )
                )
                continue
            rendered.append((job, msg))
        before = provider.stats.calls
        batch_max = max(1, provider.batch_max)
        budget = self.budgets.get(channel)
        if batch_max > 1:
            for start in range(0, len(rendered), batch_max):
                out.extend(self._call(channel, provider, rendered[start : start + batch_max]))
        elif rendered:
            # One message per call (Twilio): calls start `interval` apart from the account's
            # shared budget, up to `concurrency` in flight, so neither the provider's latency nor
            # its request limit sets the pace of a whole round.
            first = budget.reserve(len(rendered)) if budget else 0
            if self.concurrency <= 1 or (budget is not None and budget.simulated):
                for k, item in enumerate(rendered):
                    if budget is not None:
                        budget.wait_until(first + k * budget.interval_us)
                    out.extend(self._call(channel, provider, [item]))
            else:
                pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="send")
                with pool:
                    futures = []
                    for k, item in enumerate(rendered):
                        if budget is not None:
                            budget.wait_until(first + k * budget.interval_us)
                        futures.append(pool.submit(self._call, channel, provider, [item]))
                    for future in futures:
                        out.extend(future.result())
        if budget is not None:
            waits = [
                float(r.detail.split("=", 1)[1] or 0)
                for _, r in out
                if r.detail and r.detail.startswith("retry_after=")
            ]
            if waits:
                budget.back_off(max(1.0, *waits))
        report.calls += provider.stats.calls - before
        return out

    def _call(
        self, channel: str, provider: Any, chunk: list[tuple[Job, EmailMessage | SmsMessage]]
    ) -> list[tuple[Job, SendResult]]:
        """One provider call (or one run of single-message calls): a result for every message."""
        by_id = {m.message_id: j for j, m in chunk}
        try:
            if channel == "email":
                results = provider.send_emails([m for _, m in chunk])
            else:
                results = provider.send_sms([m for _, m in chunk])
        except RateLimited as exc:
            results = [
                SendResult(i, "retry", code=exc.code, detail=f"retry_after={exc.retry_after or 0}")
                for i in by_id
            ]
        except TransientFailure as exc:
            results = [SendResult(i, "retry", code=exc.code) for i in by_id]
        except ConnectorError as exc:  # auth or configuration: wait for the operator
            results = [SendResult(i, "retry", code=exc.code, detail="operator") for i in by_id]
        out: list[tuple[Job, SendResult]] = []
        seen = set()
        for result in results:
            if result.message_id in by_id:
                seen.add(result.message_id)
                out.append((by_id[result.message_id], result))
        for missing in set(by_id) - seen:  # a provider answer that skipped one: try again
            out.append((by_id[missing], SendResult(missing, "retry", code="no_result")))
        return out

    def _outcome(self, job: Job, result: SendResult) -> tuple[str, dict[str, Any]]:
        if result.outcome == "sent":
            return (
                "sent",
                {
                    "provider_id": result.provider_id,
                    "segments": job.segments,
                    "fields": job.fields_used,
                    "phi": job.phi,
                },
            )
        # A refusal the provider answered still carried the message to it: a disclosure.
        sent = {"fields": job.fields_used, "phi": job.phi}
        if result.outcome == "opted_out":
            return ("opted_out", {"code": result.code, **sent})
        if result.outcome == "rejected":
            told = {} if result.code in KEPT_BACK else sent
            return ("rejected", {"code": result.code, "reason": result.code, **told})
        if result.detail and result.detail.startswith("retry_after="):
            # The provider's limit, not this message: try again when it says, no attempt spent.
            retry_after = max(1.0, float(result.detail.split("=", 1)[1] or 0))
            return ("queued", {"code": result.code, "retry_in": retry_after, "limited": True})
        return ("queued", {"code": result.code, "retry_in": 0.0})
