"""Mapping files: which telecrm values go to which CRM objects and properties, validated once.

A mapping is a versioned YAML file per destination (connectors/mappings/ has the defaults). Loading
refuses, with file, line and field named: unknown catalog fields or attributes, a value whose type
the transform or the CRM property cannot take, and any PHI field bound for a destination without
`baa: true` (or, on HubSpot under the BAA, a PHI field going into a property not created as
sensitive). A record can disclose PHI without naming a PHI field: a prescription's CRM record tells
that a medication was prescribed. transforms.SOURCE_REVEALS / ATTRIBUTE_REVEALS name the catalog
field each such source or attribute reveals, and the catalog decides whether that is PHI. The sync
engine never re-checks a loaded mapping; it checks PHI once more at send time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecrm.connectors.base import CustomProperty, CustomTable
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage
from telecrm.sync.transforms import (
    ATTRIBUTE_REVEALS,
    ATTRIBUTES,
    SOURCE_REVEALS,
    TRANSFORMS,
    Kind,
    kind_of_field,
    revealed_fields,
    transform_output,
)
from telecrm.sync.yaml_lines import YamlSyntaxError, dotted, line_of, load_with_lines

JOURNEY_FIELD = re.compile(r"^journey\.[a-z0-9_\-]{1,64}$")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "connectors" / "mappings"
Source = Literal[
    "patient",
    "consultation",
    "support_ticket",
    "prescription",
    "subscription",
    "treatment_plan",
    "provider_relationship",
    "care_task",
    "care_case",
]
DATAVERSE_NAME = r"^[a-z][a-z0-9]{1,7}_[a-z][a-z0-9_]{0,40}$"  # publisher prefix, then the name


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names file, line and field."""

    def __init__(self, path: str, line: int | None, where: str, problem: str) -> None:
        at = f"{path}:{line}" if line else path
        super().__init__(f"{at}: {where}: {problem}" if where else f"{at}: {problem}")
        self.path, self.line, self.where, self.problem = path, line, where, problem


class PhiDisclosureRefused(MappingError):
    """A PHI field mapped to a destination that may not receive PHI."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PropertySpec(_Model):
    """Where one CRM property's value comes from: exactly one of field / from / value / template
    / relation, then an optional transform."""

    field: str | None = None
    from_: str | None = Field(None, alias="from")
    value: str | int | float | bool | None = None
    template: str | None = None
    relation: str | None = None  # another object of this mapping: {its id_property: its key}
    transform: str | None = None
    map: dict[str, str] | None = None  # with transform: map

    @model_validator(mode="after")
    def _one_source(self) -> PropertySpec:
        given = [
            n
            for n in ("field", "from_", "value", "template", "relation")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of field, from, value, template, relation"
                + (f" (got {', '.join(g.rstrip('_') for g in given)})" if given else "")
            )
        if (self.transform == "map") != (self.map is not None):
            raise ValueError("transform: map needs a `map:` table, and `map:` needs transform: map")
        return self


class Condition(_Model):
    stage_reached: Stage | None = None
    stage_not_reached: Stage | None = None


class Association(_Model):
    to: str


class ObjectMapping(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    crm_object: str
    source: Source = "patient"
    id_property: str
    when: Condition | None = None
    converts_from: str | None = None  # Salesforce: a lead of this mapping becomes this record
    properties: dict[str, PropertySpec]
    associations: tuple[Association, ...] = ()


class Limits(_Model):
    requests: int = Field(ge=1)
    per_seconds: float = Field(gt=0)
    daily: int | None = Field(None, ge=1)
    burst: int = Field(1, ge=1)
    # A tighter budget of the CRM's search calls, kept apart (Pipedrive: 10 per 2 s); a search
    # spends from both. Connectors without a search ignore it.
    search: Limits | None = None


class CustomPropertySpec(_Model):
    crm_object: str
    name: str
    label: str
    kind: Literal["string", "number", "enumeration", "date", "datetime", "bool"]
    unique: bool = False
    options: tuple[str, ...] = ()
    sensitive: bool = False
    max_length: int | None = Field(None, ge=1, le=4000)  # Dataverse text columns

    def to_custom_property(self) -> CustomProperty:
        return CustomProperty(**self.model_dump())


class CustomTableSpec(_Model):
    """A Dataverse table `telecrm crm provision` creates, with a lookup to contact. Its columns
    are the `custom_properties` whose crm_object is its entity set; the unique one is its
    alternate key."""

    schema_name: str = Field(pattern=DATAVERSE_NAME)  # also its logical name: lower case
    label: str = Field(min_length=1)
    plural_label: str = Field(min_length=1)
    description: str = ""
    primary_name: str = Field(pattern=DATAVERSE_NAME)  # the primary name column (text)
    contact_lookup: str = Field(pattern=DATAVERSE_NAME)  # lookup column and navigation property
    ownership: Literal["UserOwned", "OrganizationOwned"] = "UserOwned"

    @property
    def entity_set(self) -> str:
        return self.to_custom_table().entity_set

    def to_custom_table(self) -> CustomTable:
        return CustomTable(**self.model_dump())

    @property
    def prefix(self) -> str:
        return self.schema_name.split("_", 1)[0]


class Mapping(_Model):
    version: Literal[1]
    destination: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    connector: Literal["hubspot", "salesforce", "pipedrive", "dynamics"]
    baa: bool = False
    mode: Literal["upsert", "update", "mirror"] = "upsert"
    limits: Limits
    connection: dict[str, str] = Field(default_factory=dict)
    custom_properties: tuple[CustomPropertySpec, ...] = ()
    custom_tables: tuple[CustomTableSpec, ...] = ()
    objects: tuple[ObjectMapping, ...]
    path: str = ""

    def object(self, name: str) -> ObjectMapping:
        return next(o for o in self.objects if o.name == name)

    def custom(self, crm_object: str, name: str) -> CustomPropertySpec | None:
        return next(
            (c for c in self.custom_properties if c.crm_object == crm_object and c.name == name),
            None,
        )

    def table(self, entity_set: str) -> CustomTableSpec | None:
        return next((t for t in self.custom_tables if t.entity_set == entity_set), None)

    def phi_fields(self) -> frozenset[str]:
        """Every PHI catalog field this mapping may disclose, named or revealed."""
        named = {spec.field for o in self.objects for spec in o.properties.values() if spec.field}
        revealed = {
            f
            for o in self.objects
            for f in revealed_fields(o.source, _attributes_read(o.source, o.properties.values()))
        }
        return frozenset(f for f in named | revealed if FIELDS[f].is_phi)


def _attributes_read(source: str, specs: Any) -> list[str]:
    out: list[str] = []
    for spec in specs:
        if spec.from_ is not None:
            out.append(spec.from_)
        elif spec.template is not None:
            out += re.findall(r"{(\w+)}", spec.template)
    return out


def load_mapping(path: str | Path, *, text: str | None = None) -> Mapping:
    """A mapping file, parsed and validated; `path` may name a built-in (`hubspot`)."""
    p = Path(path)
    if text is None:
        if not p.exists() and (BUILTIN_DIR / f"{path}.yaml").exists():
            p = BUILTIN_DIR / f"{path}.yaml"
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(str(p), None, "", f"cannot read the file ({exc.strerror})") from None
    shown = str(p)
    try:
        raw, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise MappingError(shown, exc.line, "", f"not valid YAML: {exc.problem}") from None
    if not isinstance(raw, dict):
        raise MappingError(shown, 1, "", "expected a mapping with version, destination, objects")
    try:
        mapping = Mapping.model_validate({**raw, "path": shown})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple("from" if part == "from_" else part for part in first["loc"])
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        raise MappingError(
            shown, line_of(lines, loc), dotted(loc), first["msg"].removeprefix("Value error, ")
        ) from None
    _check(mapping, shown, lines)
    return mapping


def _check(m: Mapping, path: str, lines: dict[Any, int]) -> None:
    _check_tables(m, path, lines)
    names = [o.name for o in m.objects]
    for i, o in enumerate(m.objects):
        base: tuple[Any, ...] = ("objects", i)

        def fail(
            loc: tuple[Any, ...],
            problem: str,
            cls: type[MappingError] = MappingError,
            base: tuple[Any, ...] = base,
        ) -> None:
            raise cls(path, line_of(lines, base + loc), dotted(base + loc), problem)

        if names.count(o.name) > 1:
            fail(("name",), f"object name {o.name!r} is used twice")
        _check_revealed(m, o, fail)
        table = m.table(o.crm_object)
        if table is not None:
            key = next(
                c.name for c in m.custom_properties if c.crm_object == o.crm_object and c.unique
            )
            if o.id_property != key:
                fail(
                    ("id_property",),
                    f"{o.crm_object} upserts by its alternate key {key!r}, not {o.id_property!r}",
                )
            lookup = o.properties.get(table.contact_lookup)
            if lookup is not None and lookup.relation is None:
                fail(
                    ("properties", table.contact_lookup),
                    f"{table.contact_lookup!r} is the lookup to contact: give it `relation:`",
                )
        if o.id_property not in o.properties:
            fail(
                ("id_property",), f"{o.id_property!r} must also be one of this object's properties"
            )
        if o.converts_from is not None and o.converts_from not in names:
            fail(("converts_from",), f"no object named {o.converts_from!r} in this mapping")
        for j, a in enumerate(o.associations):
            if a.to not in names:
                fail(("associations", j, "to"), f"no object named {a.to!r} in this mapping")
        for prop, spec in o.properties.items():
            loc = ("properties", prop)
            kind = _input_kind(spec, o, m, fail, loc)
            if spec.transform is not None:
                if spec.transform not in TRANSFORMS:
                    fail(
                        (*loc, "transform"),
                        f"unknown transform {spec.transform!r} (known: {', '.join(sorted(TRANSFORMS))})",
                    )
                out = transform_output(spec.transform, kind)
                if out is None:
                    fail(
                        (*loc, "transform"),
                        f"transform {spec.transform!r} cannot take a {kind} value",
                    )
                kind = out  # type: ignore[assignment]
            elif kind in ("list", "object") and spec.relation is None:
                fail(loc, f"a {kind} value cannot go into one property; add `transform: join`")
            custom = m.custom(o.crm_object, prop)
            if custom is not None and not _fits(kind, custom.kind):
                fail(loc, f"a {kind} value cannot go into {custom.kind} property {prop!r}")
            if custom is not None and custom.kind == "enumeration" and spec.map is not None:
                unknown = sorted(set(spec.map.values()) - set(custom.options))
                if unknown:
                    fail(
                        (*loc, "map"), f"values not among {prop!r}'s options: {', '.join(unknown)}"
                    )
            if spec.field is not None and FIELDS[spec.field].is_phi:
                dp = FIELDS[spec.field].data_point.key
                if not m.baa:
                    fail(
                        (*loc, "field"),
                        f"field {spec.field!r} is PHI ({dp}); destination {m.destination!r} has "
                        "baa: false, so it may not receive it",
                        PhiDisclosureRefused,
                    )
                if m.connector == "hubspot" and not (custom is not None and custom.sensitive):
                    fail(
                        (*loc, "field"),
                        f"field {spec.field!r} is PHI ({dp}); HubSpot may hold PHI only in a "
                        "custom property created as sensitive (custom_properties: sensitive: true)",
                        PhiDisclosureRefused,
                    )


def _check_revealed(m: Mapping, o: ObjectMapping, fail: Any) -> None:
    """A source or attribute that reveals a PHI data point needs a BAA (and no HubSpot)."""

    def refuse(loc: tuple[Any, ...], what: str, field: str) -> None:
        dp = FIELDS[field].data_point.key
        if not m.baa:
            fail(
                loc,
                f"{what} reveals {field!r}, which is PHI ({dp}); destination {m.destination!r} "
                "has baa: false, so it may not receive it",
                PhiDisclosureRefused,
            )
        if m.connector == "hubspot":
            fail(
                loc,
                f"{what} reveals {field!r}, which is PHI ({dp}); HubSpot may hold PHI only in "
                "custom properties created as sensitive",
                PhiDisclosureRefused,
            )

    field = SOURCE_REVEALS.get(o.source)
    if field is not None and FIELDS[field].is_phi:
        refuse(("source",), f"a {o.source} record", field)
    for prop, spec in o.properties.items():
        for attribute in _attributes_read(o.source, [spec]):
            field = ATTRIBUTE_REVEALS.get((o.source, attribute))
            if field is not None and FIELDS[field].is_phi:
                kind = "from" if spec.from_ is not None else "template"
                refuse(("properties", prop, kind), f"{o.source} attribute {attribute!r}", field)


def _check_tables(m: Mapping, path: str, lines: dict[Any, int]) -> None:
    seen: set[str] = set()
    for i, t in enumerate(m.custom_tables):
        base: tuple[Any, ...] = ("custom_tables", i)

        def fail(loc: tuple[Any, ...], problem: str, base: tuple[Any, ...] = base) -> None:
            raise MappingError(path, line_of(lines, base + loc), dotted(base + loc), problem)

        if m.connector != "dynamics":
            fail((), "custom tables are created only in Dataverse (connector: dynamics)")
        if t.schema_name in seen:
            fail(("schema_name",), f"table {t.schema_name!r} is declared twice")
        seen.add(t.schema_name)
        for name in ("primary_name", "contact_lookup"):
            if not getattr(t, name).startswith(f"{t.prefix}_"):
                fail((name,), f"must carry the table's publisher prefix '{t.prefix}_'")
        if t.primary_name == t.contact_lookup:
            fail(("contact_lookup",), "must differ from the primary name column")
        columns = [c for c in m.custom_properties if c.crm_object == t.entity_set]
        if sum(c.unique for c in columns) != 1:
            fail(
                ("schema_name",),
                f"needs exactly one custom property with unique: true on {t.entity_set} "
                "(its alternate key, what upserts key on)",
            )
        for c in columns:
            if c.name in (t.primary_name, t.contact_lookup):
                fail(("schema_name",), f"column {c.name!r} is created with the table already")


def _input_kind(
    spec: PropertySpec, o: ObjectMapping, m: Mapping, fail: Any, loc: tuple[Any, ...]
) -> Kind:
    if spec.field is not None:
        if spec.field not in FIELDS:
            fail((*loc, "field"), f"{spec.field!r} is not in the field catalog")
        return kind_of_field(spec.field)
    if spec.from_ is not None:
        if JOURNEY_FIELD.match(spec.from_):
            return "str"  # a value a journey's crm_update sets (journeys docs), sent as text
        available = ATTRIBUTES["patient"] | ATTRIBUTES.get(o.source, {})
        if spec.from_ not in available:
            fail(
                (*loc, "from"),
                f"{spec.from_!r} is not an attribute of a {o.source} record "
                f"(known: {', '.join(sorted(available))})",
            )
        return available[spec.from_]
    if spec.template is not None:
        available = ATTRIBUTES["patient"] | ATTRIBUTES.get(o.source, {})
        for name in re.findall(r"{(\w+)}", spec.template):
            if name not in available:
                fail((*loc, "template"), f"{{{name}}} is not an attribute of a {o.source} record")
        return "str"
    if spec.relation is not None:
        if spec.relation not in [x.name for x in m.objects]:
            fail((*loc, "relation"), f"no object named {spec.relation!r} in this mapping")
        return "object"
    value = spec.value
    return (
        "bool" if isinstance(value, bool) else "float" if isinstance(value, int | float) else "str"
    )


def _fits(kind: str, crm_kind: str) -> bool:
    return {
        "string": kind in ("str", "date", "datetime"),
        "enumeration": kind == "str",
        "number": kind in ("int", "float"),
        "date": kind == "date",
        "datetime": kind == "datetime",
        "bool": kind == "bool",
    }[crm_kind]
