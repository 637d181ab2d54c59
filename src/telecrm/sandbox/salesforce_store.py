"""The Salesforce sandbox's org: sObject schemas, records in memory, and the rules writes obey.

Plain Python, no HTTP: `salesforce.py` turns requests into calls on `SalesforceStore` and its
answers into Salesforce's JSON. Error codes are Salesforce's StatusCode names (SOAP API
"Core Data Types Used in API Calls" / StatusCode), and messages echo values the way Salesforce's
do (e.g. "invalid email address: x@y"), so a client that copies messages into logs is caught.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from telecrm.sandbox.salesforce_schema import (
    BASE62,
    CONVERTED_LEAD_STATUSES,
    CUSTOM_FIELD_TYPES,
    DEFAULTS,
    EMAIL_PATTERN,
    ID_SUFFIX_ALPHABET,
    KEY_PREFIXES,
    ROLLED_BACK,
    STANDARD_FIELDS,
    TEXT_DEFAULT_LENGTH,
    FieldSpec,
    RecordError,
    RequestRefused,
)
from telecrm.sandbox.salesforce_soql import SoqlQuery


def _failure(err: RecordError) -> dict[str, Any]:
    return {"success": False, "errors": [err.error]}


def id18(id15: str) -> str:
    suffix = ""
    for i in range(3):
        chunk = id15[i * 5 : i * 5 + 5]
        suffix += ID_SUFFIX_ALPHABET[sum(1 << j for j, c in enumerate(chunk) if c.isupper())]
    return id15 + suffix


@dataclass
class SalesforceStore:
    """One org: schemas (standard + provisioned custom fields) and records by sObject and Id."""

    now: Callable[[], float]
    seed: int = 0
    schemas: dict[str, dict[str, FieldSpec]] = field(init=False)
    records: dict[str, dict[str, dict[str, Any]]] = field(init=False)
    custom_fields: dict[str, dict[str, Any]] = field(init=False)  # Tooling CustomField rows by Id
    deleted_ids: set[str] = field(init=False)
    _counter: int = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.schemas = {name: dict(fields) for name, fields in STANDARD_FIELDS.items()}
        self.records = {name: {} for name in self.schemas}
        self._indexes: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.custom_fields = {}
        self.deleted_ids = set()
        self._counter = self.seed * 1_000_000

    # -- ids and lookups ------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        self._counter += 1
        n, body = self._counter, ""
        while n:
            n, r = divmod(n, 62)
            body = BASE62[r] + body
        return id18(prefix + "8d" + body.rjust(10, "0"))

    def object_of(self, record_id: str) -> str | None:
        for name, prefix in {**KEY_PREFIXES, "CustomField": "00N"}.items():
            if record_id.startswith(prefix):
                return name
        return None

    def find(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        obj = self.object_of(record_id)
        if obj is None or obj not in self.records:
            return None
        exact = self.records[obj].get(record_id)
        if exact is not None:
            return obj, exact
        for rid, rec in self.records[obj].items():
            if rid == record_id or rid[:15] == record_id[:15]:
                return obj, rec
        return None

    def matching(self, obj: str, field_name: str, value: Any) -> list[dict[str, Any]]:
        key = str(value).casefold()  # external ids are case-insensitive unless marked otherwise
        spec = self.schemas.get(obj, {}).get(field_name)
        if spec is not None and (spec.external_id or spec.unique):
            index = self._index_of(obj, field_name)
            return [
                self.records[obj][rid] for rid in index.get(key, ()) if rid in self.records[obj]
            ]
        return [
            r
            for r in self.records[obj].values()
            if r.get(field_name) is not None and str(r[field_name]).casefold() == key
        ]

    # An index per (object, external-id or unique field), built on first use and kept current
    # wherever a record is stored or removed: lookups stay O(1) at backfill scale.
    def _index_of(self, obj: str, field_name: str) -> dict[str, set[str]]:
        index = self._indexes.get((obj, field_name))
        if index is None:
            index = {}
            for rid, rec in self.records[obj].items():
                if rec.get(field_name) is not None:
                    index.setdefault(str(rec[field_name]).casefold(), set()).add(rid)
            self._indexes[(obj, field_name)] = index
        return index

    def _reindex(
        self, obj: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        for (indexed_obj, field_name), index in self._indexes.items():
            if indexed_obj != obj:
                continue
            if old is not None and old.get(field_name) is not None:
                index.get(str(old[field_name]).casefold(), set()).discard(old["Id"])
            if new is not None and new.get(field_name) is not None:
                index.setdefault(str(new[field_name]).casefold(), set()).add(new["Id"])

    def require_object(self, obj: str) -> dict[str, FieldSpec]:
        if obj not in self.schemas:
            raise RequestRefused(404, "NOT_FOUND", "The requested resource does not exist")
        return self.schemas[obj]

    # -- validation ------------------------------------------------------------------------
    def _value(self, obj: str, name: str, spec: FieldSpec, value: Any) -> Any:
        if value is None:
            return None
        kind = spec.type
        if kind in ("string", "email", "picklist", "reference") and not isinstance(value, str):
            value = str(value)
        if kind == "string" and len(value) > spec.length:
            raise RecordError("STRING_TOO_LONG", f"{name}: data value too large: {value}", [name])
        if kind == "email" and not EMAIL_PATTERN.match(value):
            raise RecordError(
                "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {value}", [name]
            )
        if kind == "picklist" and value not in spec.values:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{name}: bad value for restricted picklist field: {value}",
                [name],
            )
        if kind == "reference":
            found = (
                self.find(value)
                if re.fullmatch(r"[0-9A-Za-z]{15}([0-9A-Za-z]{3})?", value)
                else None
            )
            if found is None or found[0] != spec.reference_to:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name]
                )
            return found[1]["Id"]
        # JSON type errors refuse the whole request, as Salesforce's JSON deserializer does.
        try:
            if kind == "date":
                return dt.date.fromisoformat(value).isoformat()
            if kind == "datetime":
                return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).isoformat()
        except (TypeError, ValueError):
            raise RequestRefused(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of {kind} from VALUE_STRING value {value}",
            ) from None
        if kind == "boolean" and not isinstance(value, bool):
            raise RequestRefused(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of boolean from value {value}",
            )
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestRefused(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of double from value {value}",
                )
            if abs(value) >= 10 ** (spec.precision - spec.scale):
                raise RecordError(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    f"{name}: value outside of valid range on numeric field: {value}",
                    [name],
                )
        return value

    def _resolve_relationship(self, obj: str, name: str, value: Any) -> tuple[str, str]:
        lookup = name[:-3] + "__c" if name.endswith("__r") else name + "Id"
        spec = self.schemas[obj].get(lookup)
        if (
            spec is None
            or spec.type != "reference"
            or not isinstance(value, Mapping)
            or len(value) != 1
        ):
            raise RecordError(
                "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}", [name]
            )
        ((ext_field, ext_value),) = value.items()
        target_spec = self.schemas[spec.reference_to].get(ext_field)
        if target_spec is None or not (target_spec.external_id or ext_field == "Id"):
            raise RecordError(
                "INVALID_FIELD",
                f"{ext_field} is not an External ID field of {spec.reference_to}",
                [name],
            )
        found = self.matching(spec.reference_to, ext_field, ext_value)
        if len(found) != 1:
            code = "DUPLICATE_EXTERNAL_ID" if found else "INVALID_FIELD"
            raise RecordError(
                code,
                f"Foreign key external ID: {ext_value} not found for field "
                f"{ext_field} in entity {spec.reference_to}",
                [],
            )
        return lookup, found[0]["Id"]

    def _changes(
        self, obj: str, body: Mapping[str, Any], *, skip: Iterable[str] = ()
    ) -> dict[str, Any]:
        schema, changes = self.schemas[obj], {}
        for name, value in body.items():
            if name == "attributes" or name in skip:
                continue
            if isinstance(value, Mapping):
                lookup, ref_id = self._resolve_relationship(obj, name, value)
                changes[lookup] = ref_id
                continue
            spec = schema.get(name)
            if spec is None:
                raise RecordError(
                    "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}", [name]
                )
            if spec.read_only:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}.",
                    [name],
                )
            changes[name] = self._value(obj, name, spec, value)
        return changes

    def _check_unique(self, obj: str, merged: Mapping[str, Any]) -> None:
        for name, spec in self.schemas[obj].items():
            if spec.unique and merged.get(name) is not None:
                for other in self.matching(obj, name, merged[name]):
                    if other["Id"] != merged.get("Id"):
                        raise RecordError(
                            "DUPLICATE_VALUE",
                            f"duplicate value found: {name} duplicates "
                            f"value on record with id: {other['Id']}",
                            [],
                        )

    def _save(
        self, obj: str, existing: dict[str, Any] | None, changes: dict[str, Any]
    ) -> dict[str, Any]:
        if existing is not None and obj == "Lead" and existing.get("IsConverted"):
            raise RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", [])
        merged = ({**DEFAULTS.get(obj, {})} if existing is None else dict(existing)) | changes
        missing = [
            n for n, s in self.schemas[obj].items() if s.required and merged.get(n) in (None, "")
        ]
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        self._check_unique(obj, merged)
        stamp = dt.datetime.fromtimestamp(self.now(), dt.UTC).isoformat(timespec="milliseconds")
        if existing is None:
            merged |= {"Id": self.new_id(KEY_PREFIXES[obj]), "CreatedDate": stamp}
        merged |= {"LastModifiedDate": stamp, "SystemModstamp": stamp}
        self._reindex(obj, existing, merged)
        self.records[obj][merged["Id"]] = merged
        return merged

    def insert(self, obj: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Create one record skipping uniqueness rules (tests seed conflicting data with it)."""
        self.require_object(obj)
        rec = {**DEFAULTS.get(obj, {}), **values, "Id": self.new_id(KEY_PREFIXES[obj])}
        self._reindex(obj, None, rec)
        self.records[obj][rec["Id"]] = rec
        return rec

    # -- sObject Collections ---------------------------------------------------------------
    def _all_or_none(
        self, all_or_none: bool, results: list[dict[str, Any]], snapshot: Any
    ) -> list[dict[str, Any]]:
        if all_or_none and not all(r["success"] for r in results):
            self.records = snapshot
            self._indexes = {}
            return [
                r if not r["success"] else {"success": False, "errors": [dict(ROLLED_BACK)]}
                for r in results
            ]
        return results

    def upsert(
        self, obj: str, ext_field: str, records: list[Mapping[str, Any]], all_or_none: bool
    ) -> list[dict[str, Any]]:
        """PATCH composite/sobjects/{obj}/{ext_field}: in-order UpsertResults."""
        schema = self.require_object(obj)
        spec = schema.get(ext_field)
        if spec is None or not spec.external_id:
            raise RequestRefused(
                400,
                "INVALID_FIELD",
                f"Field name provided, {ext_field} is not an External ID or indexed field for {obj}",
            )
        for rec in records:
            if (rec.get("attributes") or {}).get("type") != obj:
                raise RequestRefused(
                    400, "INVALID_TYPE", f"Each record needs attributes.type = {obj}"
                )
        seen: dict[str, int] = {}
        for rec in records:
            if rec.get(ext_field) is not None:
                k = str(rec[ext_field]).casefold()
                seen[k] = seen.get(k, 0) + 1
        snapshot = copy.deepcopy(self.records) if all_or_none else None
        results: list[dict[str, Any]] = []
        for rec in records:
            try:
                results.append(self._upsert_one(obj, ext_field, rec, seen))
            except RecordError as err:
                results.append(_failure(err))
        return self._all_or_none(all_or_none, results, snapshot)

    def _upsert_one(
        self, obj: str, ext_field: str, rec: Mapping[str, Any], seen: Mapping[str, int]
    ) -> dict[str, Any]:
        if "Id" in rec:
            raise RecordError(
                "INVALID_FIELD", "Id is not allowed when upserting by an external id", ["Id"]
            )
        value = rec.get(ext_field)
        if value in (None, ""):
            raise RecordError("MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
        if seen.get(str(value).casefold(), 0) > 1:
            raise RecordError(
                "DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [ext_field]
            )
        found = self.matching(obj, ext_field, value)
        if len(found) > 1:
            raise RecordError(
                "DUPLICATE_EXTERNAL_ID",
                f"{ext_field}: more than one record found for external id "
                f"field: {[r['Id'] for r in found]}",
                [ext_field],
            )
        saved = self._save(obj, found[0] if found else None, self._changes(obj, rec))
        return {"id": saved["Id"], "success": True, "errors": [], "created": not found}

    def update(self, records: list[Mapping[str, Any]], all_or_none: bool) -> list[dict[str, Any]]:
        """PATCH composite/sobjects: update by Id, in-order SaveResults (types may mix)."""
        for rec in records:
            self.require_object(str((rec.get("attributes") or {}).get("type")))
        snapshot = copy.deepcopy(self.records) if all_or_none else None
        results: list[dict[str, Any]] = []
        for rec in records:
            obj = rec["attributes"]["type"]
            try:
                if not rec.get("Id"):
                    raise RecordError(
                        "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"]
                    )
                existing = self._existing(str(rec["Id"]), obj)
                saved = self._save(obj, existing, self._changes(obj, rec, skip=("Id",)))
                results.append({"id": saved["Id"], "success": True, "errors": []})
            except RecordError as err:
                results.append(_failure(err))
        return self._all_or_none(all_or_none, results, snapshot)

    def _existing(self, record_id: str, obj: str | None = None) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9A-Za-z]{15}([0-9A-Za-z]{3})?", record_id) or (
            obj is not None and self.object_of(record_id) != obj
        ):
            raise RecordError(
                "MALFORMED_ID",
                f"{obj or 'Record'} ID: id value of incorrect type: {record_id}",
                ["Id"],
            )
        found = self.find(record_id)
        if found is None:
            if id18(record_id[:15]) in self.deleted_ids:
                raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        return found[1]

    def delete(self, ids: list[str], all_or_none: bool) -> list[dict[str, Any]]:
        """DELETE composite/sobjects?ids=: in-order DeleteResults."""
        snapshot = copy.deepcopy(self.records) if all_or_none else None
        results: list[dict[str, Any]] = []
        for rid in ids:
            try:
                rec = self._existing(rid)
                self._reindex(self.object_of(rid) or "", rec, None)
                del self.records[self.object_of(rid) or ""][rec["Id"]]
                self.deleted_ids.add(rec["Id"])
                results.append({"id": rec["Id"], "success": True, "errors": []})
            except RecordError as err:
                results.append({"id": rid, **_failure(err)})
        return self._all_or_none(all_or_none, results, snapshot)

    # -- lead conversion (SOAP convertLead semantics) ----------------------------------------
    def convert_lead(
        self,
        lead_id: str,
        converted_status: str,
        *,
        do_not_create_opportunity: bool = False,
        account_id: str | None = None,
        contact_id: str | None = None,
        opportunity_name: str | None = None,
    ) -> dict[str, Any]:
        """One LeadConvertResult: creates Account + Contact (+ Opportunity) from the Lead."""
        snapshot = copy.deepcopy(self.records)
        try:
            lead = self._existing(lead_id, "Lead")
            if lead.get("IsConverted"):
                raise RecordError(
                    "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", []
                )
            if converted_status not in CONVERTED_LEAD_STATUSES:
                raise RecordError(
                    "INVALID_STATUS",
                    f"invalid convertedStatus: {converted_status}",
                    ["convertedStatus"],
                )
            account = (
                self._existing(account_id, "Account")
                if account_id
                else self._save(
                    "Account", None, {"Name": lead["Company"], "Phone": lead.get("Phone")}
                )
            )
            contact_fields = {
                "FirstName": lead.get("FirstName"),
                "LastName": lead["LastName"],
                "Email": lead.get("Email"),
                "Phone": lead.get("Phone"),
                "MobilePhone": lead.get("MobilePhone"),
                "Title": lead.get("Title"),
                "LeadSource": lead.get("LeadSource"),
                "AccountId": account["Id"],
                "HasOptedOutOfEmail": lead.get("HasOptedOutOfEmail"),
            }
            contact_fields |= {
                f"Mailing{p}": lead.get(p)
                for p in ("Street", "City", "State", "PostalCode", "Country")
            }
            contact = (
                self._existing(contact_id, "Contact")
                if contact_id
                else self._save("Contact", None, contact_fields)
            )
            opportunity_id = None
            if not do_not_create_opportunity:
                close = dt.date.fromtimestamp(self.now()) + dt.timedelta(days=30)
                opportunity_id = self._save(
                    "Opportunity",
                    None,
                    {
                        "Name": opportunity_name or f"{lead['Company']}-",
                        "StageName": "Prospecting",
                        "CloseDate": close.isoformat(),
                        "AccountId": account["Id"],
                        "ContactId": contact["Id"],
                    },
                )["Id"]
            today = dt.date.fromtimestamp(self.now()).isoformat()
            lead |= {
                "IsConverted": True,
                "Status": converted_status,
                "ConvertedAccountId": account["Id"],
                "ConvertedContactId": contact["Id"],
                "ConvertedOpportunityId": opportunity_id,
                "ConvertedDate": today,
            }
            return {
                "leadId": lead["Id"],
                "accountId": account["Id"],
                "contactId": contact["Id"],
                "opportunityId": opportunity_id,
                "success": True,
                "errors": [],
            }
        except RecordError as err:
            self.records = snapshot
            self._indexes = {}
            return {
                "leadId": lead_id,
                "accountId": None,
                "contactId": None,
                "opportunityId": None,
                "success": False,
                "errors": [err.error],
            }

    # -- Tooling API: CustomField ------------------------------------------------------------
    def create_custom_field(self, full_name: str, metadata: Mapping[str, Any]) -> str:
        obj, _, api_name = full_name.partition(".")
        if obj not in self.schemas or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*__c", api_name):
            raise RequestRefused(400, "FIELD_INTEGRITY_EXCEPTION", f"Invalid FullName: {full_name}")
        kind = CUSTOM_FIELD_TYPES.get(str(metadata.get("type")))
        if kind is None or not metadata.get("label"):
            raise RequestRefused(
                400, "FIELD_INTEGRITY_EXCEPTION", "Metadata needs a label and a supported type"
            )
        developer_name = api_name[:-3]
        if any(
            r["DeveloperName"].casefold() == developer_name.casefold() and r["TableEnumOrId"] == obj
            for r in self.custom_fields.values()
        ):
            raise RequestRefused(400, "DUPLICATE_DEVELOPER_NAME", "Duplicate Developer Name")
        values: tuple[str, ...] = ()
        if kind == "picklist":
            definition = ((metadata.get("valueSet") or {}).get("valueSetDefinition") or {}).get(
                "value"
            ) or []
            values = tuple(str(v.get("fullName")) for v in definition)
        self.schemas[obj][api_name] = FieldSpec(
            kind,
            custom=True,
            values=values,
            length=int(metadata.get("length") or TEXT_DEFAULT_LENGTH),
            external_id=bool(metadata.get("externalId")),
            unique=bool(metadata.get("unique")),
            precision=int(metadata.get("precision") or 18),
            scale=int(metadata.get("scale") or 0),
        )
        field_id = self.new_id("00N")
        self.custom_fields[field_id] = {
            "Id": field_id,
            "DeveloperName": developer_name,
            "TableEnumOrId": obj,
            "FullName": full_name,
            "Metadata": dict(metadata),
        }
        return field_id

    # -- SOQL (a small subset) ---------------------------------------------------------------
    def query(self, soql: str, *, tooling: bool = False) -> list[dict[str, Any]]:
        q = SoqlQuery.parse(soql)
        if tooling:
            if q.sobject != "CustomField":
                raise RequestRefused(
                    400, "INVALID_TYPE", f"sObject type '{q.sobject}' is not supported."
                )
            rows = list(self.custom_fields.values())
            known = {"Id", "DeveloperName", "TableEnumOrId", "FullName"}
        else:
            known = set(self.require_object(q.sobject))
            rows = list(self.records[q.sobject].values())
        for name in [*q.fields, *(c[0] for c in q.conditions)]:
            if name not in known:
                raise RequestRefused(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{q.sobject}'."
                )
        return [{name: row.get(name) for name in q.fields} for row in rows if q.matches(row)][
            : q.limit
        ]
