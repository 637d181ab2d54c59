"""What a check reports: its status, what it found and what to do, never a secret's value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from telecrm.domain.clock import Clock
from telecrm.settings import Settings

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    advice: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What the checks look at. Two environments, because telecrm reads two: `Settings` takes
    the process environment and `.env`, the variables a mapping or a journey names come from the
    process environment alone."""

    settings: Settings
    environ: Mapping[str, str]
    settings_environ: Mapping[str, str | None]  # upper-cased names, `.env` included
    clock: Clock


def failed(findings: list[Finding]) -> bool:
    return any(f.status == "fail" for f in findings)
