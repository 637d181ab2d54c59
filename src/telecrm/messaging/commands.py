"""`telecrm messages ...` and `telecrm consent ...`: the outbox, its decisions, and consent.

Nothing here prints an address, a body or a secret: messages show template, channel, status and
the rules' reasons; consent shows the ledger's sources and times.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson
import typer
from rich.table import Table
from sqlalchemy import func, select

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import from_micros
from telecrm.domain.consent import ConsentBook, ConsentEntry
from telecrm.messaging.planner import consent_books, record_consent
from telecrm.messaging.tables import consent_ledger, messages, nps_responses

messages_app = typer.Typer(
    help=(
        "Patient messages (the outbox): what was planned, sent, deferred or suppressed, and why. "
        "Triggers plan messages as events arrive; `telecrm serve` sends them."
    ),
    no_args_is_help=True,
)
consent_app = typer.Typer(
    help="Consent per channel and purpose, with the evidence (source, time) of every change.",
    no_args_is_help=True,
)

ENGAGED = ("delivered", "opened", "clicked", "replied")


def _when(us: int | None) -> str:
    return from_micros(us).strftime("%Y-%m-%d %H:%M:%S") if us else "—"


@messages_app.command("list")
@friendly_errors
def list_command(
    patient: str = typer.Option(None, help="Only this patient's messages"),
    status: str = typer.Option(None, help="Only this status (queued, sent, suppressed, ...)"),
    limit: int = typer.Option(30, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
) -> None:
    """The latest messages: template, channel, status, reason and times."""
    rt = runtime()
    query = select(messages).order_by(messages.c.created_us.desc()).limit(limit)
    if patient:
        query = query.where(messages.c.patient_key == patient)
    if status:
        query = query.where(messages.c.status == status)
    with rt.engine.connect() as conn:
        rows = list(conn.execute(query))
    if as_json:
        for r in rows:
            typer.echo(
                json.dumps(
                    {
                        "message_id": r.message_id,
                        "patient_id": r.patient_key,
                        "channel": r.channel,
                        "template": r.template,
                        "purpose": r.purpose,
                        "status": r.status,
                        "reason": r.reason,
                        "source": r.source,
                        "due": from_micros(r.due_us).isoformat(),
                    }
                )
            )
        return
    table = Table("message", "patient", "template", "channel", "status", "reason", "due (UTC)")
    for r in rows:
        table.add_row(
            r.message_id,
            r.patient_key,
            r.template,
            r.channel,
            r.status,
            r.reason or "",
            _when(r.due_us),
        )
    console.print(table)


@messages_app.command("why")
@friendly_errors
def why_command(message_id: str = typer.Argument(..., help="A message id (msg_...)")) -> None:
    """Every rule's verdict for one message, in order, and what happened after."""
    rt = runtime()
    with rt.engine.connect() as conn:
        r = conn.execute(select(messages).where(messages.c.message_id == message_id)).first()
    if r is None:
        raise fail(f"no message {message_id}", hint="telecrm messages list shows message ids")
    print_why(r)


def print_why(r: Any) -> None:
    """One message's explain trail and outcome (a `messages` row)."""
    console.print(
        f"[bold]{r.message_id}[/]  {r.template} ({r.channel}, {r.purpose}, {r.language}) "
        f"to patient {r.patient_key}\nsource {r.source}"
        + (f", event {r.event_id}" if r.event_id else "")
        + f"; planned {_when(r.created_us)} UTC, due {_when(r.due_us)} UTC",
        highlight=False,
    )
    table = Table("#", "rule", "verdict", "detail", title="decision")
    colour = {"pass": "green", "defer": "yellow", "suppress": "red", "skip": "dim"}
    for i, step in enumerate(orjson.loads(r.trail), 1):
        v = step["verdict"]
        table.add_row(str(i), step["rule"], f"[{colour.get(v, 'white')}]{v}[/]", step["detail"])
    console.print(table)
    after = [
        ("status", r.status + (f" ({r.reason})" if r.reason else "")),
        ("attempts", str(r.attempts)),
        ("sent", _when(r.sent_us)),
        ("delivered", _when(r.delivered_us)),
        ("opened", _when(r.opened_us)),
        ("clicked", _when(r.clicked_us)),
        ("replied", _when(r.replied_us)),
        ("provider id", r.provider_id or "—"),
        ("provider code", r.code or "—"),
    ]
    if r.segments:
        after.append(("segments", str(r.segments)))
    outcome = Table("", "", title="what happened", show_header=False)
    for k, v in after:
        outcome.add_row(k, v)
    console.print(outcome)


@messages_app.command("stats")
@friendly_errors
def stats_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Messages by status and reason, and engagement rates of what was sent."""
    rt = runtime()
    with rt.engine.connect() as conn:
        summary = message_summary(conn)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    print_summary(summary)


def message_summary(conn: Any) -> dict[str, Any]:
    """Counts by channel and status, suppression reasons, and rates over the messages sent."""
    by: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for channel, status, reason, n in conn.execute(
        select(messages.c.channel, messages.c.status, messages.c.reason, func.count()).group_by(
            messages.c.channel, messages.c.status, messages.c.reason
        )
    ):
        by[(channel, status)] += n
        if status in ("suppressed", "rejected", "opted_out", "expired", "gave_up") and reason:
            reasons[f"{channel}:{reason}"] += n
    deferred = conn.execute(
        select(messages.c.channel, func.count())
        .where(messages.c.deferred.is_(True))
        .group_by(messages.c.channel)
    ).all()
    engaged: dict[str, dict[str, int]] = {}
    for channel in ("email", "sms"):
        row = conn.execute(
            select(
                func.count(messages.c.sent_us),
                func.count(messages.c.delivered_us),
                func.count(messages.c.opened_us),
                func.count(messages.c.clicked_us),
                func.count(messages.c.replied_us),
            ).where(messages.c.channel == channel)
        ).one()
        engaged[channel] = dict(
            zip(("sent", "delivered", "opened", "clicked", "replied"), row, strict=True)
        )
    nps = conn.execute(select(func.count(), func.avg(nps_responses.c.score))).one()
    consent_changes = {
        f"{source}:{'granted' if granted else 'revoked'}": n
        for source, granted, n in conn.execute(
            select(consent_ledger.c.source, consent_ledger.c.granted, func.count())
            .where(consent_ledger.c.source != "profile")
            .group_by(consent_ledger.c.source, consent_ledger.c.granted)
        )
    }
    return {
        "by_status": {f"{c}:{s}": n for (c, s), n in sorted(by.items())},
        "deferred_for_quiet_hours": {c: n for c, n in deferred},
        "reasons": dict(reasons.most_common()),
        "engagement": engaged,
        "consent_changes": consent_changes,
        "survey_answers": int(nps[0]),
        "survey_mean": round(float(nps[1]), 2) if nps[1] is not None else None,
    }


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "—"


def print_summary(s: dict[str, Any]) -> None:
    table = Table("channel", "status", "messages", title="messages by status")
    for key, n in s["by_status"].items():
        channel, status = key.split(":", 1)
        table.add_row(channel, status, f"{n:,}")
    console.print(table)
    if s["reasons"]:
        reasons = Table("channel", "reason", "messages", title="not sent, and why")
        for key, n in s["reasons"].items():
            channel, reason = key.split(":", 1)
            reasons.add_row(channel, reason, f"{n:,}")
        console.print(reasons)
    rates = Table(
        "channel",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "replied",
        title="engagement (share of sent)",
    )
    for channel, e in s["engagement"].items():
        rates.add_row(
            channel,
            f"{e['sent']:,}",
            _rate(e["delivered"], e["sent"]),
            _rate(e["opened"], e["sent"]) if channel == "email" else "—",
            _rate(e["clicked"], e["sent"]) if channel == "email" else "—",
            _rate(e["replied"], e["sent"]) if channel == "sms" else "—",
        )
    console.print(rates)
    deferred = s["deferred_for_quiet_hours"]
    if deferred:
        console.print(
            "deferred for quiet hours: "
            + ", ".join(f"{c} {n:,}" for c, n in sorted(deferred.items())),
            highlight=False,
        )
    if s["consent_changes"]:
        console.print(
            "consent changes from patients and providers: "
            + ", ".join(
                f"{k.replace(':', ' ')} {n:,}" for k, n in sorted(s["consent_changes"].items())
            ),
            highlight=False,
        )
    if s["survey_answers"]:
        console.print(
            f"satisfaction survey: {s['survey_answers']:,} answers, mean {s['survey_mean']}/10",
            highlight=False,
        )


@messages_app.command("send")
@friendly_errors
def send_command() -> None:
    """Plan waiting triggers and send every due message now (what `serve` does each second)."""
    rt = runtime()
    parts = rt.messaging()
    planned = parts.planner.drain()
    sent = parts.dispatcher.drain()
    console.print(
        f"planned {planned.planned:,} messages from {planned.triggers:,} triggers "
        f"({planned.queued:,} due now, {planned.deferred:,} deferred, "
        f"{planned.suppressed:,} suppressed); sent {sent.sent:,}, rejected {sent.rejected:,}, "
        f"retrying {sent.retried:,}",
        highlight=False,
    )
    if planned.reasons:
        console.print(
            "reasons: " + ", ".join(f"{k} {v:,}" for k, v in planned.reasons.most_common()),
            highlight=False,
        )


# -- consent ------------------------------------------------------------------------------------
@consent_app.command("show")
@friendly_errors
def consent_show(patient: str = typer.Argument(..., help="The platform's patient id")) -> None:
    """The patient's consent per channel and purpose, and the ledger behind it."""
    rt = runtime()
    with rt.engine.connect() as conn:
        entries = consent_books(conn, [patient])[patient]
    book = ConsentBook(entries)
    table = Table("channel", "purpose", "consent", "source", "since (UTC)", title="consent")
    for channel in ("email", "sms"):
        for purpose in ("transactional", "marketing"):
            st = book.state(channel, purpose)
            table.add_row(
                channel, purpose, "yes" if st.granted else "no", st.source, _when(st.at_us)
            )
    console.print(table)
    ledger = Table(
        "at (UTC)", "channel", "purpose", "granted", "source", "evidence", title="ledger"
    )
    for e in sorted(entries, key=lambda e: e.at_us):
        ledger.add_row(_when(e.at_us), e.channel, e.purpose, str(e.granted), e.source, e.evidence)
    console.print(ledger)


@consent_app.command("set")
@friendly_errors
def consent_set(
    patient: str = typer.Argument(..., help="The platform's patient id"),
    channel: str = typer.Option(..., help="email or sms"),
    purpose: str = typer.Option(..., help="transactional or marketing"),
    granted: bool = typer.Option(..., "--granted/--revoked"),
    evidence: str = typer.Option(
        ..., help="Where the patient said so (e.g. 'call 2026-11-25, ticket T-1'); no PHI"
    ),
) -> None:
    """Record a grant or revocation the patient gave another way (phone, paper)."""
    if channel not in ("email", "sms") or purpose not in ("transactional", "marketing"):
        raise fail("--channel is email or sms; --purpose is transactional or marketing", code=2)
    rt = runtime()
    with rt.engine.begin() as conn:
        record_consent(
            conn,
            patient,
            [ConsentEntry(channel, purpose, granted, "cli", evidence[:160], now_us(rt))],
        )
    console.print(f"recorded: {channel} {purpose} {'granted' if granted else 'revoked'}")


@messages_app.command("provision")
@friendly_errors
def provision_command() -> None:
    """Create the SendGrid unsubscribe groups (ASM) named in the messaging config, idempotently,
    and print the ids to set as TELECRM_SENDGRID_*_GROUP."""
    from telecrm.messaging.config import load_messaging_config
    from telecrm.messaging.wiring import email_provider

    rt = runtime()
    provider = email_provider(rt.settings)
    if provider is None:
        raise fail("SendGrid is not configured", hint="set TELECRM_SENDGRID_API_KEY")
    config = load_messaging_config(rt.settings.messaging_config)
    names = config.unsubscribe_groups
    ids = provider.ensure_unsubscribe_groups(names.values())  # type: ignore[attr-defined]
    for purpose, name in names.items():
        console.print(
            f"TELECRM_SENDGRID_{purpose.upper()}_GROUP={ids[name]}   # {name}", highlight=False
        )


@messages_app.command("nps")
@friendly_errors
def nps_command(
    reason: str = typer.Option(
        ..., help="Why you need provider-level results (provider ids are PHI; audited)"
    ),
) -> None:
    """Satisfaction survey answers (0-10) as NPS, overall and per provider."""
    from telecrm.security.audit import AuditEntry, append_audit

    rt = runtime()
    cipher = rt.cipher()
    scores: dict[str, list[int]] = {}
    everyone: list[int] = []
    with rt.engine.begin() as conn:
        rows = list(conn.execute(select(nps_responses)))
        for r in rows:
            everyone.append(r.score)
            provider = (
                cipher.decrypt_json(r.provider_sealed, record_id=r.message_id, field="provider_id")
                if r.provider_sealed
                else "(no provider)"
            )
            scores.setdefault(str(provider), []).append(r.score)
        if rows:
            append_audit(
                conn,
                [
                    AuditEntry(
                        actor="cli",
                        action="read",
                        record_type="nps_response",
                        record_ids=[str(r.id) for r in rows],
                        fields=["provider_id"],
                        purpose=reason[:200],
                    )
                ],
                at_us=now_us(rt),
            )
    table = Table("provider", "answers", "promoters", "detractors", "NPS", title="satisfaction")
    for name, values in [("all", everyone), *sorted(scores.items())]:
        if not values:
            continue
        promoters = sum(1 for v in values if v >= 9) / len(values)
        detractors = sum(1 for v in values if v <= 6) / len(values)
        table.add_row(
            name,
            f"{len(values):,}",
            f"{promoters:.0%}",
            f"{detractors:.0%}",
            f"{(promoters - detractors) * 100:+.0f}",
        )
    console.print(table)
