"""Dataverse provisioning through the metadata Web API: tables, their lookup to contact, columns, keys.

`telecrm crm provision dynamics` runs `Provisioning.run`: for each custom table of the mapping,
`EntityDefinitions` (the table with its primary name column), then `RelationshipDefinitions` (a
one-to-many from contact whose lookup column is created in the same request), then every custom
column (`EntityDefinitions(LogicalName='t')/Attributes`) and an alternate key on each unique one
(`.../Keys`). Each step first GETs the definition by name (404 when absent, Microsoft's
"Retrieve table definitions by name"), so a second run makes no change and reports "exists".
Payloads follow Microsoft's "Create and update table definitions / table relationships using the
Web API" (MicrosoftDocs/powerapps-docs, webapi/create-update-entity-*-using-web-api.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from telecrm.connectors.base import (
    BatchRejected,
    ConfigurationError,
    CustomProperty,
    CustomTable,
    ProvisionStep,
)

LANGUAGE_ENGLISH = 1033  # LocalizedLabel.LanguageCode
METADATA_EXISTS_CODES = frozenset({"0x80044363"})  # "already exists" (UNCONFIRMED)
TEXT_LENGTH = 100  # a text column's MaxLength unless the mapping gives one (Dataverse: 1-4000)
PRIMARY_NAME_LENGTH = 100  # the primary name column's MaxLength in Microsoft's example
MENU_ORDER = 10000  # AssociatedMenuConfiguration.Order in Microsoft's example
# A parental relationship: erasing a contact deletes the patient's rows of the table with it.
CASCADE = {k: "Cascade" for k in ("Assign", "Delete", "Merge", "Reparent", "Share", "Unshare")}

JsonCall = Callable[..., tuple[int, Any]]  # DynamicsConnector._json(endpoint, method, path, ...)


def label(text: str) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
                "Label": text,
                "LanguageCode": LANGUAGE_ENGLISH,
            }
        ],
    }


def attribute_metadata(prop: CustomProperty) -> dict[str, Any]:
    """The column definition for one property (§4.2). Enumerations become text columns: a
    Dataverse choice column takes integer option values, and telecrm sends the stage's name."""
    meta: dict[str, Any] = {
        "SchemaName": prop.name,
        "DisplayName": label(prop.label),
        "RequiredLevel": {"Value": "None"},
    }
    if prop.kind in ("string", "enumeration"):
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "MaxLength": prop.max_length or TEXT_LENGTH,
            "FormatName": {"Value": "Text"},
        } | meta
    if prop.kind == "number":
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.DecimalAttributeMetadata",
            "Precision": 2,
            "MinValue": -100_000_000_000,
            "MaxValue": 100_000_000_000,
        } | meta
    if prop.kind in ("date", "datetime"):
        fmt = "DateOnly" if prop.kind == "date" else "DateAndTime"
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
            "Format": fmt,
        } | meta
    options = {
        "TrueOption": {"Value": 1, "Label": label("Yes")},
        "FalseOption": {"Value": 0, "Label": label("No")},
    }
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
        "OptionSet": options,
    } | meta


def table_metadata(t: CustomTable) -> dict[str, Any]:
    """EntityMetadata for a new table: the properties Microsoft lists as required, and the
    primary name column (a StringAttributeMetadata with IsPrimaryName) in `Attributes`."""
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": t.schema_name,
        "DisplayName": label(t.label),
        "DisplayCollectionName": label(t.plural_label),
        "Description": label(t.description or t.label),
        "OwnershipType": t.ownership,
        "IsActivity": False,
        "HasActivities": False,
        "HasNotes": False,
        "Attributes": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "SchemaName": t.primary_name,
                "IsPrimaryName": True,
                "MaxLength": PRIMARY_NAME_LENGTH,
                "FormatName": {"Value": "Text"},
                "RequiredLevel": {"Value": "None"},
                "DisplayName": label("Name"),
            }
        ],
    }


def relationship_name(t: CustomTable) -> str:
    """`telecrm_contact_telecrm_prescription`: Microsoft's `{prefix}_{one}_{many}` pattern."""
    return f"{t.schema_name.split('_', 1)[0]}_contact_{t.schema_name}"


def relationship_metadata(t: CustomTable) -> dict[str, Any]:
    """A one-to-many from contact; its lookup column is created with it (deep insert), and its
    navigation property gets the lookup's own name, which `nav@odata.bind` then uses."""
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": relationship_name(t),
        "ReferencedEntity": "contact",
        "ReferencedAttribute": "contactid",
        "ReferencingEntity": t.schema_name,
        "ReferencingEntityNavigationPropertyName": t.contact_lookup,
        "CascadeConfiguration": CASCADE,
        "AssociatedMenuConfiguration": {
            "Behavior": "UseCollectionName",
            "Group": "Details",
            "Order": MENU_ORDER,
        },
        "Lookup": {
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "SchemaName": t.contact_lookup,
            "AttributeType": "Lookup",
            "AttributeTypeName": {"Value": "LookupType"},
            "DisplayName": label("Patient contact"),
            "RequiredLevel": {"Value": "None"},
        },
    }


class Provisioning:
    """One provisioning run over the connector's single-call path (`_json`)."""

    def __init__(self, call: JsonCall, solution: str | None, identifier: Callable[[str], str]):
        self._call = call
        self._headers = {"MSCRM.SolutionUniqueName": solution} if solution else {}
        self._identifier = identifier

    def run(
        self,
        properties: Sequence[CustomProperty],
        tables: Sequence[CustomTable],
        known: Mapping[str, str],
    ) -> list[ProvisionStep]:
        """Tables first (a column needs its table), then their lookups, then columns and keys."""
        logical = dict(known) | {t.entity_set: t.schema_name for t in tables}
        steps: list[ProvisionStep] = []
        for t in tables:
            steps.append(self._table(t))
        for t in tables:
            steps.append(
                self._guarded(f"{t.entity_set}.lookup({t.contact_lookup})", t, self._lookup)
            )
        for prop in properties:
            steps += self._column(prop, logical)
        return steps

    def _guarded(
        self, target: str, t: CustomTable, step: Callable[[CustomTable, str], ProvisionStep]
    ) -> ProvisionStep:
        try:
            return step(t, target)
        except (BatchRejected, ConfigurationError) as exc:
            return ProvisionStep(target, "failed", exc.code)

    def _lookup(self, t: CustomTable, target: str) -> ProvisionStep:
        name = f"SchemaName='{self._identifier(relationship_name(t))}'"
        return self._ensure("RelationshipDefinitions", name, relationship_metadata(t), target)

    def _table(self, t: CustomTable) -> ProvisionStep:
        """Create the table unless it exists; either way its entity set must be the mapping's."""
        return self._guarded(f"table({t.schema_name})", t, self._create_table)

    def _create_table(self, t: CustomTable, target: str) -> ProvisionStep:
        one = f"EntityDefinitions(LogicalName='{self._identifier(t.schema_name)}')"
        status, found = self._call("GET EntityDefinitions", "GET", one)
        action: Literal["created", "exists"] = "exists"
        if status != 200:
            try:
                self._call(
                    "POST EntityDefinitions",
                    "POST",
                    "EntityDefinitions",
                    json=table_metadata(t),
                    headers=self._headers,
                )
                action = "created"
            except BatchRejected as exc:
                if exc.code not in METADATA_EXISTS_CODES:
                    raise
            _, found = self._call("GET EntityDefinitions", "GET", one)
        entity_set = found.get("EntitySetName") if isinstance(found, dict) else None
        if entity_set != t.entity_set:  # upserts go to the set the mapping names
            return ProvisionStep(target, "failed", f"its entity set is {entity_set}")
        return ProvisionStep(target, action)

    def _column(self, prop: CustomProperty, logical: Mapping[str, str]) -> list[ProvisionStep]:
        target = f"{prop.crm_object}.{prop.name}"
        steps: list[ProvisionStep] = []
        try:
            table = self._identifier(logical.get(prop.crm_object, prop.crm_object))
            base = f"EntityDefinitions(LogicalName='{table}')"
            name = self._identifier(prop.name)
            steps.append(
                self._ensure(
                    f"{base}/Attributes",
                    f"LogicalName='{name}'",
                    attribute_metadata(prop),
                    target,
                )
            )
            if prop.unique:
                key = {
                    "SchemaName": f"{prop.name}_key",
                    "DisplayName": label(f"{prop.label} key"),
                    "KeyAttributes": [prop.name],
                }
                steps.append(
                    self._ensure(
                        f"{base}/Keys",
                        f"LogicalName='{name}_key'",
                        key,
                        f"{prop.crm_object}.key({prop.name})",
                    )
                )
        except (BatchRejected, ConfigurationError) as exc:
            steps.append(ProvisionStep(target, "failed", exc.code))
        return steps

    def _ensure(
        self, collection: str, by_name: str, body: dict[str, Any], target: str
    ) -> ProvisionStep:
        endpoint = collection.rpartition("/")[2]
        one = f"{collection}({by_name})"
        status, found = self._call(f"GET {endpoint}", "GET", one)
        if status == 200:
            index = found.get("EntityKeyIndexStatus") if isinstance(found, dict) else None
            return ProvisionStep(
                target, "exists", "" if index in (None, "Active") else f"index {index}"
            )
        try:
            self._call(f"POST {endpoint}", "POST", collection, json=body, headers=self._headers)
        except BatchRejected as exc:
            if exc.code in METADATA_EXISTS_CODES:
                return ProvisionStep(target, "exists")
            raise
        if endpoint == "Keys":  # §4.2: upserts by the key fail until its index job is Active
            _, made = self._call("GET Keys", "GET", one)
            index = made.get("EntityKeyIndexStatus") if isinstance(made, dict) else None
            return ProvisionStep(target, "created", "" if index == "Active" else f"index {index}")
        return ProvisionStep(target, "created")
