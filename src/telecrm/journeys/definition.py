"""The journey file format: entry, filters, re-entry, exit, goal, holdout and steps.

A journey is a YAML file (journeys/builtin/ has the eight built-ins; `TELECRM_JOURNEYS_DIR` adds
or replaces them). Loading validates the shape here and the graph in `validate.py`; every error
names the file, the line and the problem, and nothing runs until the whole file is valid.

    entry:   {event: questionnaire.started}      # or {stage: churned} or {schedule: {every: 7d}}
    filters: [{stage: [lead, prospect]}, {consent: {channel: email, purpose: marketing}}]
    re_entry: once                               # once | always | a cooldown such as 30d
    exit:    {events: [consultation.submitted]}
    goal:    {event: consultation.submitted, within: 14d}
    holdout: 10                                  # percent kept out, for measuring lift
    steps:
      - {id: first_touch, send_email: lead_nurture_1}
      - {id: pause, wait: 2d}
      - {id: check, branch: {if: {event_seen: email.opened}, then: nudge, else: stop}}
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecrm.domain.lifecycle import Stage
from telecrm.sync.yaml_lines import Location, YamlSyntaxError, line_of, load_with_lines

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]
ACTIONS = (
    "wait",
    "branch",
    "split",
    "send_email",
    "send_sms",
    "exit",
    "crm_update",
    "crm_task",
    "crm_case",
    "emit_event",
    "webhook",
)


class JourneyError(ValueError):
    """A journey file that cannot run; the message names file, line and problem."""

    def __init__(self, path: str, line: int | None, where: str, problem: str) -> None:
        at = f"{path}:{line}" if line else path
        super().__init__(f"{at}: {where}: {problem}" if where else f"{at}: {problem}")
        self.path, self.line, self.where, self.problem = path, line, where, problem


def parse_duration(value: object) -> timedelta:
    """'30m', '12h', '3d', '2w' (or a number of seconds) as a timedelta."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 12h, 3d or 2w")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as 30m, 12h, 3d or 2w, got {value!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


Duration = Annotated[timedelta, Field()]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, ser_json_timedelta="float"
    )

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                key = info.alias or name
                value = data.get(key)
                is_duration = info.annotation in (timedelta, timedelta | None)
                if is_duration and value is not None and not isinstance(value, timedelta):
                    data = {**data, key: parse_duration(value)}
        return data


class ConsentCondition(_Model):
    channel: Literal["email", "sms"]
    purpose: Literal["transactional", "marketing"]


class Condition(_Model):
    """Every key given must hold (AND). Fields come from the field catalog."""

    stage: list[Stage] | None = None
    not_stage: list[Stage] | None = None
    field: str | None = None
    equals: str | int | float | bool | None = None
    in_: list[str | int | float | bool] | None = Field(None, alias="in")
    at_least: float | None = None
    exists: bool | None = None
    consent: ConsentCondition | None = None
    event_seen: str | None = None  # this event type arrived since the patient entered
    segment: str | None = None  # a named condition list (segments.yaml), expanded at load

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        compares = [self.equals is not None, self.in_ is not None, self.at_least is not None]
        if self.field is None and (any(compares) or self.exists is not None):
            raise ValueError("equals / in / at_least / exists need a `field`")
        if self.field is not None and not any(compares) and self.exists is None:
            raise ValueError(f"`field: {self.field}` needs equals, in, at_least or exists")
        if not any(
            v is not None
            for v in (
                self.stage, self.not_stage, self.field, self.consent, self.event_seen,
                self.segment,
            )
        ):  # fmt: skip
            raise ValueError(
                "an empty condition: give stage, not_stage, field, consent, event_seen or segment"
            )
        return self


class Schedule(_Model):
    every: timedelta


class Entry(_Model):
    event: str | None = None
    stage: Stage | None = None
    schedule: Schedule | None = None
    when: dict[str, str | int | float | bool] = Field(default_factory=dict)  # event data match

    @model_validator(mode="after")
    def _one(self) -> Entry:
        given = [x for x in (self.event, self.stage, self.schedule) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of event, stage or schedule")
        if self.when and self.event is None:
            raise ValueError("`when` matches event data: it needs `event`")
        return self


class Exit(_Model):
    events: list[str] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)


class Goal(_Model):
    event: str | None = None
    stage: Stage | None = None
    within: timedelta = timedelta(days=30)

    @model_validator(mode="after")
    def _one(self) -> Goal:
        if (self.event is None) == (self.stage is None):
            raise ValueError("give exactly one of event or stage")
        return self


class AfterEntry(_Model):
    """Entry time + the entry event's `days_from` value in days + `offset` (may be negative)."""

    days_from: str
    offset: timedelta = timedelta(0)

    @model_validator(mode="before")
    @classmethod
    def _signed_offset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("offset"), str):
            text = data["offset"].strip()
            sign = -1 if text.startswith("-") else 1
            data = {**data, "offset": sign * parse_duration(text.lstrip("+-"))}
        return data


class WaitSpec(_Model):
    """Exactly one of: for (a duration), until_time (HH:MM, the patient's zone), event (with a
    timeout), after_entry (a time computed from the entry event)."""

    for_: timedelta | None = Field(None, alias="for")
    until_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    event: str | None = None
    timeout: timedelta | None = None
    on_event: StepId | None = None  # where an arriving event goes; default: the next step
    on_timeout: StepId | None = None  # where the timeout goes; default: the next step
    after_entry: AfterEntry | None = None

    @model_validator(mode="after")
    def _one(self) -> WaitSpec:
        given = [x for x in (self.for_, self.until_time, self.event, self.after_entry) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of for, until_time, event or after_entry")
        if self.event is not None and self.timeout is None:
            raise ValueError("waiting for an event needs a `timeout`")
        if self.event is None and (self.timeout or self.on_event or self.on_timeout):
            raise ValueError("timeout / on_event / on_timeout belong to a wait for an `event`")
        if self.for_ is not None and self.for_ <= timedelta(0):
            raise ValueError("a wait must be longer than zero")
        return self


class Branch(_Model):
    if_: Condition | list[Condition] = Field(alias="if")
    then: StepId
    else_: StepId | None = Field(None, alias="else")

    def conditions(self) -> list[Condition]:
        return self.if_ if isinstance(self.if_, list) else [self.if_]


class WebhookSpec(_Model):
    """POST a signed (Standard Webhooks) JSON body with the named fields to `url`."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=500)]
    secret_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,79}$")]
    fields: list[str] = Field(default_factory=list)  # catalog fields; PHI needs baa: true
    baa: bool = False  # the receiver is covered by a BAA with you


class CaseSpec(_Model):
    """A task (crm_task) or case (crm_case) for a care coordinator, through the sync outbox.
    The subject is fixed text: it may not carry a patient's value (no `{...}` placeholders)."""

    subject: Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[^{}]+$")]
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    due_in: timedelta = timedelta(days=1)


class UpdateSpec(_Model):
    """Fixed values set on the patient's CRM record; a mapping sends them as `journey.<name>`."""

    set: Annotated[
        dict[
            Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")],
            Annotated[str, Field(max_length=64)] | int | float | bool,
        ],
        Field(min_length=1, max_length=20),
    ]


class EmitSpec(_Model):
    """Emit a `journey.milestone` event other journeys can enter, exit or convert on."""

    milestone: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]


class Arm(_Model):
    percent: Annotated[float, Field(gt=0, le=100)]
    next: StepId


class Step(_Model):
    id: StepId
    next: StepId | None = None
    wait: WaitSpec | timedelta | None = None
    branch: Branch | None = None
    split: dict[str, Arm] | None = None
    send_email: str | None = None
    send_sms: str | None = None
    exit: str | None = None  # the exit reason
    crm_update: UpdateSpec | None = None
    crm_task: CaseSpec | None = None
    crm_case: CaseSpec | None = None
    emit_event: EmitSpec | None = None
    webhook: WebhookSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _wait_duration(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("wait"), str | int | float):
            data = {**data, "wait": parse_duration(data["wait"])}
        return data

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"a step does exactly one of {', '.join(ACTIONS)} (got {given})")
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    @property
    def wait_spec(self) -> WaitSpec | None:
        if isinstance(self.wait, timedelta):
            return WaitSpec.model_validate({"for": self.wait})
        return self.wait


class Journey(_Model):
    version: Literal[1] = 1
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]
    description: str = ""
    entry: Entry
    filters: list[Condition] = Field(default_factory=list)
    re_entry: str = "once"  # once | always | a cooldown duration
    exit: Exit = Field(default_factory=Exit)
    goal: Goal | None = None
    holdout: Annotated[float, Field(ge=0, le=50)] = 0
    steps: Annotated[list[Step], Field(min_length=1)]

    @model_validator(mode="after")
    def _re_entry(self) -> Journey:
        if self.re_entry not in ("once", "always"):
            try:
                parse_duration(self.re_entry)
            except ValueError:
                raise ValueError(
                    f"re_entry: expected once, always or a cooldown such as 30d, got "
                    f"{self.re_entry!r}"
                ) from None
        return self

    @property
    def cooldown(self) -> timedelta | None:
        return None if self.re_entry in ("once", "always") else parse_duration(self.re_entry)

    def step(self, step_id: str) -> Step:
        return self._index()[step_id]

    def _index(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def following(self, step: Step) -> str | None:
        """Where a step goes when it names no `next`: the step after it in the file, or the end."""
        if step.next is not None:
            return step.next
        ids = [s.id for s in self.steps]
        i = ids.index(step.id)
        return ids[i + 1] if i + 1 < len(ids) else None


class LoadedJourney:
    """A validated journey with where it came from and a digest of what runs (its version)."""

    def __init__(self, journey: Journey, path: str, text: str, lines: dict[Location, int]) -> None:
        self.journey = journey
        self.path = path
        self.text = text
        self.lines = lines
        # What runs, canonical: segments expanded, comments and layout gone. A version is a
        # distinct body, so editing a segment starts a new version of every journey using it.
        self.body = journey.model_dump_json(by_alias=True, exclude_none=True)
        self.digest = hashlib.sha256(self.body.encode()).hexdigest()

    @property
    def name(self) -> str:
        return self.journey.name


def parse_journey(text: str, path: str) -> tuple[Journey, dict[Location, int]]:
    """The file's shape checked (not yet its references or graph: see validate.py)."""
    try:
        data, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise JourneyError(path, exc.line, "", f"not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise JourneyError(path, 1, "", "a journey file is a mapping with entry and steps")
    try:
        return Journey.model_validate(data), lines
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: Location = tuple(p for p in err["loc"] if not _is_union_tag(p))
        where = ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            message = "required"
        elif err["type"] == "enum":
            message = f"{err.get('input')!r} is not one of {err.get('ctx', {}).get('expected')}"
        raise JourneyError(path, line_of(lines, loc), where, message) from None


def _is_union_tag(part: object) -> bool:
    """pydantic names the union member it tried (`WaitSpec`, `list[...]`) inside the location."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def read_journey(path: Path) -> tuple[Journey, dict[Location, int], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyError(str(path), None, "", f"cannot read: {exc.strerror}") from None
    journey, lines = parse_journey(text, str(path))
    return journey, lines, text
