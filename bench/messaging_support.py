"""Helpers for the messaging benchmark: a frozen-clock SQLite runtime wired to SendGrid and Twilio
sandboxes served by their own processes, consenting registrations, and the naive baseline (one
official-SDK call per message)."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import phonenumbers
from pydantic import SecretStr

from bench.sync_support import free_port
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.connectors.messaging_base import EmailMessage, SendResult, SendStats, SmsMessage
from telecrm.domain.events import parse_event
from telecrm.messaging.context import Links, build_event_variables
from telecrm.messaging.templates import TemplateCatalog
from telecrm.messaging.wiring import STATUS_PATH, brand_of
from telecrm.sandbox.twilio_store import TwilioSandboxConfig
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings

SENDGRID_KEY = "SG.sandbox-key"  # the SendGrid sandbox's default API key
TWILIO = TwilioSandboxConfig()  # the Twilio sandbox's default account, token and service
PUBLIC_URL = "https://telecrm.example.com"
# 19:00 UTC on a Monday without a DST change in the US: 14:00 New York, 13:00 Chicago, 12:00
# Denver and Phoenix, 11:00 Los Angeles, 10:00 Anchorage. Inside the 08:00-21:00 window for all.
NOW = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
# A timezone each, with an area code of that zone (numbers 555-0000..9999 of each are valid).
ZONES = [
    ("America/New_York", "212"),
    ("America/Chicago", "312"),
    ("America/Denver", "303"),
    ("America/Phoenix", "602"),
    ("America/Los_Angeles", "415"),
    ("America/Anchorage", "907"),
]
FIRST = ["Ada", "Grace", "Alan", "Maria", "José", "Chen", "Amara", "Lucía", "Omar", "Priya"]
LAST = ["Lovelace", "Hopper", "Turing", "García", "Okafor", "Nguyen", "Smith", "Kowalski"]


# -- the platform -----------------------------------------------------------------------------
class ShiftedClock:
    """Real time, shifted to start at `at`: the rules see a daytime instant in every patient's
    zone whenever the benchmark runs, and sleeps and pacing are real (a FrozenClock would turn
    the dispatcher's paced, concurrent Twilio calls into one call after another)."""

    def __init__(self, at: datetime) -> None:
        self._offset = at - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset


def new_runtime(work: Path, sendgrid_url: str, twilio_url: str, rate: float) -> Runtime:
    """A fresh SQLite runtime on a shifted real clock, messaging on, the providers at the
    sandboxes, telecrm's own Twilio pacing at the sandboxes' (raised) rate."""
    settings = Settings(
        home=work,
        database_url=f"sqlite:///{work / 'bench.db'}",
        master_key=generate_master_key(),
        embedded_worker=False,
        messaging=True,
        public_url=PUBLIC_URL,
        sendgrid_api_key=SecretStr(SENDGRID_KEY),
        sendgrid_url=sendgrid_url,
        twilio_account_sid=TWILIO.account_sid,
        twilio_auth_token=SecretStr(TWILIO.auth_token),
        twilio_messaging_service_sid=TWILIO.messaging_service_sid,
        twilio_url=twilio_url,
        twilio_rate=rate,
    )
    return bootstrap(settings, clock=ShiftedClock(NOW))


def registrations(
    n: int, seed: int, *, sms_consent_share: float, spanish_share: float
) -> list[dict[str, Any]]:
    """n patient.registered events, 1 to 5 minutes before NOW, consenting to email (and to SMS
    for `sms_consent_share` of them), spread over the US zones, distinct emails and phones."""
    rng = random.Random(seed)
    if n > len(ZONES) * 10_000:
        raise ValueError(f"at most {len(ZONES) * 10_000} distinct phone numbers")
    out: list[dict[str, Any]] = []
    for i in range(n):
        zone, area = ZONES[i % len(ZONES)]
        phone = f"+1{area}555{i // len(ZONES):04d}"
        data: dict[str, Any] = {
            "first_name": rng.choice(FIRST),
            "last_name": rng.choice(LAST),
            "email": f"patient{i:06d}@example.com",
            "phone": phone,
            "timezone": zone,
            "communication_preferences": {
                "email_consent": True,
                "sms_consent": rng.random() < sms_consent_share,
            },
        }
        if rng.random() < spanish_share:
            data["language"] = "es"
        at = NOW - timedelta(seconds=rng.uniform(60, 300))
        out.append(
            {
                "id": f"evt_reg_{i:08d}",
                "type": "patient.registered",
                "version": 1,
                "occurred_at": at.isoformat(),
                "patient": {"id": f"p{i:06d}"},
                "data": data,
            }
        )
    bad = [e["data"]["phone"] for e in out if not _valid(e["data"]["phone"])]
    if bad:
        raise RuntimeError(f"invalid phone numbers generated: {bad}")
    return out


def _valid(phone: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(phone))


def feed(rt: Runtime, raw: list[dict[str, Any]], chunk: int) -> dict[str, Any]:
    """Accept the events in chunks (as the webhook does), then project them (triggers written by
    the projection, in the profile's transaction, as in production)."""
    now = rt.clock.now()
    intake = rt.intake()
    started = time.perf_counter()
    accepted = 0
    for start in range(0, len(raw), chunk):
        events = [parse_event(e, now=now) for e in raw[start : start + chunk]]
        result = intake.accept(events, source="webhook", actor="bench")
        accepted += result.accepted
    intake_s = time.perf_counter() - started
    started = time.perf_counter()
    folded = rt.worker().drain(limit=1000)
    return {
        "events": len(raw),
        "events_accepted": accepted,
        "intake_chunk": chunk,
        "intake_s": round(intake_s, 2),
        "profiles_projected": folded.patients,
        "project_s": round(time.perf_counter() - started, 2),
    }


# -- sandboxes in their own processes -----------------------------------------------------------
class MessagingSandbox:
    """`telecrm sandbox sendgrid|twilio --port N --rate R` in its own process on loopback."""

    def __init__(self, kind: str, rate: int) -> None:
        port = free_port()
        args = [sys.executable, "-m", "telecrm.cli", "sandbox", kind]
        args += ["--port", str(port), "--rate", str(rate)]
        self.kind, self.rate = kind, rate
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(1000):
            try:
                httpx.get(f"{self.url}/_sandbox/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.02)  # waiting for a process to start, not a timer under test
        self.proc.kill()
        raise RuntimeError(f"{kind} sandbox did not start")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sandbox/stats", timeout=60).json())

    def twilio_message_count(self) -> int:
        body = httpx.get(f"{self.url}/_sandbox/messages", timeout=300).json()
        return len(body["messages"])

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sandbox/reset", timeout=60).raise_for_status()
        self.set_latency(self.latency)

    latency: float = 0.0

    def set_latency(self, seconds: float) -> None:
        """Every API answer takes this long (the sandbox's latency knob): a real provider's
        round trip is tens of milliseconds, not loopback's fraction of one."""
        self.latency = seconds
        httpx.post(
            f"{self.url}/_sandbox/faults", json={"latency_seconds": seconds}, timeout=60
        ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# -- timing the provider calls ------------------------------------------------------------------
@dataclass
class Timed:
    """Wraps an EmailProvider or SmsProvider: the same object to the dispatcher, plus the seconds
    spent inside its send calls (HTTP round trips and the connector's own work) and batch sizes."""

    inner: Any
    batches: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)  # seconds of each send call
    spans: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def seconds(self) -> float:
        """Wall time with at least one send call in flight (calls overlap: the dispatcher keeps
        several Twilio calls going at once, so summing their durations would overcount)."""
        total, end = 0.0, float("-inf")
        for start, stop in sorted(self.spans):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def batch_max(self) -> int:
        return int(self.inner.batch_max)

    @property
    def stats(self) -> SendStats:
        return self.inner.stats

    def send_emails(self, messages: list[EmailMessage]) -> list[SendResult]:
        return self._timed(self.inner.send_emails, messages)

    def send_sms(self, messages: list[SmsMessage]) -> list[SendResult]:
        return self._timed(self.inner.send_sms, messages)

    def _timed(self, call: Callable[[Any], list[SendResult]], messages: Any) -> list[SendResult]:
        started = time.perf_counter()
        try:
            return call(messages)
        finally:
            ended = time.perf_counter()
            with self.lock:
                self.batches.append(len(messages))
                self.spans.append((started, ended))
                self.durations.append(ended - started)

    def call_ms(self) -> dict[str, float | None]:
        """Median call, and the mean of the first and last tenth of the calls (drift)."""
        d = self.durations
        if not d:
            return {"median": None, "first_tenth_mean": None, "last_tenth_mean": None}
        tenth = max(1, len(d) // 10)
        return {
            "median": round(statistics.median(d) * 1000, 3),
            "first_tenth_mean": round(statistics.fmean(d[:tenth]) * 1000, 3),
            "last_tenth_mean": round(statistics.fmean(d[-tenth:]) * 1000, 3),
        }


# -- the naive baseline -------------------------------------------------------------------------
def naive_context(rt: Runtime, data: dict[str, Any], message_id: str) -> dict[str, Any]:
    """What a hand-written integration has at hand: the registration's own data, our brand and
    links (the same context the dispatcher builds, minus the rules and the profile store)."""
    links = Links(rt.settings.platform_url)
    return {
        "patient": {k: v for k, v in data.items() if isinstance(v, str)},
        "event": build_event_variables("patient.registered", data),
        "links": links.for_message(message_id, {}),
        "brand": asdict(brand_of(rt.settings)),
        "secret": {},
        "message": {"id": message_id},
    }


def naive_send(
    rt: Runtime,
    catalog: TemplateCatalog,
    raw: list[dict[str, Any]],
    sendgrid_url: str,
    twilio_url: str,
) -> dict[str, Any]:
    """Per registration: render the welcome email and SMS with our templates, then one SendGrid
    SDK mail send and one Twilio SDK message create, in order. No rules, no recording."""
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Category, CustomArg, From, Mail, To
    from twilio.rest import Client

    s = rt.settings
    sg = SendGridAPIClient(api_key=SENDGRID_KEY, host=sendgrid_url)
    tw = Client(TWILIO.account_sid, TWILIO.auth_token)
    tw.api.base_url = twilio_url  # the Api domain's base (https://api.twilio.com by default)
    status_callback = PUBLIC_URL + STATUS_PATH
    seconds = {"email": 0.0, "sms": 0.0}  # render + build + send
    in_calls = {"email": 0.0, "sms": 0.0}  # building the SDK object and its call only
    counts = {"email": 0, "sms": 0}
    failures: list[str] = []
    started_all = time.perf_counter()
    for e in raw:
        data = e["data"]
        lang = data.get("language")
        started = time.perf_counter()
        mid = f"naive_{e['id']}_email"
        r = catalog.render_email("welcome", lang or "en", naive_context(rt, data, mid))
        sending = time.perf_counter()
        mail = Mail(
            from_email=From(s.sendgrid_from_email, s.sendgrid_from_name),
            to_emails=To(data["email"], data.get("first_name")),
            subject=r.subject,
            plain_text_content=r.text,
            html_content=r.html,
        )
        mail.category = Category("welcome")
        mail.custom_arg = CustomArg("telecrm_message_id", mid)
        response = sg.send(mail)  # raises python_http_client's HTTPError on 4xx/5xx
        if response.status_code != 202:
            failures.append(f"sendgrid {response.status_code}")
        counts["email"] += 1
        done = time.perf_counter()
        seconds["email"] += done - started
        in_calls["email"] += done - sending
        if not data["communication_preferences"].get("sms_consent"):
            continue  # even a naive integration honours the consent flag it was sent
        started = time.perf_counter()
        mid = f"naive_{e['id']}_sms"
        body = catalog.render_sms("welcome", lang or "en", naive_context(rt, data, mid)).body
        sending = time.perf_counter()
        msg = tw.messages.create(
            to=data["phone"],
            messaging_service_sid=TWILIO.messaging_service_sid,
            body=body,
            status_callback=status_callback,
        )
        if not msg.sid:
            failures.append("twilio no sid")
        counts["sms"] += 1
        done = time.perf_counter()
        seconds["sms"] += done - started
        in_calls["sms"] += done - sending
    wall = time.perf_counter() - started_all
    return {
        "wall_s": wall,
        "seconds": seconds,
        "in_calls": in_calls,
        "counts": counts,
        "failures": failures,
    }
