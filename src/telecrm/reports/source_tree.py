"""Walking a web application's source tree: which files to read, which to skip and why.

Also the shape every framework reader returns (`Route`) and the one path form they share.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import Parameter

MAX_FILE_BYTES = 1024 * 1024  # a hand-written source file past 1 MB is generated or vendored
MAX_FILES = 20_000  # source files read per tree; a monorepo past this is analysed in parts
SKIP_DIRS = frozenset(
    {"node_modules", ".git", ".hg", ".svn", "venv", ".venv", "env", ".env", "dist", "build",
     "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".next", ".nuxt",
     "coverage", "site-packages", "bower_components", "vendor", ".idea", ".vscode"}
)  # fmt: skip
CODE_SUFFIXES = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
}
TEMPLATE_SUFFIXES = frozenset({".html", ".hbs", ".handlebars", ".mjml", ".ejs", ".njk", ".j2"})
SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a binary file (as git and grep judge)


class SourceError(Exception):
    """A tree that cannot be analysed; the message names the path and the reason, never content."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    rel: str  # posix path relative to the tree's root: the evidence prefix
    language: str  # "python", "javascript", "typescript", "tsx" or "template"
    text: str


@dataclass(frozen=True, slots=True)
class Skipped:
    rel: str
    reason: str


@dataclass
class TreeWalk:
    root: Path
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    truncated: bool = False  # stopped at max_files; the report is partial


@dataclass
class Route:
    """One handler bound to one method and one full path, as a framework reader found it."""

    method: str  # lower case, as endpoints.METHODS
    path: str  # normalised: "/patients/{id}"
    evidence: str  # "routes/patients.js:12"
    framework: str
    handler: str = ""
    auth: tuple[str, ...] = ("none",)
    auth_evidence: str = ""
    parameters: list[Parameter] = field(default_factory=list)
    fields: list[SchemaField] = field(default_factory=list)
    webhook_reason: str | None = None
    signature_verified: bool | None = None  # webhook receivers only: verifies the sender?


_PARAM_FORMS = (
    (re.compile(r"\(\?P<(\w+)>[^)]*\)"), r"{\1}"),  # Django re_path: (?P<id>[0-9]+)
    (re.compile(r"<(?:[\w.]+:)?(\w+)>"), r"{\1}"),  # Flask / Django: <int:id>, <id>
    (re.compile(r":(\w+)(?:\([^)]*\))?[?+*]?"), r"{\1}"),  # Express: :id, :id(\d+), :id?
)


def normalise_route_path(raw: str) -> str:
    """`/patients/:id`, `patients/<int:id>/`, `^patients/(?P<id>\\d+)$` all become `/patients/{id}`."""
    path = raw.strip().removeprefix("^").removesuffix("$")
    for pattern, repl in _PARAM_FORMS:
        path = pattern.sub(repl, path)
    path = re.sub(r"/{2,}", "/", "/" + path)
    return path.rstrip("/") or "/"


def join_paths(*parts: str) -> str:
    return normalise_route_path("/".join(p.strip("/") for p in parts if p and p.strip("/")))


def evidence(rel: str, line: int) -> str:
    return f"{rel}:{line}"


def _language(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in CODE_SUFFIXES:
        return CODE_SUFFIXES[suffix]
    if suffix in TEMPLATE_SUFFIXES and "template" in path.as_posix().lower():
        return "template"
    return None


def walk_tree(root: Path, *, max_files: int = MAX_FILES) -> TreeWalk:
    """Every readable source and template file under `root`, and every one skipped with a reason."""
    if not root.exists():
        raise SourceError(f"{root.name or root}: no such file or directory")
    if not root.is_dir():
        raise SourceError(f"{root.name}: not a directory")
    walk = TreeWalk(root)
    visited: set[str] = set()
    for current, dirs, names in os.walk(root, followlinks=True, onerror=None):
        real = os.path.realpath(current)
        rel_dir = Path(os.path.relpath(current, root)).as_posix()
        if real in visited:
            walk.skipped.append(Skipped(rel_dir, "symlink loop: directory already walked"))
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            path = Path(current) / name
            rel = Path(os.path.relpath(path, root)).as_posix()
            language = _language(path)
            if language is None:
                continue
            if len(walk.files) >= max_files:
                walk.truncated = True
                return walk
            read = _read(path)
            if isinstance(read, Skipped):
                walk.skipped.append(Skipped(rel, read.reason))
            else:
                walk.files.append(SourceFile(rel, language, read))
    return walk


def _read(path: Path) -> str | Skipped:
    try:
        if not path.is_file():
            return Skipped("", "not a regular file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Skipped("", f"larger than {MAX_FILE_BYTES // 1024} KiB ({size // 1024} KiB)")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped("", f"unreadable: {exc.strerror or type(exc).__name__}")
    if b"\x00" in data[:SNIFF_BYTES]:
        return Skipped("", "binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Skipped("", f"not UTF-8 text (byte {exc.start})")
