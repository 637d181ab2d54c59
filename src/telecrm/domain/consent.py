"""Consent per channel and purpose, from an append-only ledger of grants and revocations.

Pure: no I/O. The latest entry per (channel, purpose) is the patient's consent. Defaults when
nothing is recorded (DESIGN.md §5, research/messaging.md §7): a transactional email needs no
opt-in; an SMS needs prior express consent; marketing needs marketing consent on that channel,
and the channel's own consent too. Security messages (password reset, two-factor code) go to
the address the platform named, but never to a number that texted STOP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Channel = Literal["email", "sms"]
ConsentPurpose = Literal["transactional", "marketing"]

DEFAULT_GRANTED: dict[tuple[str, str], bool] = {
    ("email", "transactional"): True,
    ("email", "marketing"): False,
    ("sms", "transactional"): False,
    ("sms", "marketing"): False,
}

# Which profile flag is the platform's word on which (channel, purpose) pairs.
PROFILE_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "email_consent": (("email", "transactional"),),
    "sms_consent": (("sms", "transactional"),),
    "marketing_consent": (("email", "marketing"), ("sms", "marketing")),
}


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    channel: str
    purpose: str
    granted: bool
    source: str
    evidence: str
    at_us: int


@dataclass(frozen=True, slots=True)
class ConsentState:
    granted: bool
    source: str  # "default" when nothing is recorded
    at_us: int | None


class ConsentBook:
    """A patient's consent, from their ledger entries (any order)."""

    def __init__(self, entries: Iterable[ConsentEntry]) -> None:
        latest: dict[tuple[str, str], ConsentEntry] = {}
        self.latest_from_profile: dict[tuple[str, str], bool] = {}
        for e in sorted(entries, key=lambda e: e.at_us):
            latest[(e.channel, e.purpose)] = e
            if e.source == "profile":
                self.latest_from_profile[(e.channel, e.purpose)] = e.granted
        self._latest = latest

    def state(self, channel: str, purpose: str) -> ConsentState:
        entry = self._latest.get((channel, purpose))
        if entry is None:
            return ConsentState(DEFAULT_GRANTED[(channel, purpose)], "default", None)
        return ConsentState(entry.granted, entry.source, entry.at_us)

    def allows(self, channel: str, purpose: str) -> tuple[bool, str]:
        """(allowed, why) for a message of `purpose` on `channel`."""
        base = self.state(channel, "transactional")
        if purpose == "security":
            if channel == "sms" and not base.granted and base.source != "default":
                return False, f"the number opted out ({base.source})"
            return True, "security messages go to the address the platform named"
        if not base.granted:
            return False, f"no {channel} consent ({base.source})"
        if purpose == "marketing":
            marketing = self.state(channel, "marketing")
            if not marketing.granted:
                return False, f"no marketing consent on {channel} ({marketing.source})"
            return True, f"{channel} and marketing consent ({marketing.source})"
        return True, f"{channel} consent ({base.source})"

    def profile_changes(self, flags: dict[str, object], at_us: int) -> list[ConsentEntry]:
        """Ledger entries for profile consent flags that differ from what the ledger last heard
        from the profile: the platform's word is evidence too, with the time we saw it."""
        out: list[ConsentEntry] = []
        for flag, pairs in PROFILE_FLAGS.items():
            value = flags.get(flag)
            if not isinstance(value, bool):
                continue
            for channel, purpose in pairs:
                if self.latest_from_profile.get((channel, purpose)) != value:
                    out.append(
                        ConsentEntry(channel, purpose, value, "profile", f"profile.{flag}", at_us)
                    )
        return out
