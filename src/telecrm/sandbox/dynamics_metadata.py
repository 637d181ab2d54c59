"""The Dataverse sandbox's metadata Web API: EntityDefinitions, their Attributes and alternate Keys.

Payload shapes follow crm-apis.md §4.2 (column and key creation payloads are UNCONFIRMED there):
`POST EntityDefinitions(LogicalName='contact')/Attributes` with an `@odata.type` such as
`Microsoft.Dynamics.CRM.StringAttributeMetadata`, `SchemaName` and a `DisplayName` label;
`POST .../Keys` with `SchemaName` and `KeyAttributes`; `GET .../Attributes(LogicalName='x')` is
404 when absent. A key is Pending until its index job finishes (`EntityKeyIndexStatus`).
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
                    "EntitySetName": table.entity_set,
                    "PrimaryIdAttribute": table.primary_id,
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

    @staticmethod
    def _body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OdataError(
                400, BAD_PROPERTY, "Invalid JSON. A token was not recognized in the JSON content."
            )
        label = ((body.get("DisplayName") or {}).get("LocalizedLabels") or [{}])[0]
        if not isinstance(label, dict) or not label.get("Label") or not label.get("LanguageCode"):
            raise OdataError(
                400,
                INVALID_ARGUMENT,
                "DisplayName needs a LocalizedLabel with Label and LanguageCode.",
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
        kind = ATTRIBUTE_TYPES.get(
            str(body.get("@odata.type", "")).lstrip("#").removeprefix("Microsoft.Dynamics.CRM.")
        )
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
