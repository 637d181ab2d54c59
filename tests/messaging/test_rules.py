"""The pure send rules: quiet hours (incl. DST days), each rule's verdict, timezones, caps per
local day, the consent ledger (with a model-based state machine) and messaging config errors."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from telecrm.domain.clock import to_micros
from telecrm.domain.consent import DEFAULT_GRANTED, ConsentBook, ConsentEntry
from telecrm.messaging.config import (
    Cap,
    MessagingConfig,
    MessagingConfigError,
    Window,
    load_messaging_config,
)
from telecrm.messaging.rules import Recipient, Sent, decide, next_allowed

NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")
RULES = ("address", "suppression", "consent", "duplicate", "quiet_hours", "frequency_cap")


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    """A wall-clock time in `zone`, as the UTC instant it is."""
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def inside(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """Whether the wall-clock time at `instant` (a real instant, not a wall time) is in [start, end)."""
    t = instant.astimezone(UTC).astimezone(zone).time().replace(tzinfo=None)
    if start == end:
        return True
    return start <= t < end if start < end else (t >= start or t < end)


# -- next_allowed -------------------------------------------------------------------------------
def test_inside_the_window_is_now() -> None:
    now = local(NY, 2026, 3, 2, 12, 0)
    assert next_allowed(now, NY, time(8), time(21)) == now


def test_before_the_window_opens_today_and_after_it_opens_tomorrow() -> None:
    early = local(NY, 2026, 3, 2, 6, 15)
    assert next_allowed(early, NY, time(8), time(21)) == local(NY, 2026, 3, 2, 8, 0)
    late = local(NY, 2026, 3, 2, 21, 0)  # the end is exclusive
    assert next_allowed(late, NY, time(8), time(21)) == local(NY, 2026, 3, 3, 8, 0)


def test_a_window_wrapping_midnight() -> None:
    start, end = time(22), time(6)  # allowed 22:00-06:00 (a night-shift patient)
    assert next_allowed(local(NY, 2026, 3, 2, 23, 0), NY, start, end) == local(
        NY, 2026, 3, 2, 23, 0
    )
    assert next_allowed(local(NY, 2026, 3, 3, 5, 59), NY, start, end) == local(
        NY, 2026, 3, 3, 5, 59
    )
    assert next_allowed(local(NY, 2026, 3, 3, 6, 0), NY, start, end) == local(NY, 2026, 3, 3, 22, 0)


def test_an_empty_quiet_period_never_defers() -> None:
    now = local(NY, 2026, 3, 2, 3, 0)
    assert next_allowed(now, NY, time(0), time(0)) == now


def test_an_opening_inside_the_spring_forward_gap() -> None:
    # 2026-03-08 America/New_York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    now = local(NY, 2026, 3, 8, 1, 0)
    due = next_allowed(now, NY, time(2, 30), time(21))
    assert due >= now and inside(due, NY, time(2, 30), time(21))
    assert due == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT: the first instant after 02:30


def test_a_window_that_does_not_exist_on_the_spring_forward_day_opens_the_next_day() -> None:
    now = local(NY, 2026, 3, 8, 1, 0)
    due = next_allowed(now, NY, time(2), time(2, 30))
    assert inside(due, NY, time(2), time(2, 30))
    assert due == local(NY, 2026, 3, 9, 2, 0)


def test_the_repeated_hour_of_the_fall_back_day() -> None:
    # 2026-11-01 America/New_York: 01:00-02:00 happens twice (EDT, then EST).
    second_pass = local(NY, 2026, 11, 1, 1, 10, fold=1)  # 01:10 EST, after 01:30 EDT went by
    due = next_allowed(second_pass, NY, time(1, 30), time(21))
    assert inside(due, NY, time(1, 30), time(21))
    assert due == local(NY, 2026, 11, 1, 1, 30, fold=1)  # 01:30 EST, 40 minutes later
    first_pass = local(NY, 2026, 11, 1, 1, 40)  # 01:40 EDT, window 01:30-01:35 just closed
    due = next_allowed(first_pass, NY, time(1, 30), time(1, 35))
    assert due == local(NY, 2026, 11, 1, 1, 30, fold=1)  # it opens again an hour later


ZONES = (
    "America/New_York", "America/Los_Angeles", "America/Chicago", "America/Denver",
    "America/Phoenix", "America/Anchorage", "Pacific/Honolulu", "Europe/London", "Europe/Berlin",
    "Australia/Sydney", "Australia/Lord_Howe", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Chatham",
    "America/St_Johns", "America/Santiago", "UTC",
)  # fmt: skip
# DST transition days (2026) of those zones, plus an ordinary one.
DAYS = (
    date(2026, 3, 8), date(2026, 11, 1), date(2026, 3, 29), date(2026, 10, 25),
    date(2026, 4, 5), date(2026, 10, 4), date(2026, 9, 27), date(2026, 4, 4), date(2026, 9, 6),
    date(2026, 6, 15),
)  # fmt: skip
# Quiet-hour edges near the transitions are where a wall-clock time is missing or doubled.
minutes = st.one_of(
    st.integers(0, 24 * 60 - 1),
    st.sampled_from([0, 30, 60, 90, 110, 120, 130, 150, 170, 180, 190, 1439]),
)


# A local wall time on one of those days (folded or not), often in the small hours.
wall = st.one_of(st.integers(-12 * 60, 36 * 60), st.integers(0, 4 * 60))


@settings(max_examples=500, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    day=st.sampled_from(DAYS),
    wall_m=wall,
    fold=st.integers(0, 1),
    second=st.integers(0, 59),
    start_m=minutes,
    end_m=minutes,
)
@example("America/New_York", date(2026, 11, 1), 70, 1, 0, 90, 21 * 60)  # repeated hour
@example("America/New_York", date(2026, 11, 1), 100, 0, 0, 90, 95)
@example("America/New_York", date(2026, 11, 1), 61, 0, 0, 0, 61)  # falls back into it
@example("America/New_York", date(2026, 3, 8), 60, 0, 0, 120, 150)  # window in the gap
@example("America/New_York", date(2026, 3, 8), 60, 0, 0, 150, 21 * 60)  # opening in the gap
def test_next_allowed_is_the_first_instant_inside_the_window(
    zone_name: str, day: date, wall_m: int, fold: int, second: int, start_m: int, end_m: int
) -> None:
    zone = ZoneInfo(zone_name)
    naive = datetime.combine(day, time(0)) + timedelta(minutes=wall_m, seconds=second)
    now = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    start, end = time(*divmod(start_m, 60)), time(*divmod(end_m, 60))
    due = next_allowed(now, zone, start, end)
    assert due >= now
    assert inside(due, zone, start, end)
    if inside(now, zone, start, end):
        assert due == now
    assert due - now < timedelta(days=3)
    # the first such instant: every minute step between now and `due` is outside the window
    step = now
    while step < due:
        assert not inside(step, zone, start, end), (step, due)
        step += timedelta(minutes=1)


# -- decide -------------------------------------------------------------------------------------
CONFIG = MessagingConfig(
    quiet_hours=Window(start="08:00", end="21:00"),
    default_timezone="America/New_York",
    caps={
        "email": {
            "transactional": Cap(per_day=10, per_week=40),
            "marketing": Cap(per_day=1, per_week=3),
        },
        "sms": {
            "transactional": Cap(per_day=2, per_week=5),
            "marketing": Cap(per_day=1, per_week=3),
        },
    },
    dedupe_hours=24,
)
ALWAYS_OPEN = CONFIG.model_copy(update={"quiet_hours": Window(start="00:00", end="00:00")})
NOON_NY = local(NY, 2026, 3, 2, 12, 0)
CONSENTING = ConsentBook(
    [
        ConsentEntry("sms", "transactional", True, "profile", "profile.sms_consent", 1),
        ConsentEntry("email", "marketing", True, "profile", "profile.marketing_consent", 1),
        ConsentEntry("sms", "marketing", True, "profile", "profile.marketing_consent", 1),
    ]
)


def patient(**overrides: object) -> Recipient:
    base: dict[str, object] = {
        "address_present": True,
        "address_valid": True,
        "suppressed": None,
        "consent": CONSENTING,
        "timezone": "America/New_York",
        "state": None,
    }
    return Recipient(**(base | overrides))  # type: ignore[arg-type]


def run(
    recipient: Recipient | None = None,
    *,
    channel: str = "sms",
    purpose: str = "transactional",
    template: str = "refill_reminder",
    history: list[Sent] | None = None,
    now: datetime = NOON_NY,
    config: MessagingConfig = CONFIG,
):  # type: ignore[no-untyped-def]
    return decide(
        channel=channel,
        purpose=purpose,
        template=template,
        recipient=recipient or patient(),
        history=history or [],
        config=config,
        now=now,
    )


def test_a_message_that_passes_every_rule_is_sent_now_with_a_verdict_per_rule() -> None:
    d = run()
    assert (d.action, d.reason, d.due, d.local_day) == ("send", None, NOON_NY, "2026-03-02")
    assert [v.rule for v in d.trail] == list(RULES)
    assert all(v.verdict == "pass" for v in d.trail)


@pytest.mark.parametrize(
    ("recipient", "channel", "purpose", "rule", "reason"),
    [
        (patient(address_present=False), "sms", "transactional", "address", "no_address"),
        (patient(address_present=False), "email", "transactional", "address", "no_address"),
        (patient(address_valid=False), "sms", "transactional", "address", "invalid_phone"),
        (patient(suppressed="hard_bounce"), "email", "transactional", "suppression",
         "suppressed_address"),
        (patient(suppressed="opted_out"), "sms", "security", "suppression", "suppressed_address"),
        (patient(consent=ConsentBook([])), "sms", "transactional", "consent", "no_consent"),
        (patient(consent=ConsentBook([])), "email", "marketing", "consent", "no_consent"),
    ],
)  # fmt: skip
def test_each_rule_suppresses_with_its_reason_and_names_itself_last_in_the_trail(
    recipient: Recipient, channel: str, purpose: str, rule: str, reason: str
) -> None:
    d = run(recipient, channel=channel, purpose=purpose)
    assert (d.action, d.reason) == ("suppress", reason)
    assert d.trail[-1].rule == rule and d.trail[-1].verdict == "suppress"
    assert [v.rule for v in d.trail] == list(RULES[: RULES.index(rule) + 1])


def test_the_address_verdict_never_holds_the_address() -> None:
    d = run(patient(address_valid=False))
    assert "+1" not in orjson.dumps(d.trail_json()).decode()


def test_the_same_template_within_the_dedupe_window_is_a_duplicate() -> None:
    before = [Sent("refill_reminder", "transactional", to_micros(NOON_NY - timedelta(hours=23)))]
    d = run(history=before)
    assert (d.action, d.reason, d.trail[-1].rule) == ("suppress", "duplicate", "duplicate")
    long_ago = [Sent("refill_reminder", "transactional", to_micros(NOON_NY - timedelta(hours=25)))]
    assert run(history=long_ago).action == "send"
    other = [Sent("welcome", "transactional", to_micros(NOON_NY - timedelta(hours=1)))]
    assert run(history=other).action == "send"


def test_outside_quiet_hours_the_message_is_deferred_to_the_local_opening_never_dropped() -> None:
    night = local(LA, 2026, 3, 2, 1, 0)
    d = run(patient(timezone="America/Los_Angeles"), now=night)
    assert (d.action, d.reason) == ("defer", "quiet_hours")
    assert d.due == local(LA, 2026, 3, 2, 8, 0)
    assert d.local_day == "2026-03-02"
    q = next(v for v in d.trail if v.rule == "quiet_hours")
    assert q.verdict == "defer" and "2026-03-02 08:00 local" in q.detail
    assert d.trail[-1].rule == "frequency_cap"  # a deferred message still faces the caps


def test_the_patients_own_quiet_hours_replace_the_default_window() -> None:
    at_8pm = local(NY, 2026, 3, 2, 20, 0)
    d = run(patient(quiet_start="19:00", quiet_end="09:00"), now=at_8pm)
    assert d.action == "defer" and d.due == local(NY, 2026, 3, 3, 9, 0)
    assert "the patient's quiet hours" in d.trail[-2].detail
    unreadable = run(patient(quiet_start="late", quiet_end="09:00"), now=at_8pm)
    assert unreadable.action == "send" and "the default window" in unreadable.trail[-2].detail


def test_security_messages_skip_duplicate_quiet_hours_and_caps() -> None:
    three_am = local(NY, 2026, 3, 2, 3, 0)
    busy = [
        Sent("two_factor_code", "security", to_micros(three_am - timedelta(minutes=m)))
        for m in range(1, 20)
    ]
    d = run(purpose="security", template="two_factor_code", history=busy, now=three_am)
    assert (d.action, d.due, d.reason) == ("send", three_am, None)
    skipped = {v.rule: v.verdict for v in d.trail[3:]}
    assert skipped == {"duplicate": "skip", "quiet_hours": "skip", "frequency_cap": "skip"}


def test_security_sms_without_any_consent_goes_but_not_after_a_stop() -> None:
    assert run(patient(consent=ConsentBook([])), purpose="security").action == "send"
    stopped = ConsentBook([ConsentEntry("sms", "transactional", False, "sms_keyword", "x", 5)])
    d = run(patient(consent=stopped), purpose="security")
    assert (d.action, d.reason, d.trail[-1].rule) == ("suppress", "no_consent", "consent")
    assert "sms_keyword" in d.trail[-1].detail


@pytest.mark.parametrize(
    ("timezone", "state", "zone", "note"),
    [
        ("America/Los_Angeles", "NY", LA, "patient timezone America/Los_Angeles"),
        ("Mars/Olympus", "CA", LA, "timezone is not an IANA timezone; used America/Los_Angeles "
         "from the patient's state"),
        (None, "CA", LA, "timezone is missing; used America/Los_Angeles from the patient's state"),
        ("", "CA", LA, "timezone is missing; used America/Los_Angeles from the patient's state"),
        ("Mars/Olympus", None, NY, "timezone is not an IANA timezone; used the default "
         "America/New_York"),
        (None, "ZZ", NY, "timezone is missing; used the default America/New_York"),
        (42, None, NY, "timezone is missing; used the default America/New_York"),
    ],
)  # fmt: skip
def test_the_timezone_falls_back_to_the_state_then_the_default_and_the_trail_says_so(
    timezone: object, state: object, zone: ZoneInfo, note: str
) -> None:
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 07:00 in LA (deferred), 10:00 in NY (open)
    d = run(patient(timezone=timezone, state=state), now=now)
    assert d.action == ("defer" if zone is LA else "send")
    quiet = next(v for v in d.trail if v.rule == "quiet_hours")
    assert note in quiet.detail
    if timezone is not None and timezone != "America/Los_Angeles":
        trail = orjson.dumps(d.trail_json()).decode()
        assert f'"{state}"' not in trail and f" {state} " not in trail and f"({state})" not in trail


def test_the_trail_never_names_the_patients_state() -> None:
    d = run(patient(timezone="Nowhere/Special", state="WY"), now=NOON_NY)
    assert "WY" not in orjson.dumps(d.trail_json()).decode()
    assert "America/Denver from the patient's state" in d.trail[-2].detail


@pytest.mark.parametrize("name", ["America", "US", "Etc", "A" * 300])
def test_a_timezone_naming_a_tzdata_directory_falls_back_instead_of_crashing(name: str) -> None:
    d = run(patient(timezone=name, state="CA"), now=NOON_NY)
    assert "timezone is not an IANA timezone" in d.trail[-2].detail


def test_caps_count_per_calendar_day_in_the_patients_timezone() -> None:
    one_a_day = ALWAYS_OPEN.model_copy(
        update={"caps": {"sms": {"transactional": Cap(per_day=1, per_week=10)}}}
    )
    # 23:30 and 00:30 New York time: one UTC day (04:30Z, 05:30Z), two local days.
    late = local(NY, 2026, 3, 2, 23, 30)
    after_midnight = local(NY, 2026, 3, 3, 0, 30)
    assert late.date() == after_midnight.date()
    history = [Sent("welcome", "transactional", to_micros(late))]
    d = run(history=history, now=after_midnight, config=one_a_day)
    assert (d.action, d.local_day) == ("send", "2026-03-03")
    assert d.trail[-1].detail.startswith("0/1 today")
    same_day = run(history=history, now=local(NY, 2026, 3, 2, 23, 50), config=one_a_day)
    assert (same_day.action, same_day.reason) == ("suppress", "capped")
    assert same_day.trail[-1].rule == "frequency_cap" and "2026-03-02" in same_day.trail[-1].detail


def test_caps_count_on_the_day_a_deferred_message_will_go() -> None:
    one_a_day = CONFIG.model_copy(
        update={"caps": {"sms": {"transactional": Cap(per_day=1, per_week=10)}}}
    )
    tomorrow_8am = local(NY, 2026, 3, 3, 8, 0)
    already = [Sent("welcome", "transactional", to_micros(tomorrow_8am))]  # deferred earlier
    d = run(history=already, now=local(NY, 2026, 3, 2, 22, 0), config=one_a_day)
    assert (d.action, d.reason, d.local_day) == ("suppress", "capped", "2026-03-03")
    earlier = [Sent("welcome", "transactional", to_micros(local(NY, 2026, 3, 2, 9, 0)))]
    assert run(history=earlier, now=local(NY, 2026, 3, 2, 22, 0), config=one_a_day).action == (
        "defer"
    )


def test_the_weekly_cap_and_purposes_counted_apart() -> None:
    week = [
        Sent(f"t{i}", "transactional", to_micros(NOON_NY - timedelta(days=i))) for i in range(1, 6)
    ]
    d = run(history=week)
    assert (d.action, d.reason) == ("suppress", "capped") and "in 7 days" in d.trail[-1].detail
    eight_days = [Sent("t", "transactional", to_micros(NOON_NY - timedelta(days=8)))] * 5
    assert run(history=eight_days).action == "send"
    marketing = [
        Sent(f"m{i}", "marketing", to_micros(NOON_NY - timedelta(hours=i))) for i in (1, 2)
    ]
    assert run(history=marketing).action == "send"  # marketing does not use the transactional cap
    assert run(history=marketing, purpose="marketing", template="m9").reason == "capped"


# -- ConsentBook --------------------------------------------------------------------------------
def entry(channel: str, purpose: str, granted: bool, at: int, source: str = "api") -> ConsentEntry:
    return ConsentEntry(channel, purpose, granted, source, f"{source}:{at}", at)


def test_the_defaults_when_nothing_is_recorded() -> None:
    book = ConsentBook([])
    assert book.allows("email", "transactional")[0] is True
    assert book.allows("sms", "transactional")[0] is False
    assert book.allows("email", "marketing")[0] is False
    assert book.allows("sms", "marketing")[0] is False
    assert book.allows("email", "security")[0] is True
    assert book.allows("sms", "security")[0] is True
    assert book.state("sms", "transactional").source == "default"


def test_the_latest_entry_wins_whatever_the_order_they_come_in() -> None:
    entries = [
        entry("sms", "transactional", True, 30),
        entry("sms", "transactional", False, 10, "sms_keyword"),
        entry("sms", "transactional", False, 20, "sms_keyword"),
    ]
    state = ConsentBook(entries).state("sms", "transactional")
    assert (state.granted, state.source, state.at_us) == (True, "api", 30)
    assert ConsentBook(reversed(entries)).state("sms", "transactional") == state


def test_marketing_needs_the_channels_own_consent_too() -> None:
    only_marketing = ConsentBook([entry("sms", "marketing", True, 1)])
    allowed, why = only_marketing.allows("sms", "marketing")
    assert not allowed and "no sms consent" in why
    both = ConsentBook([entry("sms", "marketing", True, 1), entry("sms", "transactional", True, 1)])
    assert both.allows("sms", "marketing")[0]
    unsubscribed = ConsentBook(
        [entry("email", "marketing", True, 1), entry("email", "transactional", False, 2)]
    )
    assert not unsubscribed.allows("email", "marketing")[0]


def test_security_sms_is_blocked_only_by_an_explicit_revocation() -> None:
    assert ConsentBook([]).allows("sms", "security")[0]
    assert ConsentBook([entry("sms", "marketing", False, 1)]).allows("sms", "security")[0]
    revoked = ConsentBook([entry("sms", "transactional", False, 1, "sms_keyword")])
    assert revoked.allows("sms", "security") == (False, "the number opted out (sms_keyword)")
    restarted = ConsentBook(
        [
            entry("sms", "transactional", False, 1, "sms_keyword"),
            entry("sms", "transactional", True, 2, "sms_keyword"),
        ]
    )
    assert restarted.allows("sms", "security")[0]
    email_unsub = ConsentBook([entry("email", "transactional", False, 1, "sendgrid_unsubscribe")])
    assert email_unsub.allows("email", "security")[0]


def test_profile_changes_only_emit_flags_that_changed() -> None:
    book = ConsentBook([])
    first = book.profile_changes(
        {"sms_consent": True, "email_consent": True, "marketing_consent": False}, 100
    )
    assert {(e.channel, e.purpose, e.granted) for e in first} == {
        ("sms", "transactional", True),
        ("email", "transactional", True),
        ("email", "marketing", False),
        ("sms", "marketing", False),
    }
    assert all(e.source == "profile" and e.at_us == 100 for e in first)
    assert {e.evidence for e in first} == {
        "profile.sms_consent",
        "profile.email_consent",
        "profile.marketing_consent",
    }
    after = ConsentBook(first)
    same = {"sms_consent": True, "email_consent": True, "marketing_consent": False}
    assert after.profile_changes(same, 200) == []
    changed = after.profile_changes({**same, "sms_consent": False}, 200)
    assert [(e.channel, e.purpose, e.granted) for e in changed] == [("sms", "transactional", False)]
    assert after.profile_changes({"sms_consent": "yes", "email_consent": None}, 200) == []


def test_a_stale_profile_flag_does_not_undo_a_stop() -> None:
    book = ConsentBook(
        [
            entry("sms", "transactional", True, 1, "profile"),
            entry("sms", "transactional", False, 2, "sms_keyword"),
        ]
    )
    assert book.profile_changes({"sms_consent": True}, 3) == []
    assert not book.allows("sms", "transactional")[0]


PAIRS = [(c, p) for c in ("email", "sms") for p in ("transactional", "marketing")]
SOURCES = ("profile", "sms_keyword", "sms_revocation", "sendgrid_unsubscribe", "api")


def model_allows(latest: dict[tuple[str, str], ConsentEntry], channel: str, purpose: str) -> bool:
    base = latest.get((channel, "transactional"))
    if purpose == "security":
        return not (channel == "sms" and base is not None and not base.granted)
    if not (base.granted if base else DEFAULT_GRANTED[(channel, "transactional")]):
        return False
    if purpose == "marketing":
        m = latest.get((channel, "marketing"))
        return m.granted if m else DEFAULT_GRANTED[(channel, "marketing")]
    return True


class ConsentLedgerMachine(RuleBasedStateMachine):
    """Random grants, revocations and profile syncs, against a plain dict of latest entries."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[ConsentEntry] = []
        self.latest: dict[tuple[str, str], ConsentEntry] = {}
        self.profile_said: dict[tuple[str, str], bool] = {}
        self.now = 0

    def _add(self, e: ConsentEntry) -> None:
        self.entries.append(e)
        self.latest[(e.channel, e.purpose)] = e
        if e.source == "profile":
            self.profile_said[(e.channel, e.purpose)] = e.granted

    @rule(pair=st.sampled_from(PAIRS), granted=st.booleans(), source=st.sampled_from(SOURCES),
          gap=st.integers(1, 10**9))  # fmt: skip
    def record(self, pair: tuple[str, str], granted: bool, source: str, gap: int) -> None:
        self.now += gap
        self._add(entry(pair[0], pair[1], granted, self.now, source))

    @rule(
        flags=st.fixed_dictionaries(
            {},
            optional={
                "email_consent": st.booleans(),
                "sms_consent": st.booleans(),
                "marketing_consent": st.booleans(),
            },
        )
    )
    def profile_sync(self, flags: dict[str, bool]) -> None:
        self.now += 1
        changes = ConsentBook(self.entries).profile_changes(flags, self.now)
        pairs_of = {
            "email_consent": [("email", "transactional")],
            "sms_consent": [("sms", "transactional")],
            "marketing_consent": [("email", "marketing"), ("sms", "marketing")],
        }
        expected = {
            (c, p, value)
            for flag, value in flags.items()
            for c, p in pairs_of[flag]
            if self.profile_said.get((c, p)) != value
        }
        assert {(e.channel, e.purpose, e.granted) for e in changes} == expected
        assert len(changes) == len(expected)
        for e in changes:
            self._add(e)

    @rule(seed=st.integers(0, 2**32))
    def any_order(self, seed: int) -> None:
        shuffled = list(self.entries)
        random.Random(seed).shuffle(shuffled)
        book = ConsentBook(shuffled)
        for c, p in PAIRS:
            assert book.state(c, p) == ConsentBook(self.entries).state(c, p)

    @invariant()
    def matches_the_model(self) -> None:
        book = ConsentBook(self.entries)
        for c, p in PAIRS:
            state = book.state(c, p)
            e = self.latest.get((c, p))
            assert state.granted == (e.granted if e else DEFAULT_GRANTED[(c, p)])
            assert state.source == (e.source if e else "default")
        for c in ("email", "sms"):
            for p in ("transactional", "marketing", "security"):
                assert book.allows(c, p)[0] == model_allows(self.latest, c, p), (c, p)


TestConsentLedger = ConsentLedgerMachine.TestCase
TestConsentLedger.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)


# -- MessagingConfig loading --------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "messaging.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> MessagingConfigError:
    with pytest.raises(MessagingConfigError) as caught:
        load_messaging_config(path)
    return caught.value


def test_the_built_in_configuration_loads() -> None:
    config = load_messaging_config()
    assert config.quiet_hours.times() == (time(8), time(21))
    assert config.cap("sms", "security") is None


def test_an_unknown_trigger_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\n"
        "triggers:\n"
        "  patient.registered:\n"
        "    - {template: welcome, channel: email}\n"
        "  patient.exploded:\n"
        "    - {template: welcome, channel: email}\n",
    )
    err = config_error(path)
    assert (err.field, err.line) == ("triggers.patient.exploded", 5)
    assert str(err).startswith(f"{path}:5: triggers.patient.exploded: not a trigger; the triggers")


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        ('version: 1\nquiet_hours:\n  start: "08:00"\n  end: "25:00"\n', 4, "quiet_hours.end",
         "expected HH:MM (24 h), got '25:00'"),
        ('version: 1\nquiet_hours: {start: "8:00", end: "21:00"}\n', 2, "quiet_hours.start",
         "expected HH:MM (24 h), got '8:00'"),
        ("version: 1\ndefault_timezone: Mars/Olympus_Mons\n", 2, "default_timezone",
         "'Mars/Olympus_Mons' is not an IANA timezone name"),
        ("version: 1\ntriggers:\n  order.paid:\n    - {template: Bad-Name, channel: email}\n", 4,
         "triggers.order.paid[0].template", "String should match pattern"),
        ("version: 1\ncaps:\n  sms:\n    transactional: {per_day: -1, per_week: 1}\n", 4,
         "caps.sms.transactional.per_day", "greater than or equal to 0"),
        ("version: 1\ndedupe_hours: lots\n", 2, "dedupe_hours", "valid number"),
    ],
)  # fmt: skip
def test_a_bad_value_names_the_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, problem: str
) -> None:
    path = write(tmp_path, text)
    err = config_error(path)
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    assert str(err).startswith(f"{path}:{line}: {field}: ")


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ntriggers:\n  order.paid: [\n    {template: x\n")
    err = config_error(path)
    assert err.path == str(path) and err.line is not None and err.line >= 3
    assert "not valid YAML" in str(err) and str(err).startswith(f"{path}:{err.line}: ")


def test_an_unknown_channel_in_caps_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, "version: 1\ncaps:\n  fax:\n    transactional: {per_day: 1, per_week: 1}\n"
    )
    err = config_error(path)
    assert err.line == 3 and err.field.startswith("caps.fax")
    assert "Input should be 'email' or 'sms'" in err.problem


def test_not_a_mapping_and_a_missing_file(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "- just\n- a list\n"))
    assert err.line == 1 and "expected a mapping" in err.problem
    missing = config_error(tmp_path / "nope.yaml")
    assert missing.line is None and "cannot read the file" in missing.problem


def test_a_default_timezone_naming_a_tzdata_directory_is_a_config_error(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "version: 1\ndefault_timezone: America\n"))
    assert (err.line, err.field) == (2, "default_timezone")
    assert err.problem == "'America' is not an IANA timezone name"


def test_a_hosted_sendgrid_template_must_stand_for_one_of_our_email_templates(
    tmp_path: Path,
) -> None:
    from telecrm.messaging.config import check_templates, load_messaging_config

    path = write(tmp_path, "version: 1\nsendgrid_templates:\n  welcome: d-" + "0" * 32 + "\n")
    config = load_messaging_config(path)
    check_templates(config, {("welcome", "email")})  # fine
    with pytest.raises(MessagingConfigError) as refused:
        check_templates(config, {("welcome", "sms")})
    assert refused.value.field == "sendgrid_templates.welcome"
    bad = write(tmp_path, "version: 1\nsendgrid_templates:\n  welcome: not-an-id\n")
    assert config_error(bad).field == "sendgrid_templates.welcome"
