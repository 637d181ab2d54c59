"""Segments: named condition lists that journeys use as entry filters or branch conditions.

    # segments.yaml (built-in beside the journeys; TELECRM_JOURNEYS_DIR/segments.yaml adds or
    # replaces segments by name)
    version: 1
    segments:
      marketable_email: [{consent: {channel: email, purpose: marketing}}]
      high_value: [{field: total_order_value, at_least: 200}]

A condition `{segment: high_value}` holds when every condition of the segment holds. Segments
are expanded when a journey is loaded, so what a journey version runs is fixed: editing a
segment starts a new version of every journey that uses it (patients inside stay on theirs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from telecrm.domain.events import EVENT_TYPES
from telecrm.domain.fields import FIELDS
from telecrm.journeys.definition import Condition, Journey, JourneyError
from telecrm.sync.yaml_lines import Location, YamlSyntaxError, line_of, load_with_lines

SEGMENTS_FILE = "segments.yaml"
BUILTIN = Path(__file__).parent / "builtin" / SEGMENTS_FILE
Segments = dict[str, list[Condition]]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    segments: dict[str, list[Condition]]


def _read(path: Path) -> Segments:
    try:
        text = path.read_text(encoding="utf-8")
        data, lines = load_with_lines(text)
    except OSError as exc:
        raise JourneyError(str(path), None, "", f"cannot read: {exc.strerror}") from None
    except YamlSyntaxError as exc:
        raise JourneyError(str(path), exc.line, "", f"not valid YAML: {exc.problem}") from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: Location = tuple(err["loc"])
        raise JourneyError(
            str(path), line_of(lines, loc), ".".join(map(str, loc)),
            err["msg"].removeprefix("Value error, "),
        ) from None  # fmt: skip
    for name, conditions in parsed.segments.items():
        for i, c in enumerate(conditions):
            where: Location = ("segments", name, i)
            problem = None
            if c.segment is not None:
                problem = "a segment cannot use another segment"
            elif c.field is not None and c.field not in FIELDS:
                problem = f"{c.field!r} is not in the field catalog"
            elif c.event_seen is not None and c.event_seen not in EVENT_TYPES:
                problem = f"unknown event type {c.event_seen!r}"
            if problem:
                raise JourneyError(
                    str(path), line_of(lines, where), ".".join(map(str, where)), problem
                )
    return dict(parsed.segments)


def load_segments(extra_dir: Path | None) -> Segments:
    segments = _read(BUILTIN)
    if extra_dir is not None and (extra_dir / SEGMENTS_FILE).is_file():
        segments.update(_read(extra_dir / SEGMENTS_FILE))
    return segments


def _expand(
    conditions: list[Condition], segments: Segments, loc: Location, fail: Callable[..., Any]
) -> list[Condition]:
    out: list[Condition] = []
    for i, c in enumerate(conditions):
        if c.segment is None:
            out.append(c)
            continue
        if c.segment not in segments:
            known = ", ".join(sorted(segments)) or "none"
            fail((*loc, i, "segment"), f"no segment is called {c.segment!r} (known: {known})")
        rest = c.model_dump(by_alias=True, exclude_none=True, exclude={"segment"})
        if rest:
            out.append(Condition.model_validate(rest))
        out.extend(segments[c.segment])
    return out


def expand_segments(j: Journey, segments: Segments, fail: Callable[..., Any]) -> Journey:
    """The journey with every `{segment: NAME}` replaced by the segment's conditions."""
    filters = _expand(j.filters, segments, ("filters",), fail)
    steps = []
    for i, s in enumerate(j.steps):
        if s.branch is not None and any(c.segment for c in s.branch.conditions()):
            conditions = _expand(
                s.branch.conditions(), segments, ("steps", i, "branch", "if"), fail
            )
            s = s.model_copy(update={"branch": s.branch.model_copy(update={"if_": conditions})})
        steps.append(s)
    return j.model_copy(update={"filters": filters, "steps": steps})
