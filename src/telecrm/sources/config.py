"""The sources file: which databases to read and how their rows become telecrm events.

A source names the environment variable that holds its database URL (or `<NAME>_FILE`, a file
holding it); the URL itself never appears in the YAML. A model is a table or a SELECT, its
primary key, an optional incremental cursor (none: every run diffs the whole model), an optional
soft-delete column, the column that holds the patient id, the columns that map onto catalog
fields (their PHI class comes from the catalog), and the rules: `on_insert` (a new row),
`on_change` (a column reaches a value, or becomes non-null), `on_update` (a mapped field
changed), `on_delete` (soft delete or gone from the key diff). Loading checks it all once and
refuses with file, line and field named; the reader never re-checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecrm.domain.events import DATA_MODELS, EVENT_TYPES
from telecrm.domain.fields import FIELDS
from telecrm.ingest.intake import RESERVED_PREFIXES
from telecrm.sources.errors import SourceConfigError
from telecrm.sync.yaml_lines import Location, YamlSyntaxError, dotted, line_of, load_with_lines

NAME = r"^[a-z][a-z0-9_]{0,31}$"  # goes into event ids and checkpoint keys
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"  # PostgreSQL identifiers are at most 63 bytes
TABLE = r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$"
ENV_NAME = r"^[A-Z][A-Z0-9_]{0,127}$"
PATIENT_EVENTS = ("patient.registered", "patient.updated")

# Catalog field -> where it goes in a patient.registered / patient.updated event's data.
PATIENT_DATA_PATH: dict[str, tuple[str, ...]] = {
    **{
        n: (n,)
        for n in (
            "first_name",
            "last_name",
            "email",
            "phone",
            "date_of_birth",
            "sex",
            "language",
            "timezone",
            "acquisition_channel",
            "billing_cycle",
            "paperless_billing",
            "conditions",
            "medications",
            "allergies",
            "provider_preference",
        )
    },
    "address_line1": ("address", "line1"),
    "city": ("address", "city"),
    "state": ("address", "state"),
    "postal_code": ("address", "postal_code"),
    "emergency_contact_name": ("emergency_contact", "name"),
    "emergency_contact_phone": ("emergency_contact", "phone"),
    "emergency_contact_relation": ("emergency_contact", "relation"),
    "insurance_provider": ("insurance", "provider"),
    "insurance_member_id": ("insurance", "member_id"),
    **{
        n: ("communication_preferences", n)
        for n in (
            "preferred_channel",
            "email_consent",
            "sms_consent",
            "marketing_consent",
            "quiet_hours_start",
            "quiet_hours_end",
        )
    },
}

# Event data keys whose value a preview may show: ids and plain categories. Every other value is
# redacted unless the catalog says its field is not identifying.
SHOWN_DATA_KEYS = frozenset({"status", "tier", "interval", "category", "priority", "reason"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Constant(_Model):
    value: str | int | float | bool


DataSpec = dict[str, str | Constant]  # event data key (dotted for nesting) -> column or constant


class InsertRule(_Model):
    type: str
    occurred_at: str | None = Field(None, pattern=COLUMN)  # default: the model's created_at
    data: DataSpec = Field(default_factory=dict)


class ChangeRule(_Model):
    """`column` reaching `to` (or becoming non-null with `not_null: true`), optionally only
    when it was one of `from` before, emits `type`. On a row seen for the first time the rule
    fires if its condition holds (an initial load tells what already happened)."""

    name: str = Field(pattern=NAME)
    column: str = Field(pattern=COLUMN)
    to: str | int | bool | None = None
    not_null: bool = False
    from_: tuple[str | int | bool | None, ...] | None = Field(None, alias="from")
    type: str
    occurred_at: str | None = Field(None, pattern=COLUMN)  # default: the model's cursor
    data: DataSpec = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_condition(self) -> ChangeRule:
        if (self.to is not None) == self.not_null:
            raise ValueError("give exactly one of `to: VALUE` and `not_null: true`")
        return self


class UpdateRule(_Model):
    type: str = "patient.updated"
    occurred_at: str | None = Field(None, pattern=COLUMN)


class DeleteRule(_Model):
    type: str = "patient.deleted"
    data: DataSpec = Field(default_factory=dict)


class ModelConfig(_Model):
    name: str = Field(pattern=NAME)
    table: str | None = Field(None, pattern=TABLE)
    query: str | None = None
    primary_key: str = Field(pattern=COLUMN)
    cursor: str | None = Field(None, pattern=COLUMN)
    created_at: str | None = Field(None, pattern=COLUMN)
    soft_delete: str | None = Field(None, pattern=COLUMN)
    patient_id: str = Field(pattern=COLUMN)
    fields: dict[str, str] = Field(default_factory=dict)  # column -> catalog field
    on_insert: InsertRule | None = None
    on_change: tuple[ChangeRule, ...] = ()
    on_update: UpdateRule | None = None
    on_delete: DeleteRule | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> ModelConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table:` and `query:`")
        return self

    def columns(self) -> list[str]:
        """Every column the model reads, in a stable order (the row snapshot's order)."""
        wanted: list[str] = [self.primary_key, self.patient_id]
        for c in (self.cursor, self.created_at, self.soft_delete):
            if c:
                wanted.append(c)
        wanted += list(self.fields)
        rules: list[Any] = [self.on_insert, *self.on_change, self.on_update, self.on_delete]
        for rule in rules:
            if rule is None:
                continue
            if getattr(rule, "occurred_at", None):
                wanted.append(rule.occurred_at)
            if isinstance(rule, ChangeRule):
                wanted.append(rule.column)
            for spec in getattr(rule, "data", {}).values():
                if isinstance(spec, str):
                    wanted.append(spec)
        return list(dict.fromkeys(wanted))

    def watched(self) -> list[str]:
        """Columns whose previous value a rule asks about: a keyed digest of each is kept."""
        cols = [r.column for r in self.on_change] + list(self.fields)
        if self.soft_delete:
            cols.append(self.soft_delete)
        return list(dict.fromkeys(cols))


class SourceConfig(_Model):
    name: str = Field(pattern=NAME)
    url_env: str = Field(pattern=ENV_NAME)
    statement_timeout_seconds: float = Field(30, gt=0, le=3600)
    safety_window_seconds: float = Field(300, ge=0, le=7 * 86_400)
    page_size: int = Field(1000, ge=1, le=50_000)
    key_diff_every_minutes: float = Field(1440, gt=0)
    models: tuple[ModelConfig, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_url(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and ("url" in raw or "dsn" in raw):
            raise ValueError(
                "a database URL never goes in the sources file: name the environment variable "
                "that holds it with `url_env:` (or put it in a file named by <url_env>_FILE)"
            )
        return raw

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)


class SourcesFile(_Model):
    version: Literal[1]
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    path: str = ""

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise LookupError(
            f"no source named {name!r} in {self.path} (known: "
            f"{', '.join(s.name for s in self.sources)})"
        )


def load_sources(path: str | Path, *, text: str | None = None) -> SourcesFile:
    """A sources file, parsed and validated; errors name file, line and field."""
    p = Path(path)
    shown = str(p)
    if text is None:
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceConfigError(
                shown, None, "", f"cannot read the file ({exc.strerror})"
            ) from None
    try:
        raw, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise SourceConfigError(shown, exc.line, "", f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:  # a node load_with_lines cannot re-read (e.g. a bare `!` tag)
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SourceConfigError(
            shown, line, "", "not valid YAML (an unsupported tag or node)"
        ) from None
    if not isinstance(raw, dict):
        raise SourceConfigError(shown, 1, "", "expected a mapping with version and sources")
    try:
        loaded = SourcesFile.model_validate({**raw, "path": shown})
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = tuple("from" if part == "from_" else part for part in first["loc"])
        loc = tuple(
            p
            for p in loc
            if not (isinstance(p, str) and (p.startswith("function-") or p in ("str", "Constant")))
        )
        raise SourceConfigError(
            shown, line_of(lines, loc), dotted(loc), first["msg"].removeprefix("Value error, ")
        ) from None
    _check(loaded, shown, lines)
    return loaded


def _check(f: SourcesFile, path: str, lines: dict[Location, int]) -> None:
    names = [s.name for s in f.sources]
    for i, source in enumerate(f.sources):
        if names.count(source.name) > 1:
            raise SourceConfigError(
                path,
                line_of(lines, ("sources", i, "name")),
                f"sources[{i}].name",
                f"source name {source.name!r} is used twice",
            )
        models = [m.name for m in source.models]
        for j, model in enumerate(source.models):
            base: Location = ("sources", i, "models", j)

            def fail(loc: Location, problem: str, base: Location = base) -> None:
                raise SourceConfigError(
                    path, line_of(lines, base + loc), dotted(base + loc), problem
                )

            if models.count(model.name) > 1:
                fail(("name",), f"model name {model.name!r} is used twice in this source")
            _check_model(model, fail)


def _check_model(m: ModelConfig, fail: Any) -> None:
    if m.query is not None:
        q = m.query.strip().rstrip(";").strip()
        if ";" in q or not re.match(r"(?is)^(select|with)\b", q):
            fail(("query",), "must be one SELECT (or WITH ... SELECT) statement")
    for column, name in m.fields.items():
        if not re.match(COLUMN, column):
            fail(("fields", column), "not a column name")
        if name not in FIELDS:
            fail(("fields", column), f"{name!r} is not in the field catalog")
    for key_column, what in ((m.primary_key, "primary_key"), (m.cursor, "cursor")):
        field_name = m.fields.get(key_column or "")
        if field_name is not None and FIELDS[field_name].is_identifying:
            fail(
                (what,),
                f"column {key_column!r} holds {field_name!r}, an identifying value; checkpoints "
                "keep the primary key and the cursor in plain text, so use an opaque id or a "
                "timestamp",
            )
    if (
        m.cursor is None
        and m.on_insert is not None
        and m.on_insert.occurred_at is None
        and m.created_at is None
    ):
        fail(
            ("on_insert",),
            "needs `occurred_at: COLUMN` (or a model `created_at:`): the model has no cursor",
        )
    if m.on_insert is not None:
        _check_event(m, ("on_insert",), m.on_insert.type, m.on_insert.data, fail)
    for k, rule in enumerate(m.on_change):
        if rule.occurred_at is None and m.cursor is None:
            fail(("on_change", k), "needs `occurred_at: COLUMN`: the model has no cursor")
        _check_event(m, ("on_change", k), rule.type, rule.data, fail)
    if len({r.name for r in m.on_change}) != len(m.on_change):
        fail(("on_change",), "rule names must be unique within a model (they go into event ids)")
    if m.on_update is not None:
        if m.on_update.type not in PATIENT_EVENTS[1:]:
            fail(
                ("on_update", "type"),
                "on_update emits patient.updated (the mapped fields that changed)",
            )
        if not m.fields:
            fail(("on_update",), "on_update needs `fields:` (the columns whose changes it reports)")
        if m.on_update.occurred_at is None and m.cursor is None:
            fail(("on_update",), "needs `occurred_at: COLUMN`: the model has no cursor")
    if m.on_delete is not None:
        _check_event(m, ("on_delete",), m.on_delete.type, m.on_delete.data, fail)
    if not (m.on_insert or m.on_change or m.on_update or m.on_delete):
        fail((), "a model needs at least one rule (on_insert, on_change, on_update, on_delete)")


def _check_event(m: ModelConfig, loc: Location, type_: str, data: DataSpec, fail: Any) -> None:
    if type_ not in EVENT_TYPES:
        fail((*loc, "type"), "not a telecrm event type (see docs/events.md)")
    if type_.startswith(RESERVED_PREFIXES):
        fail((*loc, "type"), "journey.* and analytics.* events are telecrm's own")
    model = DATA_MODELS[(type_, 1)]
    for key, spec in data.items():
        top = key.split(".", 1)[0]
        if top not in model.model_fields:
            fail(
                (*loc, "data", key),
                f"{type_} has no data field {top!r} (known: {', '.join(model.model_fields)})",
            )
        if isinstance(spec, str) and not re.match(COLUMN, spec):
            fail((*loc, "data", key), "not a column name (a constant is written `{value: ...}`)")
    given = {k.split(".", 1)[0] for k in data}
    if type_ in PATIENT_EVENTS:
        given |= {PATIENT_DATA_PATH[f][0] for f in m.fields.values() if f in PATIENT_DATA_PATH}
        unplaced = sorted(f for f in m.fields.values() if f not in PATIENT_DATA_PATH)
        if unplaced:
            fail(
                (*loc, "type"),
                f"catalog field(s) {', '.join(unplaced)} have no place in a {type_} event",
            )
    missing = sorted(
        n for n, info in model.model_fields.items() if info.is_required() and n not in given
    )
    if missing:
        fail((*loc, "data"), f"{type_} needs data field(s) {', '.join(missing)}")
