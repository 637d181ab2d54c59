"""The demo's messaging part: SendGrid and Twilio sandboxes on loopback, telecrm serving their
signed callbacks, live platform events firing the 8 triggers, and what came back.

History is not news: the demo's months of simulated events send nothing (triggers older than
TELECRM_MESSAGE_MAX_AGE_HOURS are skipped). This part posts *today's* events for new patients
(spread over timezones, languages and consent choices, some with planted PHI canaries), lets
`telecrm serve`'s messaging thread plan and send them, flushes the sandboxes' delivery and
engagement callbacks (signed as the real services sign them) into telecrm, and prints the counts,
the reasons, the engagement rates, one explain trail, and the PHI canary check.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from telecrm.api.app import create_app
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.ingest.signatures import signed_headers
from telecrm.messaging.commands import message_summary, print_summary, print_why
from telecrm.messaging.config import load_messaging_config
from telecrm.messaging.tables import message_triggers, messages
from telecrm.messaging.wiring import INBOUND_PATH, STATUS_PATH, email_provider
from telecrm.sandbox.sendgrid import SendGridSandboxConfig, create_sendgrid_sandbox
from telecrm.sandbox.twilio import TwilioSandbox, TwilioSandboxConfig
from telecrm.sync.demo_sync import serve_on_loopback

ZONES = (
    ("America/New_York", "en"),
    ("America/Chicago", "en"),
    ("America/Denver", "en"),
    ("America/Los_Angeles", "en"),
    ("Pacific/Honolulu", "en"),
    ("America/Puerto_Rico", "es"),
    ("Europe/Madrid", "es"),
    ("Asia/Tokyo", "en"),
    ("Mars/Olympus_Mons", "en"),
    (None, "en"),
)
CANARY_CONDITIONS = ("Canarycondition syndrome", "Zzyzx canary disorder")
CANARY_MEDICATIONS = ("Canarymycin 20mg", "Zzyzxol 5mg")


def _events(n: int, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Today's platform events for `n` new patients: every trigger, several consent choices."""
    out: list[dict[str, Any]] = []

    def add(type_: str, pid: str, at: datetime, data: dict[str, Any]) -> None:
        out.append(
            {
                "id": f"live_{uuid.uuid4().hex[:20]}",
                "type": type_,
                "version": 1,
                "occurred_at": at.isoformat(),
                "patient": {"id": pid},
                "data": data,
            }
        )

    for i in range(n):
        pid = f"live_{i + 1:05d}"
        zone, language = ZONES[i % len(ZONES)]
        at = now - timedelta(minutes=30) + timedelta(seconds=i)
        prefs = {
            "email_consent": rng.random() > 0.03,
            "sms_consent": rng.random() < 0.75,
            "marketing_consent": rng.random() < 0.4,
        }
        data: dict[str, Any] = {
            "first_name": rng.choice(["Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus"]),
            "last_name": rng.choice(["Ruiz", "Smith", "Okafor", "Lee", "Novak"]),
            "email": f"{pid}@example.com",
            "phone": f"+1415555{i % 10000:04d}",
            "language": language,
            "communication_preferences": prefs,
        }
        if zone:
            data["timezone"] = zone
        add("patient.registered", pid, at, data)
        roll = rng.random()
        if roll < 0.5:
            add(
                "consultation.submitted",
                pid,
                at + timedelta(seconds=5),
                {
                    "consultation_id": f"c_{pid}",
                    "conditions": [CANARY_CONDITIONS[i % 2]],
                    "medications": [CANARY_MEDICATIONS[i % 2]],
                },
            )
        if roll < 0.25:
            add(
                "prescription.approved",
                pid,
                at + timedelta(seconds=8),
                {
                    "prescription_id": f"rx_{pid}",
                    "consultation_id": f"c_{pid}",
                    "medication": CANARY_MEDICATIONS[i % 2],
                },
            )
            add(
                "order.paid",
                pid,
                at + timedelta(seconds=9),
                {"order_id": f"o_{pid}", "amount": 59.0},
            )
        if 0.25 <= roll < 0.35:
            add(
                "refill.due",
                pid,
                at + timedelta(seconds=9),
                {
                    "prescription_id": f"rx_{pid}",
                    "due_on": (now + timedelta(days=5)).date().isoformat(),
                },
            )
        if 0.35 <= roll < 0.45:
            add(
                "treatment_plan.updated",
                pid,
                at + timedelta(seconds=9),
                {"treatment_plan_id": f"tp_{pid}", "status": "completed"},
            )
        if 0.45 <= roll < 0.5:
            add(
                "support_ticket.created",
                pid,
                at + timedelta(seconds=9),
                {"ticket_id": f"t_{pid}", "category": "billing"},
            )
    return out


def _post_events(client: httpx.Client, secret: str, batch: list[dict[str, Any]]) -> None:
    for start in range(0, len(batch), 500):
        body = orjson.dumps(batch[start : start + 500])
        headers = signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
        headers["content-type"] = "application/json"
        client.post("/v1/events", content=body, headers=headers).raise_for_status()


def _settled(rt: Runtime) -> bool:
    now_us = int(time.time() * 1e6)
    with rt.engine.connect() as conn:
        triggers = conn.execute(select(func.count()).select_from(message_triggers)).scalar_one()
        due = conn.execute(
            select(func.count()).where(messages.c.status == "queued", messages.c.due_us <= now_us)
        ).scalar_one()
    return rt.queue_stats()[0] == 0 and triggers == 0 and due == 0


def _wait(rt: Runtime, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    time.sleep(1.5)
    while time.monotonic() < deadline and not _settled(rt):
        time.sleep(0.3)


def demo_messaging(rt: Runtime, console: Console, *, secret: str, port: int, patients: int) -> bool:
    """Returns whether the PHI canary stayed out of SendGrid (and out of Twilio without a BAA)."""
    rng = random.Random(11)
    sendgrid = create_sendgrid_sandbox(SendGridSandboxConfig(seed=3))
    twilio = TwilioSandbox(TwilioSandboxConfig(seed=5, reply_rate=0.6, stop_rate=0.03))
    public = f"http://127.0.0.1:{port}"
    with serve_on_loopback(sendgrid.app) as sg_url, serve_on_loopback(twilio.app) as tw_url:
        httpx.post(f"{sg_url}/_sandbox/webhook", json={"url": f"{public}/webhooks/sendgrid"})
        httpx.post(
            f"{tw_url}/_sandbox/webhook",
            json={"status_url": public + STATUS_PATH, "inbound_url": public + INBOUND_PATH},
        )
        live = rt.settings.model_copy(
            update={
                "messaging": True,
                "public_url": public,
                "sendgrid_api_key": "SG.sandbox-key",
                "sendgrid_url": sg_url,
                "sendgrid_webhook_public_key": sendgrid.public_key,
                "twilio_url": tw_url,
                "twilio_account_sid": twilio.config.account_sid,
                "twilio_auth_token": twilio.config.auth_token,
                "twilio_messaging_service_sid": twilio.config.messaging_service_sid,
            }
        )
        live = type(live).model_validate(live.model_dump())  # SecretStr fields from plain text
        # `telecrm messages provision`: the unsubscribe groups every email names (asm.group_id).
        groups = load_messaging_config(live.messaging_config).unsubscribe_groups
        provider = email_provider(live)
        assert provider is not None
        ids = provider.ensure_unsubscribe_groups(groups.values())  # type: ignore[attr-defined]
        live = live.model_copy(
            update={
                "sendgrid_transactional_group": ids[groups["transactional"]],
                "sendgrid_marketing_group": ids[groups["marketing"]],
            }
        )
        rt2 = bootstrap(live, engine=rt.engine, migrate=False)
        started = time.perf_counter()
        with (
            serve_on_loopback(create_app(rt2), port, lifespan="on"),
            httpx.Client(base_url=public, timeout=60) as client,
        ):
            batch = _events(patients, datetime.now(UTC), rng)
            _post_events(client, secret, batch)
            console.print(f"posted {len(batch):,} of today's events for {patients:,} new patients")
            _wait(rt2)
            sent_in = time.perf_counter() - started
            httpx.post(f"{sg_url}/_sandbox/events/flush", timeout=120)
            httpx.post(f"{tw_url}/_sandbox/callbacks/flush", timeout=120)
            httpx.post(f"{tw_url}/_sandbox/callbacks/flush", timeout=120)  # replies to replies
            _wait(rt2)
        with rt2.engine.connect() as conn:
            summary = message_summary(conn)
            deferred = conn.execute(
                select(messages).where(messages.c.deferred.is_(True)).limit(1)
            ).first()
        print_summary(summary)
        sent = sum(e["sent"] for e in summary["engagement"].values())
        console.print(
            f"{sent:,} messages sent through the outbox in {sent_in:.1f} s", highlight=False
        )
        if deferred is not None:
            console.print(f"[dim]$ telecrm messages why {deferred.message_id}[/]")
            print_why(deferred)
        sg_bodies = httpx.get(f"{sg_url}/_sandbox/messages", timeout=60).text
        tw_bodies = httpx.get(f"{tw_url}/_sandbox/messages", timeout=60).text
    planted = CANARY_CONDITIONS + CANARY_MEDICATIONS
    leaks_sg = [c for c in planted if c.lower() in sg_bodies.lower()]
    leaks_tw = [c for c in planted if c.lower() in tw_bodies.lower()]
    table = Table("destination", "BAA", "planted PHI values", "found in what it received")
    table.add_row(
        "SendGrid",
        "no",
        str(len(planted)),
        "[green]0[/]" if not leaks_sg else f"[red]{len(leaks_sg)}[/]",
    )
    table.add_row(
        "Twilio",
        "no (TWILIO_BAA off)",
        str(len(planted)),
        "[green]0[/]" if not leaks_tw else f"[red]{len(leaks_tw)}[/]",
    )
    console.print(table)
    return not leaks_sg and not leaks_tw
