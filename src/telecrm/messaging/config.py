"""The messaging configuration: trigger → messages, quiet hours, caps, dedupe window, groups.

Built-in defaults live in `config/messaging.yaml`; `TELECRM_MESSAGING_CONFIG` points at a copy.
Errors name the file, the line and the field, like mapping errors do. Which trigger sends which
template is configuration, not code (issue 5 §6).
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from telecrm.domain.events import TRIGGERS
from telecrm.sync.yaml_lines import dotted, line_of, read_yaml_mapping

BUILTIN = Path(__file__).parent / "config" / "messaging.yaml"
Channel = Literal["email", "sms"]
Purpose = Literal["transactional", "marketing", "security"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class MessagingConfigError(ValueError):
    def __init__(self, path: str, line: int | None, field: str, problem: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Send(_Model):
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]
    channel: Channel
    when: dict[str, str | int | bool] = Field(default_factory=dict)

    def matches(self, data: dict[str, Any]) -> bool:
        return all(data.get(key) == value for key, value in self.when.items())


class Window(_Model):
    start: str = "08:00"
    end: str = "21:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"expected HH:MM (24 h), got {value!r}")
        return value

    def times(self) -> tuple[time, time]:
        return time.fromisoformat(self.start), time.fromisoformat(self.end)


class Cap(_Model):
    per_day: int = Field(ge=0, le=1000)
    per_week: int = Field(ge=0, le=7000)


class MessagingConfig(_Model):
    version: Literal[1] = 1
    path: str = "<built-in>"
    triggers: dict[str, list[Send]] = Field(default_factory=dict)
    quiet_hours: Window = Window()
    default_timezone: str = "America/New_York"
    caps: dict[Channel, dict[Literal["transactional", "marketing"], Cap]] = Field(
        default_factory=dict
    )
    dedupe_hours: float = Field(24, ge=0, le=24 * 90)
    unsubscribe_groups: dict[Literal["transactional", "marketing"], str] = Field(
        default_factory=dict
    )
    # Optional: email templates SendGrid renders (dynamic templates made in its editor), by our
    # template name. They receive only the variables our own template of that name uses.
    sendgrid_templates: dict[str, Annotated[str, Field(pattern=r"^d-[0-9a-f]{32}$")]] = Field(
        default_factory=dict
    )

    @field_validator("triggers")
    @classmethod
    def _known_triggers(cls, value: dict[str, list[Send]]) -> dict[str, list[Send]]:
        for name in value:
            if name not in TRIGGERS:
                raise ValueError(
                    f"{name!r} is not a trigger; the triggers are {', '.join(TRIGGERS)}"
                )
        return value

    @field_validator("default_timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # tzdata folders, over-long names
            raise ValueError(f"{value!r} is not an IANA timezone name") from None
        return value

    def cap(self, channel: Channel, purpose: Purpose) -> Cap | None:
        if purpose == "security":
            return None
        return self.caps.get(channel, {}).get(purpose)

    def sends_for(self, trigger: str, data: dict[str, Any]) -> list[Send]:
        return [s for s in self.triggers.get(trigger, []) if s.matches(data)]


def load_messaging_config(path: str | Path | None = None) -> MessagingConfig:
    p = Path(path) if path else BUILTIN
    shown = "<built-in>/messaging.yaml" if p == BUILTIN else str(p)
    raw, lines = read_yaml_mapping(p, shown, MessagingConfigError, "version, triggers, ...")
    triggers = raw.get("triggers")
    if isinstance(triggers, dict):
        for name in triggers:
            if name not in TRIGGERS:
                raise MessagingConfigError(
                    shown,
                    line_of(lines, ("triggers", name)),
                    f"triggers.{name}",
                    f"not a trigger; the triggers are {', '.join(TRIGGERS)}",
                )
    try:
        return MessagingConfig.model_validate({**raw, "path": shown})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if p != "[key]")
        raise MessagingConfigError(
            shown, line_of(lines, loc), dotted(loc), first["msg"].removeprefix("Value error, ")
        ) from None


def check_templates(config: MessagingConfig, known: set[tuple[str, str]]) -> None:
    """Every (template, channel) the triggers name must exist in the template catalog, and every
    SendGrid-hosted template must stand for one of our email templates (its variables' lint)."""
    for name in config.sendgrid_templates:
        if (name, "email") not in known:
            raise MessagingConfigError(
                config.path,
                None,
                f"sendgrid_templates.{name}",
                f"no email template named {name!r}: a hosted template receives the variables "
                "our template of the same name uses, so it needs one (telecrm templates list)",
            )
    for trigger, sends in config.triggers.items():
        for i, send in enumerate(sends):
            if (send.template, send.channel) not in known:
                raise MessagingConfigError(
                    config.path,
                    None,
                    f"triggers.{trigger}[{i}]",
                    f"no {send.channel} template named {send.template!r} (telecrm templates list)",
                )
