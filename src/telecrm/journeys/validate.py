"""A journey's references and graph, checked before anything runs.

Refused, with file, line and problem: unknown event types, stages, templates (or a template sent
on the wrong channel), fields outside the catalog, `next` / `then` / `else` naming no step,
steps no path reaches, a branch without `else`, split arms that do not add up to 100 %, and a
loop that can go round without passing a wait (it would spin a patient forever in one tick).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from telecrm.domain.events import EVENT_TYPES
from telecrm.domain.fields import FIELDS
from telecrm.journeys.definition import (
    Condition,
    Journey,
    JourneyError,
    LoadedJourney,
    Step,
    read_journey,
)
from telecrm.journeys.segments import (
    SEGMENTS_FILE,
    Segments,
    expand_segments,
    load_segments,
)
from telecrm.sync.yaml_lines import Location, line_of

BUILTIN_DIR = Path(__file__).parent / "builtin"
WEBHOOK_EXTRAS = frozenset({"stage"})  # not catalog fields, never PHI


class _Checker:
    def __init__(
        self,
        journey: Journey,
        path: str,
        lines: dict[Location, int],
        templates: set[tuple[str, str]],
    ) -> None:
        self.j, self.path, self.lines, self.templates = journey, path, lines, templates

    def fail(self, loc: Location, problem: str) -> None:
        raise JourneyError(self.path, line_of(self.lines, loc), ".".join(map(str, loc)), problem)

    def event(self, loc: Location, name: str | None) -> None:
        if name is not None and name not in EVENT_TYPES:
            self.fail(loc, f"unknown event type {name!r} (docs/events/index.md lists them)")

    def conditions(self, loc: Location, conditions: Iterable[Condition]) -> None:
        for i, c in enumerate(conditions):
            if c.field is not None and c.field not in FIELDS:
                self.fail((*loc, i, "field"), f"{c.field!r} is not in the field catalog")
            self.event((*loc, i, "event_seen"), c.event_seen)

    def target(self, loc: Location, step_id: str | None) -> None:
        if step_id is not None and step_id not in {s.id for s in self.j.steps}:
            self.fail(loc, f"no step is called {step_id!r}")

    def run(self) -> None:
        j = self.j
        self.event(("entry", "event"), j.entry.event)
        self.conditions(("filters",), j.filters)
        for i, name in enumerate(j.exit.events):
            self.event(("exit", "events", i), name)
        if j.goal is not None:
            self.event(("goal", "event"), j.goal.event)
        seen: set[str] = set()
        for i, step in enumerate(j.steps):
            self.step(("steps", i), step)
            if step.id in seen:
                self.fail(("steps", i, "id"), f"two steps are called {step.id!r}")
            seen.add(step.id)
        self.graph()

    def step(self, loc: Location, s: Step) -> None:
        self.target((*loc, "next"), s.next)
        for channel in ("email", "sms"):
            template = getattr(s, f"send_{channel}")
            if template is not None and (template, channel) not in self.templates:
                other = "sms" if channel == "email" else "email"
                hint = (
                    f" (it is an {other} template: use send_{other})"
                    if (template, other) in self.templates
                    else " (telecrm templates list shows them)"
                )
                self.fail(
                    (*loc, f"send_{channel}"), f"unknown {channel} template {template!r}{hint}"
                )
        if s.webhook is not None:
            self.webhook((*loc, "webhook"), s)
        if s.branch is not None:
            self.conditions((*loc, "branch", "if"), s.branch.conditions())
            self.target((*loc, "branch", "then"), s.branch.then)
            if s.branch.else_ is None:
                self.fail((*loc, "branch"), "a branch needs `else` (where everyone else goes)")
            self.target((*loc, "branch", "else"), s.branch.else_)
        if s.split is not None:
            total = sum(arm.percent for arm in s.split.values())
            if abs(total - 100) > 1e-9:
                self.fail((*loc, "split"), f"the arms add up to {total:g} %, not 100 %")
            for name, arm in s.split.items():
                self.target((*loc, "split", name, "next"), arm.next)
        wait = s.wait_spec
        if wait is not None:
            self.event((*loc, "wait", "event"), wait.event)
            self.target((*loc, "wait", "on_event"), wait.on_event)
            self.target((*loc, "wait", "on_timeout"), wait.on_timeout)

    def webhook(self, loc: Location, s: Step) -> None:
        w = s.webhook
        assert w is not None
        local = w.url.startswith(("http://127.0.0.1", "http://localhost"))
        if w.url.startswith("http://") and not local:
            self.fail((*loc, "url"), "a webhook leaves over https (http only to 127.0.0.1)")
        for i, name in enumerate(w.fields):
            if name not in FIELDS and name not in WEBHOOK_EXTRAS:
                self.fail((*loc, "fields", i), f"{name!r} is not in the field catalog")
            if name in FIELDS and FIELDS[name].is_phi and not w.baa:
                self.fail(
                    (*loc, "fields", i),
                    f"{name!r} is PHI: a webhook may carry it only to a receiver under a BAA "
                    "(baa: true)",
                )

    def graph(self) -> None:
        j = self.j
        reachable: set[str] = set()
        todo = [j.steps[0].id]
        while todo:
            sid = todo.pop()
            if sid not in reachable:
                reachable.add(sid)
                todo.extend(successors(j, j.step(sid)))
        for i, s in enumerate(j.steps):
            if s.id not in reachable:
                self.fail(("steps", i, "id"), f"step {s.id!r} is unreachable from the first step")
        # A cycle is allowed only through a wait: drop the waits' edges and look for one.
        state: dict[str, int] = {}

        def visit(sid: str, path: list[str]) -> None:
            state[sid] = 1
            step = j.step(sid)
            if step.wait is None:
                for nxt in successors(j, step):
                    if state.get(nxt) == 1:
                        loop = [*path[path.index(nxt) :], nxt] if nxt in path else [sid, nxt]
                        i = [s.id for s in j.steps].index(sid)
                        self.fail(
                            ("steps", i),
                            f"the steps {' -> '.join(loop)} loop without a wait",
                        )
                    if nxt not in state:
                        visit(nxt, [*path, nxt])
            state[sid] = 2

        for s in j.steps:
            if s.id not in state:
                visit(s.id, [s.id])


def successors(j: Journey, s: Step) -> list[str]:
    """The steps `s` can lead to (the end of the journey is not a step)."""
    out: list[str | None] = []
    if s.branch is not None:
        out += [s.branch.then, s.branch.else_]
    elif s.split is not None:
        out += [arm.next for arm in s.split.values()]
    elif s.exit is not None:
        pass
    else:
        wait = s.wait_spec
        if wait is not None and wait.event is not None:
            out += [wait.on_event or j.following(s), wait.on_timeout or j.following(s)]
        else:
            out.append(j.following(s))
    return [x for x in dict.fromkeys(out) if x is not None]


def load_journey(
    path: Path, templates: set[tuple[str, str]], segments: Segments | None = None
) -> LoadedJourney:
    journey, lines, text = read_journey(path)
    return _checked(journey, str(path), lines, text, templates, segments)


def check_text(
    text: str, path: str, templates: set[tuple[str, str]], segments: Segments | None = None
) -> LoadedJourney:
    from telecrm.journeys.definition import parse_journey

    journey, lines = parse_journey(text, path)
    return _checked(journey, path, lines, text, templates, segments)


def _checked(
    journey: Journey,
    path: str,
    lines: dict[Location, int],
    text: str,
    templates: set[tuple[str, str]],
    segments: Segments | None,
) -> LoadedJourney:
    checker = _Checker(journey, path, lines, templates)
    checker.run()
    expanded = expand_segments(journey, segments or {}, checker.fail)
    return LoadedJourney(expanded, path, text, lines)


def journey_files(extra_dir: Path | None) -> list[Path]:
    """The built-ins, with files of the same name in `extra_dir` replacing them."""
    files = {p.name: p for p in sorted(BUILTIN_DIR.glob("*.yaml")) if p.name != SEGMENTS_FILE}
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise JourneyError(str(extra_dir), None, "", "TELECRM_JOURNEYS_DIR is not a folder")
        files.update(
            {p.name: p for p in sorted(extra_dir.glob("*.yaml")) if p.name != SEGMENTS_FILE}
        )
    return [files[name] for name in sorted(files)]


def load_all(extra_dir: Path | None, templates: set[tuple[str, str]]) -> list[LoadedJourney]:
    segments = load_segments(extra_dir)
    loaded = [load_journey(p, templates, segments) for p in journey_files(extra_dir)]
    names: dict[str, str] = {}
    for lj in loaded:
        if lj.name in names:
            raise JourneyError(
                lj.path, None, "name", f"{lj.name!r} is also the name in {names[lj.name]}"
            )
        names[lj.name] = lj.path
    return loaded
