"""Load an OpenAPI 3.x / Swagger 2.0 document, check its shape, and resolve its local `$ref`s.

Every failure is a `SpecError` naming the file or the JSON pointer at fault; a `$ref` cycle is
not a failure but a finding (`Spec.cycles`), and the walk carries on past it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_SPEC_BYTES = 50 * 1024 * 1024  # a 10,000-path spec is ~10 MB; beyond 50 MB is not an API doc
MAX_REF_HOPS = 64  # a chain of $ref -> $ref longer than this is treated as a cycle


class SpecError(Exception):
    """A document that cannot be analysed; the message says where and why (never its content)."""


def escape_token(token: str) -> str:
    """One JSON pointer segment (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "#" + "".join("/" + escape_token(str(t)) for t in tokens)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@dataclass
class Spec:
    """A loaded document: its raw tree, its dialect, and the findings met while reading it."""

    document: dict[str, Any]
    dialect: str  # "openapi-3.0", "openapi-3.1" or "swagger-2.0"
    version: str
    source: str
    cycles: set[str] = field(default_factory=set)  # JSON pointers of $refs that loop
    broken_refs: set[str] = field(default_factory=set)  # pointers of $refs that lead nowhere
    depth_limited: set[str] = field(default_factory=set)  # schemas nested past the walk's limit
    validation_skipped: str | None = None

    @property
    def is_swagger(self) -> bool:
        return self.dialect == "swagger-2.0"

    def at(self, ref: str) -> Any:
        """The node a local reference (`#/components/schemas/X`) points at, or KeyError."""
        if not ref.startswith("#"):
            raise KeyError(ref)
        node: Any = self.document
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            token = _unescape(raw)
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise KeyError(ref)
        return node

    def deref(self, node: Any, where: str) -> tuple[Any, str]:
        """Follow `$ref` chains from `node` (found at `where`); returns the target and its pointer.

        A cycle or a dangling reference is recorded and yields `({}, where)` so callers go on.
        """
        seen: list[str] = []
        start = where
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen or len(seen) >= MAX_REF_HOPS:
                self.cycles.add(start)
                return {}, start
            seen.append(ref)
            try:
                node = self.at(ref)
            except KeyError:
                self.broken_refs.add(start)
                return {}, start
            where = ref
        return node, where


def _read_tree(path: Path) -> Any:
    try:
        if path.is_dir():
            raise SpecError(f"{path.name}: is a directory, not an OpenAPI document")
        size = path.stat().st_size
    except FileNotFoundError:
        raise SpecError(f"{path.name}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{path.name}: {size} bytes is over the {MAX_SPEC_BYTES}-byte limit")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{path.name}: cannot be read ({exc.strerror})") from None
    return parse_text(text, name=path.name)


def parse_text(text: str, *, name: str = "document") -> Any:
    """JSON first (fast, exact), then YAML; either failure names the line."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{name}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except RecursionError:
            raise SpecError(f"{name}: JSON nested too deeply") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise SpecError(f"{name}: not valid YAML (line {line}: {exc.problem})") from None
    except (yaml.YAMLError, RecursionError, ValueError):
        raise SpecError(f"{name}: not valid JSON or YAML") from None


def dialect_of(tree: Any, *, name: str = "document") -> tuple[str, str]:
    """("openapi-3.1", "3.1.0") or ("swagger-2.0", "2.0"); anything else is a SpecError."""
    if not isinstance(tree, dict):
        raise SpecError(f"{name}: not an OpenAPI document (the top level is not a mapping)")
    if "openapi" in tree:
        version = str(tree["openapi"])
        if version.startswith("3.0"):
            return "openapi-3.0", version
        if version.startswith(("3.1", "3.2")):
            return "openapi-3.1", version
        raise SpecError(f"{name}: #/openapi is {version[:20]!r}; only 3.0, 3.1 and 3.2 are known")
    if "swagger" in tree:
        version = str(tree["swagger"])
        if version == "2.0":
            return "swagger-2.0", version
        raise SpecError(f"{name}: #/swagger is {version[:20]!r}; only 2.0 is known")
    raise SpecError(f"{name}: not an OpenAPI document (no 'openapi' or 'swagger' field)")


def _validator_errors(tree: dict[str, Any], dialect: str) -> Iterator[Any]:
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    cls = {
        "swagger-2.0": OpenAPIV2SpecValidator,
        "openapi-3.0": OpenAPIV30SpecValidator,
        "openapi-3.1": OpenAPIV31SpecValidator,
    }[dialect]
    return iter(cls(tree).iter_errors())


def validate_shape(tree: dict[str, Any], dialect: str, *, name: str = "document") -> str | None:
    """Raise on the first schema violation, named by JSON pointer; returns why it was skipped."""
    try:
        error = next(_validator_errors(tree, dialect), None)
    except RecursionError:
        return "the validator recursed too deeply (cyclic $refs); shape checked by the analyzer"
    except Exception as exc:  # the validator's own resolver gives up on refs it cannot follow
        raise SpecError(f"{name}: cannot be validated ({type(exc).__name__})") from None
    if error is None:
        return None
    where = pointer(*getattr(error, "absolute_path", ()))
    # The rule, not the message: a message may quote the document's values (examples).
    # (The validator's own checks, such as an undeclared path parameter, name only the document's
    # keys and have no rule.)
    rule = getattr(error, "validator", None)
    if rule in ("required", None) or str(rule) == "<unset>":
        message = str(error.message).splitlines()[0][:200]
    else:
        message = f"fails the {rule!r} rule"
    raise SpecError(f"{name}: invalid at {where}: {message}")


def load_spec(path: Path, *, validate: bool = True) -> Spec:
    """Read, detect, validate; the result's refs are resolved lazily through `Spec.deref`."""
    tree = _read_tree(path)
    return spec_from_tree(tree, source=path.name, validate=validate)


def spec_from_tree(tree: Any, *, source: str = "document", validate: bool = True) -> Spec:
    dialect, version = dialect_of(tree, name=source)
    skipped = validate_shape(tree, dialect, name=source) if validate else "not requested"
    return Spec(tree, dialect, version, source, validation_skipped=skipped)
