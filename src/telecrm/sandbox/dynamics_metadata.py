"""The Dataverse sandbox's metadata Web API: tables, one-to-many relationships, columns, alternate keys.

Payload shapes follow crm-apis.md §4.2 and Microsoft's "Create and update table definitions /
table relationships using the Web API" (MicrosoftDocs/powerapps-docs): `POST EntityDefinitions`
with SchemaName, DisplayName, DisplayCollectionName, OwnershipType, IsActivity, HasActivities,
HasNotes and, in `Attributes`, one StringAttributeMetadata with `IsPrimaryName: true`;
`POST RelationshipDefinitions` with a OneToManyRelationshipMetadata whose `Lookup` (a
LookupAttributeMetadata) is created with it; `POST EntityDefinitions(LogicalName='contact')/Attributes`
with an `@odata.type` such as `Microsoft.Dynamics.CRM.StringAttributeMetadata`; `POST .../Keys`
with `SchemaName` and `KeyAttributes`. A definition read by name (`(LogicalName='x')`,
`RelationshipDefinitions(SchemaName='x')`) is 404 when absent. A key is Pending until its index
job finishes (`EntityKeyIndexStatus`). Messages of refusals the docs do not show are UNCONFIRMED.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from telecrm.sandbox.dynamics_schema import (
    BAD_PROPERTY,
    DOES_NOT_EXIST,
    INVALID_ARGUMENT,
    NOT_FOUND_SEGMENT,
    AlternateKey,
    Column,
    OdataError,
    Relationship,
    Table,
)
from telecrm.sandbox.dynamics_store import DataverseStore

# -- the metadata Web API: EntityDefinitions/Attributes and /Keys (§4.2, payloads UNCONFIRMED) ----
ATTRIBUTE_TYPES = {  # @odata.type -> column kind
    "StringAttributeMetadata": "String",
    "MemoAttributeMetadata": "Memo",
    "IntegerAttributeMetadata": "Integer",
    "DecimalAttributeMetadata": "Decimal",
    "MoneyAttributeMetadata": "Money",
    "DoubleAttributeMetadata": "Double",
    "BooleanAttributeMetadata": "Boolean",
    "DateTimeAttributeMetadata": "DateTime",
    "PicklistAttributeMetadata": "Picklist",
}
RELATIONSHIP_PATH = re.compile(r"RelationshipDefinitions(?:\(SchemaName='(\w+)'\))?")
TABLE_REQUIRED = (
    "DisplayCollectionName",
    "OwnershipType",
    "IsActivity",
    "HasActivities",
    "HasNotes",
)
OWNERSHIP_TYPES = ("UserOwned", "OrganizationOwned", "TeamOwned")
METADATA_PATH = re.compile(
    r"EntityDefinitions\(LogicalName='(\w+)'\)(?:/(Attributes|Keys)(?:\(LogicalName='(\w+)'\))?)?"
)
Reply = tuple[int, dict[str, str], Any]


def _metadata_id(*names: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-sandbox:" + "/".join(names)))


@dataclass
class MetadataApi:
    """Reads and creates column and key definitions; errors are `OdataError`s."""

    store: DataverseStore

    def handle(self, method: str, path: str, raw: bytes) -> Reply:
        if path == "WhoAmI" and method == "GET":
            return (
                200,
                {},
                {
                    "UserId": _metadata_id("user"),
                    "BusinessUnitId": _metadata_id("bu"),
                    "OrganizationId": _metadata_id("org"),
                },
            )
        if path == "EntityDefinitions" and method == "POST":
            table = self._create_table(self._body(raw))
            return (
                204,
                {"OData-EntityId": f"EntityDefinitions({_metadata_id(table.logical)})"},
                None,
            )
        if (r := RELATIONSHIP_PATH.fullmatch(path)) is not None:
            return self._relationships(method, r.group(1), raw)
        m = METADATA_PATH.fullmatch(path)
        if m is None:
            raise OdataError(
                404, NOT_FOUND_SEGMENT, "Resource not found for the segment 'EntityDefinitions'."
            )
        table = self.store.table(m.group(1))
        part, name = m.group(2), m.group(3)
        if part is None and method == "GET":
            return (
                200,
                {},
                {
                    "LogicalName": table.logical,
                    "SchemaName": table.logical,
                    "EntitySetName": table.entity_set,
                    "PrimaryIdAttribute": table.primary_id,
                    "PrimaryNameAttribute": table.primary_name,
                    "IsCustomEntity": table.custom,
                    "MetadataId": _metadata_id(table.logical),
                },
            )
        if method == "GET" and part == "Attributes":
            if name is None:
                return 200, {}, {"value": [self._attribute(table, n) for n in table.columns]}
            if name not in table.columns:
                raise OdataError(
                    404,
                    DOES_NOT_EXIST,
                    f"Could not find attribute with name '{name}' for entity '{table.logical}'.",
                )
            return 200, {}, self._attribute(table, name)
        if method == "GET" and part == "Keys":
            keys = self.store.keys[table.logical]
            if name is None:
                return 200, {}, {"value": [self._key(table, k) for k in keys.values()]}
            if name not in keys:
                raise OdataError(
                    404,
                    DOES_NOT_EXIST,
                    f"Could not find entity key with name '{name}' for entity '{table.logical}'.",
                )
            return 200, {}, self._key(table, keys[name])
        if method == "POST" and part in ("Attributes", "Keys") and name is None:
            body = self._body(raw)
            if part == "Attributes":
                created = self._create_attribute(table, body)
            else:
                attributes = body.get("KeyAttributes")
                if (
                    not isinstance(attributes, list)
                    or not attributes
                    or not all(isinstance(a, str) for a in attributes)
                ):
                    raise OdataError(
                        400, INVALID_ARGUMENT, "KeyAttributes must list at least one attribute."
                    )
                created = self.store.add_key(
                    table.logical, self._schema_name(body), tuple(attributes)
                ).name
            url = f"EntityDefinitions({_metadata_id(table.logical)})/{part}({_metadata_id(table.logical, created)})"
            return 204, {"OData-EntityId": url}, None
        raise OdataError(
            405, BAD_PROPERTY, "The requested method is not supported on this resource."
        )

    def _body(self, raw: bytes) -> dict[str, Any]:
        """A definition to create: JSON with a DisplayName label."""
        body = self._json(raw)
        _label(body.get("DisplayName"), "DisplayName")
        return body

    # -- tables and relationships ----------------------------------------------------------------
    def _create_table(self, body: dict[str, Any]) -> Table:
        kind = str(body.get("@odata.type", "Microsoft.Dynamics.CRM.EntityMetadata")).lstrip("#")
        if kind != "Microsoft.Dynamics.CRM.EntityMetadata":
            raise OdataError(400, INVALID_ARGUMENT, "The @odata.type of the entity is not valid.")
        name = self._schema_name(body)
        missing = [p for p in TABLE_REQUIRED if p not in body]
        if missing:
            raise OdataError(
                400, INVALID_ARGUMENT, f"{missing[0]} is required to create an entity."
            )
        _label(body.get("DisplayCollectionName"), "DisplayCollectionName")
        if body["OwnershipType"] not in OWNERSHIP_TYPES:
            raise OdataError(
                400,
                BAD_PROPERTY,
                f"The value '{body['OwnershipType']}' is not valid for OwnershipType.",
            )
        if not all(isinstance(body[p], bool) for p in TABLE_REQUIRED[2:]):
            raise OdataError(
                400, BAD_PROPERTY, "IsActivity, HasActivities and HasNotes take true or false."
            )
        primaries = [
            a
            for a in body.get("Attributes") or []
            if isinstance(a, dict) and a.get("IsPrimaryName") is True
        ]
        if len(primaries) != 1 or _odata_kind(primaries[0]) != "StringAttributeMetadata":
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                "The entity needs exactly one primary name attribute: a "
                "StringAttributeMetadata with IsPrimaryName true.",
            )
        primary = primaries[0]
        if (primary.get("FormatName") or {}).get("Value") != "Text":
            raise OdataError(
                400, INVALID_ARGUMENT, "The primary name attribute must use the Text format."
            )
        max_length = primary.get("MaxLength")
        if not (isinstance(max_length, int) and 1 <= max_length <= 4000):
            raise OdataError(400, INVALID_ARGUMENT, "MaxLength must be between 1 and 4000.")
        _label(primary.get("DisplayName"), "DisplayName")
        return self.store.add_table(name, self._schema_name(primary), max_length)

    def _relationships(self, method: str, name: str | None, raw: bytes) -> Reply:
        if method == "GET" and name is not None:
            r = self.store.relationships.get(name.lower())
            if r is None:
                raise OdataError(
                    404, DOES_NOT_EXIST, f"Could not find relationship with name '{name}'."
                )
            return 200, {}, _relationship(r)
        if method == "GET":
            return 200, {}, {"value": [_relationship(r) for r in self.store.relationships.values()]}
        if method != "POST" or name is not None:
            raise OdataError(
                405, BAD_PROPERTY, "The requested method is not supported on this resource."
            )
        body = self._json(raw)
        if _odata_kind(body) != "OneToManyRelationshipMetadata":
            raise OdataError(  # the sandbox has no many-to-many (UNCONFIRMED message)
                400,
                INVALID_ARGUMENT,
                "The @odata.type must be Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata.",
            )
        name = self._schema_name(body)
        referenced = self.store.table(str(body.get("ReferencedEntity", "")))
        referencing = self.store.table(str(body.get("ReferencingEntity", "")))
        if body.get("ReferencedAttribute", referenced.primary_id) != referenced.primary_id:
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                f"ReferencedAttribute must be the primary key of entity '{referenced.logical}'.",
            )
        lookup = body.get("Lookup")
        if not isinstance(lookup, dict) or _odata_kind(lookup) != "LookupAttributeMetadata":
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                "A one-to-many relationship needs a Lookup of type LookupAttributeMetadata.",
            )
        _label(lookup.get("DisplayName"), "DisplayName")
        column = self._schema_name(lookup)
        navigation = str(body.get("ReferencingEntityNavigationPropertyName") or column).lower()
        self.store.add_relationship(
            Relationship(name, referenced.logical, referencing.logical, column, navigation)
        )
        return 204, {"OData-EntityId": f"RelationshipDefinitions({_metadata_id(name)})"}, None

    @staticmethod
    def _json(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OdataError(
                400, BAD_PROPERTY, "Invalid JSON. A token was not recognized in the JSON content."
            )
        return body

    @staticmethod
    def _schema_name(body: dict[str, Any]) -> str:
        name = body.get("SchemaName")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z]\w{0,49}", name):
            raise OdataError(
                400, INVALID_ARGUMENT, "SchemaName is required and must be a valid identifier."
            )
        return name.lower()  # LogicalName is the SchemaName in lower case

    def _create_attribute(self, table: Table, body: dict[str, Any]) -> str:
        kind = ATTRIBUTE_TYPES.get(_odata_kind(body))
        if kind is None:
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                "The @odata.type of the attribute is missing or not supported.",
            )
        name = self._schema_name(body)
        max_length = body.get("MaxLength", 0)
        if kind in ("String", "Memo") and not (
            isinstance(max_length, int) and 1 <= max_length <= 4000
        ):
            raise OdataError(400, INVALID_ARGUMENT, "MaxLength must be between 1 and 4000.")
        options = tuple(
            int(o["Value"]) for o in ((body.get("OptionSet") or {}).get("Options") or [])
        )
        if kind == "Picklist" and not options:
            raise OdataError(
                400, INVALID_ARGUMENT, "A picklist attribute needs an OptionSet with Options."
            )
        date_only = body.get("Format") == "DateOnly"
        self.store.add_column(
            table.logical, name, Column(kind, max_length or 0, options, True, date_only)
        )
        return name

    @staticmethod
    def _attribute(table: Table, name: str) -> dict[str, Any]:
        col = table.columns[name]
        out = {
            "@odata.type": f"#Microsoft.Dynamics.CRM.{col.kind}AttributeMetadata",
            "LogicalName": name,
            "SchemaName": name,
            "AttributeType": col.kind,
            "IsCustomAttribute": col.custom,
            "MetadataId": _metadata_id(table.logical, name),
        }
        return out | ({"MaxLength": col.max_length} if col.kind in ("String", "Memo") else {})

    def _key(self, table: Table, key: AlternateKey) -> dict[str, Any]:
        return {
            "LogicalName": key.name,
            "SchemaName": key.name,
            "KeyAttributes": list(key.attributes),
            "EntityKeyIndexStatus": key.status(self.store.now()),
            "MetadataId": _metadata_id(table.logical, key.name),
        }


def _odata_kind(body: dict[str, Any]) -> str:
    return str(body.get("@odata.type", "")).lstrip("#").removeprefix("Microsoft.Dynamics.CRM.")


def _label(value: Any, name: str) -> None:
    labels = (value.get("LocalizedLabels") if isinstance(value, dict) else None) or [{}]
    first = labels[0]
    if not isinstance(first, dict) or not first.get("Label") or not first.get("LanguageCode"):
        raise OdataError(
            400, INVALID_ARGUMENT, f"{name} needs a LocalizedLabel with Label and LanguageCode."
        )


def _relationship(r: Relationship) -> dict[str, Any]:
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": r.schema_name,
        "ReferencedEntity": r.referenced,
        "ReferencingEntity": r.referencing,
        "ReferencingAttribute": r.lookup,
        "ReferencingEntityNavigationPropertyName": r.navigation,
        "IsCustomRelationship": True,
        "MetadataId": _metadata_id(r.schema_name),
    }
