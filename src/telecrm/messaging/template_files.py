"""catalog.yaml: which templates exist, on which channel, for what purpose, in which languages.

Each entry loads into a `CatalogEntry`; a bad entry raises `TemplateCatalogInvalid` naming the
file, the entry's line and the key. Files in an override folder must belong to a listed
template, so a misspelt override fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from telecrm.messaging.template_lint import TemplateCatalogInvalid

FILE_NAME = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.(?P<lang>[a-z]{2})\.j2$")


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    channel: Literal["email", "sms"]
    purpose: Literal["transactional", "marketing", "security"]
    description: str = Field(min_length=1, max_length=200)
    languages: tuple[str, ...] = Field(min_length=1)


def _entry_lines(text: str) -> list[int]:
    """The 1-based line of each entry under `templates:` (for error messages)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "templates" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def read_catalog(path: Path) -> dict[tuple[str, str], CatalogEntry]:
    """The entries of one catalog.yaml, keyed by (name, channel)."""

    def invalid(detail: str, line: int | None = None, name: str = "") -> TemplateCatalogInvalid:
        return TemplateCatalogInvalid(detail, template=name, path=path, line=line, where=str(path))

    text = path.read_text(encoding="utf-8")
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise invalid("not valid YAML", mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("templates"), list):
        raise invalid("expected a mapping with a `templates:` list")
    lines = _entry_lines(text)
    entries: dict[tuple[str, str], CatalogEntry] = {}
    for i, item in enumerate(raw["templates"]):
        line = lines[i] if i < len(lines) else None
        label = item.get("name", "") if isinstance(item, dict) else ""
        label = label if isinstance(label, str) and FILE_NAME.match(f"{label}.en.j2") else ""
        try:
            entry = CatalogEntry.model_validate(item)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"]) or "entry"
            raise invalid(
                f"{label or f'entry {i + 1}'}: {key}: {err['msg']}", line, label
            ) from None
        for lang in entry.languages:
            if not re.fullmatch(r"[a-z]{2}", lang):
                raise invalid(
                    f"{entry.name}: languages: {lang!r} is not a two-letter code", line, entry.name
                )
        if "en" not in entry.languages:
            raise invalid(
                f"{entry.name}: every template needs an English (en) version", line, entry.name
            )
        key2 = (entry.name, entry.channel)
        if key2 in entries:
            raise invalid(f"{entry.channel}/{entry.name} is listed twice", line, entry.name)
        entries[key2] = entry
    return entries


def stray_files(folder: Path, entries: dict[tuple[str, str], CatalogEntry]) -> None:
    """Refuse template files in `folder` that no catalog entry lists (layouts start with `_`)."""
    for channel in ("email", "sms"):
        for file in sorted((folder / channel).glob("*.j2")):
            if file.name.startswith("_"):
                continue
            match = FILE_NAME.match(file.name)
            entry = entries.get((match["name"], channel)) if match else None
            if match is None or entry is None or match["lang"] not in entry.languages:
                raise TemplateCatalogInvalid(
                    "is not listed in catalog.yaml (name.language.j2, with the name and "
                    "language listed there)",
                    template=match["name"] if match else file.stem,
                    path=file,
                    line=None,
                    where=f"{channel}/{file.name}",
                )
