"""The scoring configuration (lead points rules, engagement weights), loaded and validated once.

Built-in defaults live in `config/scoring.yaml`; `load_scoring_config(path)` reads a copy.
Errors name the file, the line and the field, like the messaging and mapping errors do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecrm.domain.events import EVENT_TYPES
from telecrm.domain.fields import FIELDS
from telecrm.sync.yaml_lines import dotted, line_of, read_yaml_mapping

BUILTIN = Path(__file__).parent / "config" / "scoring.yaml"
DERIVED_FIELDS = frozenset({"age"})  # years at scoring time, from date_of_birth
RuleName = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9 _\-,.()%/]+$")]
Points = Annotated[float, Field(ge=-1000, le=1000)]


class ScoringConfigError(ValueError):
    def __init__(self, path: str, line: int | None, field: str, problem: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FitRule(_Model):
    """Points when a profile field matches: one of `in`, `between` (numbers) or `present`."""

    name: RuleName
    field: str
    points: Points
    in_: tuple[str | int | bool, ...] | None = Field(None, alias="in")
    between: tuple[float, float] | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> FitRule:
        if self.field not in FIELDS and self.field not in DERIVED_FIELDS:
            raise ValueError(f"{self.field!r} is not a catalog field (nor 'age')")
        tests = [t for t in (self.in_, self.between, self.present) if t is not None]
        if len(tests) != 1:
            raise ValueError("give exactly one of `in`, `between` or `present`")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("`between` needs [low, high] with low <= high")
        if self.in_ is not None and self.field in FIELDS and FIELDS[self.field].is_phi:
            # A score built on a PHI value would reach CRMs without a BAA: presence only.
            raise ValueError(f"{self.field} is PHI: a rule may only test `present`")
        return self


class BehaviourRule(_Model):
    name: RuleName
    event: str
    points: Points
    max_per_day: Annotated[int, Field(ge=1, le=1000)] | None = None

    @model_validator(mode="after")
    def _known_event(self) -> BehaviourRule:
        if self.event not in EVENT_TYPES:
            raise ValueError(f"{self.event!r} is not an event type")
        return self


class LeadConfig(_Model):
    behaviour_half_life_days: Annotated[float, Field(gt=0, le=3650)] = 14.0
    fit: tuple[FitRule, ...] = ()
    behaviour: tuple[BehaviourRule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> LeadConfig:
        seen: set[str] = set()
        for name in self.rule_names:
            if name in seen:
                raise ValueError(f"two rules are named {name!r}: a reason must say which")
            seen.add(name)
        return self

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.fit) + tuple(r.name for r in self.behaviour)

    def profile_fields(self) -> frozenset[str]:
        """Catalog fields the fit rules read (`age` reads date_of_birth)."""
        return frozenset("date_of_birth" if r.field == "age" else r.field for r in self.fit)


Share = Annotated[float, Field(ge=0, le=1)]
Scale = Annotated[float, Field(gt=0, le=1e6)]


class Weights(_Model):
    usage: Share = 0.30
    communication: Share = 0.25
    consultation: Share = 0.20
    adherence: Share = 0.25

    @model_validator(mode="after")
    def _some_weight(self) -> Weights:
        if self.usage + self.communication + self.consultation <= 0:
            raise ValueError("usage, communication and consultation cannot all weigh 0")
        return self


class EngagementConfig(_Model):
    half_life_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    weights: Weights = Weights()
    sessions_scale: Scale = 4.0
    features_scale: Scale = 2.0
    features_share: Share = 0.25
    open_weight: Annotated[float, Field(ge=0, le=10)] = 0.3
    click_weight: Annotated[float, Field(ge=0, le=10)] = 1.0
    reply_weight: Annotated[float, Field(ge=0, le=10)] = 1.0
    communication_scale: Scale = 0.25
    prior_messages: Annotated[float, Field(ge=0, le=1000)] = 2.0
    prior_rate: Share = 0.1
    consultation_scale: Scale = 1.0


class ScoringConfig(_Model):
    version: Literal[1] = 1
    path: str = "<built-in>"
    lead: LeadConfig = LeadConfig()
    engagement: EngagementConfig = EngagementConfig()


def load_scoring_config(path: str | Path | None = None) -> ScoringConfig:
    p = Path(path) if path else BUILTIN
    shown = "<built-in>/scoring.yaml" if p == BUILTIN else str(p)
    raw, lines = read_yaml_mapping(p, shown, ScoringConfigError, "version, lead, engagement")
    try:
        return ScoringConfig.model_validate({**raw, "path": shown})
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = tuple(p for p in first["loc"] if p != "[key]")
        raise ScoringConfigError(
            shown, line_of(lines, loc), dotted(loc), first["msg"].removeprefix("Value error, ")
        ) from None
