"""Load YAML keeping the line of every key, so a config error can name file, line and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]


class YamlSyntaxError(ValueError):
    def __init__(self, line: int | None, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def load_with_lines(text: str) -> tuple[Any, dict[Location, int]]:
    """The document as plain Python, and {location: 1-based line} for every mapping key and item."""
    lines: dict[Location, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None, lines
        # Converting constructs each scalar: a tag the safe loader does not know (`!`, `!!python/...`)
        # fails here, not in compose.
        return _convert(root, (), lines), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(mark.line + 1 if mark else None, problem) from None


def _convert(node: yaml.Node, loc: Location, lines: dict[Location, int]) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*loc, key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    """A node's value by the safe loader; an unknown tag names the node's own line."""
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(node.start_mark.line + 1, problem) from None


def read_yaml_mapping(
    path: Path, shown: str, error: Callable[[str, int | None, str, str], Exception], expected: str
) -> tuple[dict[Any, Any], dict[Location, int]]:
    """A config file's top-level mapping and its lines; `error(path, line, field, problem)` for a
    file that cannot be read, is not YAML, or is not a mapping (`expected` names its keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(shown, None, "", f"cannot read the file ({exc.strerror})") from None
    try:
        raw, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise error(shown, exc.line, "", f"not valid YAML: {exc.problem}") from None
    if not isinstance(raw, dict):
        raise error(shown, 1, "", f"expected a mapping ({expected})")
    return raw, lines


def line_of(lines: dict[Location, int], loc: Location) -> int | None:
    """The line of `loc`, or of its nearest parent that has one."""
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def dotted(loc: tuple[Any, ...]) -> str:
    """A location as an error names it: `triggers.order.paid[0].template`. A key with a space,
    a control character or nothing in it is quoted: a YAML key may hold a newline, and an error
    is one line."""

    def part(p: Any) -> str:
        if isinstance(p, int):
            return f"[{p}]"
        name = str(p)
        plain = name and name.isprintable() and not any(c.isspace() for c in name)
        return f".{name}" if plain else f"[{name!r}]"

    return "".join(part(p) for p in loc).lstrip(".")
