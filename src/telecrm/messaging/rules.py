"""The send rules every message goes through, in order, each leaving a verdict in the trail.

Pure: the planner gathers what the rules read (consent ledger, suppression, the patient's recent
messages, their timezone and quiet hours) and `decide` answers send now, send later (quiet hours)
or suppress, with the reason. `telecrm messages why ID` prints the trail.

1. address: an email address, or a valid E.164 phone, is on the profile;
2. suppression: the address has not hard-bounced, reported spam or been found invalid;
3. consent: for the message's channel and purpose (domain/consent.py);
4. duplicate: the same template on the same channel did not go to this patient within the
   dedupe window;
5. quiet hours: in the patient's own timezone (deferred to the window's next opening, never
   dropped); security messages are never deferred;
6. frequency cap: per channel and purpose, per calendar day in the patient's timezone and
   within 7 days either side, counted at the instant the message will go (a capped message is suppressed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from telecrm.domain.clock import from_micros, to_micros
from telecrm.domain.consent import ConsentBook
from telecrm.messaging.config import MessagingConfig
from telecrm.messaging.timezones import resolve

Action = Literal["send", "defer", "suppress"]
WEEK_US = 7 * 86_400_000_000


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    verdict: Literal["pass", "defer", "suppress", "skip"]
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "verdict": self.verdict, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the rules know of the patient: flags and settings, never the address itself."""

    address_present: bool
    address_valid: bool
    suppressed: str | None  # the suppression reason for this address, if any
    consent: ConsentBook
    timezone: Any = None
    state: Any = None
    quiet_start: Any = None  # the patient's own quiet period (HH:MM), if set
    quiet_end: Any = None


@dataclass(frozen=True, slots=True)
class Sent:
    """One of the patient's messages on this channel that counts (planned or gone)."""

    template: str
    purpose: str
    due_us: int


@dataclass(slots=True)
class Decision:
    action: Action
    due: datetime
    reason: str | None
    local_day: str
    trail: list[Verdict] = field(default_factory=list)

    def trail_json(self) -> list[dict[str, str]]:
        return [v.as_json() for v in self.trail]


def _window(config: MessagingConfig, r: Recipient) -> tuple[time, time, str]:
    """(allowed from, allowed until, where it came from)."""
    qs, qe = r.quiet_start, r.quiet_end
    if isinstance(qs, str) and isinstance(qe, str):
        try:  # the patient's quiet period is the window's complement
            return time.fromisoformat(qe), time.fromisoformat(qs), "the patient's quiet hours"
        except ValueError:
            pass
    start, end = config.quiet_hours.times()
    return start, end, "the default window"


def _inside(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    t = instant.astimezone(zone).time().replace(tzinfo=None)
    return (start <= t < end) if start < end else (t >= start or t < end)


def _openings(day: date, zone: ZoneInfo, start: time) -> list[datetime]:
    """The instants (UTC) at which the local clock shows `start` on `day`: none when it falls in
    a spring-forward gap, two when it falls in the repeated hour of a fall-back day."""
    wall = datetime.combine(day, start)
    out = []
    for fold in (0, 1):
        at = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if at.astimezone(zone).replace(tzinfo=None) == wall and at not in out:
            out.append(at)
    return out


def _transitions(since: datetime, zone: ZoneInfo, span: timedelta) -> list[datetime]:
    """The instants in [since, since + span] at which the zone's UTC offset changes (hourly
    samples, then bisection to the second: zones change offset at most a few times a year)."""

    def offset(seconds: int) -> timedelta | None:
        return datetime.fromtimestamp(seconds, UTC).astimezone(zone).utcoffset()

    out = []
    lo = int(since.timestamp())
    lo_off = offset(lo)
    for _ in range(int(span / timedelta(hours=1)) + 1):
        hi = lo + 3600
        hi_off = offset(hi)
        if hi_off != lo_off:
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                if offset(mid) == lo_off:
                    a = mid
                else:
                    b = mid
            out.append(datetime.fromtimestamp(b, UTC))
        lo, lo_off = hi, hi_off
    return out


def next_allowed(now: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """The first instant >= now inside [start, end) local time (a window may wrap midnight).

    Works on instants, not wall times, so DST days hold: the window opens when the local clock
    reaches `start` (twice in a repeated hour) or when a DST change moves the clock into the
    window (the end of a spring-forward gap, or a fall-back into it).
    """
    if start == end or _inside(now, zone, start, end):
        return now
    today = now.astimezone(zone).date()
    span = timedelta(days=3, hours=1)  # today's, tomorrow's or (a window in a gap) the next
    candidates = [
        at
        for at in (
            *(
                o
                for offset in (0, 1, 2)
                for o in _openings(today + timedelta(days=offset), zone, start)
            ),
            *_transitions(now, zone, span),
        )
        if at >= now and _inside(at, zone, start, end)
    ]
    return min(candidates, default=now + span)


def decide(
    *,
    channel: str,
    purpose: str,
    template: str,
    recipient: Recipient,
    history: Sequence[Sent],
    config: MessagingConfig,
    now: datetime,
) -> Decision:
    zone, zone_note = resolve(recipient.timezone, recipient.state, config.default_timezone)
    d = Decision("send", now, None, now.astimezone(zone).date().isoformat())

    def stop(rule: str, reason: str, detail: str) -> Decision:
        d.trail.append(Verdict(rule, "suppress", detail))
        d.action, d.reason = "suppress", reason
        return d

    # 1. address
    if not recipient.address_present:
        return stop("address", "no_address", f"the profile has no {_address_name(channel)}")
    if not recipient.address_valid:
        return stop("address", "invalid_phone", "the phone is not a valid E.164 number")
    d.trail.append(Verdict("address", "pass", f"{_address_name(channel)} on file"))
    # 2. suppression
    if recipient.suppressed:
        return stop(
            "suppression", "suppressed_address", f"address suppressed: {recipient.suppressed}"
        )
    d.trail.append(Verdict("suppression", "pass", "address not suppressed"))
    # 3. consent
    allowed, why = recipient.consent.allows(channel, purpose)
    if not allowed:
        return stop("consent", "no_consent", why)
    d.trail.append(Verdict("consent", "pass", why))
    if purpose == "security":
        for rule in ("duplicate", "quiet_hours", "frequency_cap"):
            d.trail.append(Verdict(rule, "skip", "security messages go at once"))
        return d
    # 4. duplicate
    window_us = int(config.dedupe_hours * 3_600_000_000)
    now_us = to_micros(now)
    if window_us and any(
        s.template == template and abs(now_us - s.due_us) < window_us for s in history
    ):
        return stop(
            "duplicate",
            "duplicate",
            f"{template} went to this patient on {channel} within {config.dedupe_hours:g} h",
        )
    d.trail.append(Verdict("duplicate", "pass", f"no {template} within {config.dedupe_hours:g} h"))
    # 5. quiet hours
    start, end, source = _window(config, recipient)
    due = next_allowed(now, zone, start, end)
    window_text = f"{start:%H:%M}-{end:%H:%M} from {source} ({zone_note})"
    if due > now:
        d.action, d.reason, d.due = "defer", "quiet_hours", due
        d.trail.append(
            Verdict(
                "quiet_hours",
                "defer",
                f"{now.astimezone(zone):%H:%M} local is outside {window_text}; "
                f"deferred to {due.astimezone(zone):%Y-%m-%d %H:%M} local",
            )
        )
    else:
        d.trail.append(Verdict("quiet_hours", "pass", f"inside {window_text}"))
    d.local_day = d.due.astimezone(zone).date().isoformat()
    # 6. frequency caps, counted at the instant it will go
    cap = config.cap(channel, purpose)  # type: ignore[arg-type]
    if cap is not None:
        due_us = to_micros(d.due)
        same = [s for s in history if s.purpose == purpose]
        today = sum(
            1
            for s in same
            if from_micros(s.due_us).astimezone(zone).date().isoformat() == d.local_day
        )
        # Within 7 days either side: messages already deferred to later count too.
        week = sum(1 for s in same if abs(s.due_us - due_us) < WEEK_US)
        if today >= cap.per_day:
            return stop(
                "frequency_cap",
                "capped",
                f"{today} {purpose} {channel} message(s) on {d.local_day} (cap {cap.per_day}/day)",
            )
        if week >= cap.per_week:
            return stop(
                "frequency_cap",
                "capped",
                f"{week} {purpose} {channel} message(s) in 7 days (cap {cap.per_week}/week)",
            )
        d.trail.append(
            Verdict(
                "frequency_cap",
                "pass",
                f"{today}/{cap.per_day} today, {week}/{cap.per_week} this week",
            )
        )
    return d


def _address_name(channel: str) -> str:
    return "email address" if channel == "email" else "phone number"
