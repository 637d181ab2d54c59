"""Salesforce connector: sObject Collections upserts by external id, SOQL, Tooling fields, SOAP convertLead.

A thin client of Salesforce's REST API (crm-apis.md §2). Whole-call errors map to base.py's
hierarchy: 403 REQUEST_LIMIT_EXCEEDED → RateLimited (Salesforce never answers 429), 5xx and
transport errors → TransientFailure, 401 INVALID_SESSION_ID → one fresh token then AuthFailed,
400 → BatchRejected (or ConfigurationError when the org lacks a field or object). Nothing raised
or returned carries a Salesforce error *message*: they echo record values (PHI); only status
codes and field names leave this module.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote
from xml.sax.saxutils import escape

import httpx

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
    CallGate,
    CallStats,
    ConfigurationError,
    ConversionOutcome,
    CustomProperty,
    LeadConversion,
    OpenGate,
    ProvisionStep,
    RateLimited,
    RecordOutcome,
    RecordWrite,
    TransientFailure,
    WriteMode,
)
from telecrm.connectors.salesforce_auth import (
    SalesforceConfig,
    SalesforceSession,
    SalesforceTokenSource,
)

SALESFORCE_COLLECTION_MAX = 200  # sObject Collections: up to 200 records per request
SALESFORCE_LEAD_CONVERT_MAX = 100  # convertLead(): up to 100 LeadConvert objects per call
PATIENT_ID_FIELD = (
    "Telecrm_Patient_Id__c"  # the external id telecrm provisions on Contact/Account/Lead
)
CONVERTED_STATUS = "Closed - Converted"  # the default org's LeadStatus with IsConverted=true
# Salesforce sends no Retry-After; its allocation is a rolling 24 h, so calls free up as the
# oldest age out. An hour's pause lets a useful share free without stalling the day.
LIMIT_EXCEEDED_PAUSE_SECONDS = 3600.0
TRANSIENT_RECORD_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})  # row lock contention: retry the call
MISSING_RECORD_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
CONFIGURATION_CODES = frozenset(
    {"INVALID_FIELD", "INVALID_TYPE", "NOT_FOUND", "INVALID_FIELD_FOR_INSERT_UPDATE"}
)
LOOKUP_FIELDS = {  # (from, to) -> the lookup on `from` that links them
    ("Contact", "Account"): "AccountId",
    ("Opportunity", "Account"): "AccountId",
    ("Opportunity", "Contact"): "ContactId",
    ("Case", "Contact"): "ContactId",
    ("Case", "Account"): "AccountId",
}
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER_NS = "urn:partner.soap.sforce.com"  # /services/Soap/u/ is the partner WSDL endpoint
TOOLING_TYPES = {
    "string": "Text",
    "number": "Number",
    "enumeration": "Picklist",
    "date": "Date",
    "datetime": "DateTime",
    "bool": "Checkbox",
}
T = TypeVar("T")
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """`Sforce-Limit-Info: api-usage=18/100000[; api-bursts=..]` → (18, 100000)."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        used, _, most = value.partition("/")
        if name == "api-usage" and used.isdigit() and most.isdigit():
            return int(used), int(most)
    return None


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def soql_string(value: str) -> str:
    """A SOQL string literal (quotes and backslashes escaped, per the SOQL reference)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_select(fields: Sequence[str], obj: str, where: Mapping[str, Sequence[str]]) -> str:
    """SELECT … FROM obj WHERE f IN (…) AND …: names checked as identifiers, values escaped."""
    for name in (*fields, obj, *where):
        if not IDENTIFIER.fullmatch(name):
            raise ConfigurationError("INVALID_IDENTIFIER", name)
    clauses = " AND ".join(
        f"{f} IN ({', '.join(soql_string(v) for v in values)})" for f, values in where.items()
    )
    return f"SELECT {', '.join(fields)} FROM {obj} WHERE {clauses}"  # noqa: S608 - escaped above


def _errors(body: Any) -> tuple[str, list[str]]:
    """(first errorCode, field names) of a Salesforce error array; never the message."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return str(first.get("errorCode") or first.get("statusCode") or "UNKNOWN"), list(
            first.get("fields") or []
        )
    return "UNKNOWN", []


class SalesforceConnector:
    """One Salesforce org through one injected httpx.Client (see base.Connector)."""

    kind = "salesforce"

    def __init__(
        self,
        config: SalesforceConfig,
        client: httpx.Client | None = None,
        *,
        gate: CallGate | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=config.timeout_seconds)
        self.gate: CallGate = gate or OpenGate()
        self.now = now
        self.stats = CallStats()
        self._tokens = SalesforceTokenSource(config, self.client, self.stats, now)
        self._session: SalesforceSession | None = None

    def batch_max(self, crm_object: str) -> int:
        return SALESFORCE_COLLECTION_MAX

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    # -- the wire --------------------------------------------------------------------------
    def _data_url(self, path: str) -> str:
        assert self._session is not None
        return f"{self._session.instance_url}/services/data/v{self.config.api_version}/{path}"

    def _send(
        self, endpoint: str, build: Callable[[SalesforceSession], httpx.Request]
    ) -> httpx.Response:
        """One API call (through the gate), re-authenticating once on INVALID_SESSION_ID."""
        for attempt in (0, 1):
            if self._session is None:
                self._session = self._tokens.fetch()
            self.gate.wait_turn()
            self.stats.count(endpoint)
            try:
                response = self.client.send(build(self._session))
            except httpx.TimeoutException:
                raise TransientFailure("TIMEOUT", endpoint) from None
            except httpx.TransportError:
                raise TransientFailure("CONNECTION", endpoint) from None
            headers = dict(response.headers)
            if endpoint == "soap convertLead":
                headers |= _soap_limit_header(response)
            self.gate.observe(response.status_code, headers)
            code = self._whole_call_code(response)
            if code != "INVALID_SESSION_ID":
                return response
            self._session = None
            if attempt:
                raise AuthFailed(
                    "INVALID_SESSION_ID",
                    f"{endpoint}: refused a fresh session",
                    status=response.status_code,
                )
        raise AssertionError("unreachable")

    @staticmethod
    def _whole_call_code(response: httpx.Response) -> str | None:
        if response.status_code < 300:
            return None
        if response.headers.get("content-type", "").startswith("text/xml"):
            return _soap_fault_code(response)
        try:
            return _errors(response.json())[0]
        except ValueError:
            return None

    def _json_call(self, endpoint: str, method: str, path: str, **kwargs: Any) -> Any:
        def build(session: SalesforceSession) -> httpx.Request:
            headers = {"Authorization": f"Bearer {session.access_token}"}
            return self.client.build_request(
                method,
                self._data_url(path),
                headers=headers,
                timeout=self.config.timeout_seconds,
                **kwargs,
            )

        response = self._send(endpoint, build)
        if response.status_code < 300:
            return response.json()
        self._raise_for(endpoint, response)

    def _raise_for(self, endpoint: str, response: httpx.Response) -> None:
        status = response.status_code
        code = self._whole_call_code(response) or f"HTTP_{status}"
        try:
            fields = _errors(response.json())[1]
        except ValueError:
            fields = []
        detail = endpoint + (f" fields={','.join(fields)}" if fields else "")
        if code == "REQUEST_LIMIT_EXCEEDED":
            self.stats.limit_refusals += 1
            raise RateLimited(
                code, detail, status=status, retry_after=LIMIT_EXCEEDED_PAUSE_SECONDS, daily=True
            )
        if status >= 500 and code not in CONFIGURATION_CODES:
            raise TransientFailure(code, detail, status=status)
        if status in (403, 404) or code in CONFIGURATION_CODES:
            raise ConfigurationError(code, detail, status=status)
        raise BatchRejected(code, detail, status=status)

    # -- records ---------------------------------------------------------------------------
    def write(
        self,
        crm_object: str,
        id_property: str,
        records: Sequence[RecordWrite],
        *,
        mode: WriteMode = "upsert",
    ) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome] = []
        for part in chunks(records, SALESFORCE_COLLECTION_MAX):
            if mode == "upsert":
                outcomes += self._upsert(crm_object, id_property, part)
            else:
                outcomes += self._update_existing(crm_object, id_property, part)
        return outcomes

    @staticmethod
    def _body(crm_object: str, properties: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        fields = {k: v for k, v in properties.items() if k not in ("Id", "attributes")}
        return {"attributes": {"type": crm_object}, **fields, **extra}

    def _upsert(
        self, obj: str, id_property: str, part: Sequence[RecordWrite]
    ) -> list[RecordOutcome]:
        body = {
            "allOrNone": False,
            "records": [self._body(obj, r.properties, **{id_property: r.key}) for r in part],
        }
        results = self._json_call(
            "composite/sobjects upsert",
            "PATCH",
            f"composite/sobjects/{quote(obj)}/{quote(id_property)}",
            json=body,
        )
        return self._map_results(part, results)

    def _map_results(self, part: Sequence[RecordWrite], results: Any) -> list[RecordOutcome]:
        """UpsertResult/SaveResult arrays come back in request order (Collections docs)."""
        if not isinstance(results, list) or len(results) != len(part):
            raise TransientFailure("UNEXPECTED_RESPONSE", "result count differs from record count")
        outcomes = []
        for record, result in zip(part, results, strict=True):
            if result.get("success"):
                outcomes.append(
                    RecordOutcome(record.key, "accepted", result.get("id"), result.get("created"))
                )
                continue
            errors = result.get("errors") or [{}]
            codes = [str(e.get("statusCode") or e.get("errorCode") or "UNKNOWN") for e in errors]
            if TRANSIENT_RECORD_CODES.intersection(codes):
                # A locked row is contention, not bad data: upserts are idempotent, so the worker
                # retries the whole call rather than mark a good record rejected.
                raise TransientFailure("UNABLE_TO_LOCK_ROW", "record locked by another transaction")
            fields = sorted({f for e in errors for f in (e.get("fields") or [])})
            outcomes.append(
                RecordOutcome(
                    record.key,
                    "rejected",
                    record.crm_id,
                    code=codes[0],
                    detail=",".join(fields) or None,
                )
            )
        return outcomes

    def _existing_ids(
        self, obj: str, id_property: str, keys: Iterable[str]
    ) -> dict[str, list[str]]:
        soql = soql_select(["Id", id_property], obj, {id_property: list(keys)})
        body = self._json_call("query", "GET", "query", params={"q": soql})
        found: dict[str, list[str]] = {}
        for row in body.get("records", []):
            found.setdefault(str(row.get(id_property)).casefold(), []).append(row["Id"])
        return found

    def _update_existing(
        self, obj: str, id_property: str, part: Sequence[RecordWrite]
    ) -> list[RecordOutcome]:
        found = self._existing_ids(obj, id_property, [r.key for r in part])
        outcomes: dict[str, RecordOutcome] = {}
        present: list[RecordWrite] = []
        for r in part:
            ids = found.get(r.key.casefold(), [])
            if not ids:
                outcomes[r.key] = RecordOutcome(r.key, "missing")
            elif len(ids) > 1:
                outcomes[r.key] = RecordOutcome(
                    r.key, "rejected", code="DUPLICATE_EXTERNAL_ID", detail=id_property
                )
            else:
                present.append(RecordWrite(r.key, r.properties, ids[0]))
        if present:
            body = {
                "allOrNone": False,
                "records": [self._body(obj, r.properties, Id=r.crm_id) for r in present],
            }
            results = self._json_call(
                "composite/sobjects update", "PATCH", "composite/sobjects", json=body
            )
            for outcome in self._map_results(present, results):
                outcomes[outcome.key] = outcome
        return [outcomes[r.key] for r in part]

    def archive(self, crm_object: str, records: Sequence[RecordWrite]) -> list[RecordOutcome]:
        """Mirror mode: delete by Id (collections DELETE ?ids=…)."""
        outcomes: dict[str, RecordOutcome] = {
            r.key: RecordOutcome(r.key, "missing") for r in records if not r.crm_id
        }
        with_ids = [r for r in records if r.crm_id]
        for part in chunks(with_ids, SALESFORCE_COLLECTION_MAX):
            params = {"ids": ",".join(str(r.crm_id) for r in part), "allOrNone": "false"}
            results = self._json_call(
                "composite/sobjects delete", "DELETE", "composite/sobjects", params=params
            )
            if not isinstance(results, list) or len(results) != len(part):
                raise TransientFailure("UNEXPECTED_RESPONSE", "result count differs from id count")
            for r, res in zip(part, results, strict=True):
                code = _errors(res.get("errors"))[0] if not res.get("success") else None
                if code is None:
                    outcomes[r.key] = RecordOutcome(r.key, "accepted", r.crm_id)
                else:
                    gone = code in MISSING_RECORD_CODES
                    outcomes[r.key] = RecordOutcome(
                        r.key, "missing" if gone else "rejected", r.crm_id, code=code
                    )
        return [outcomes[r.key] for r in records]

    def associate(
        self, from_object: str, to_object: str, links: Sequence[AssociationWrite]
    ) -> list[RecordOutcome]:
        """Salesforce links by a lookup field on the child (Contact.AccountId): set it by Id.

        Upserts usually set the lookup themselves (`"Account": {ext_field: key}`); this is for
        links made after the fact. Setting a lookup to the value it has is not an error.
        """
        lookup = LOOKUP_FIELDS.get((from_object, to_object))
        if lookup is None:
            raise ConfigurationError("NO_LOOKUP", f"{from_object} has no lookup to {to_object}")
        outcomes: list[RecordOutcome] = []
        for part in chunks(links, SALESFORCE_COLLECTION_MAX):
            body = {
                "allOrNone": False,
                "records": [
                    self._body(from_object, {lookup: link.to_crm_id}, Id=link.from_crm_id)
                    for link in part
                ],
            }
            results = self._json_call(
                "composite/sobjects update", "PATCH", "composite/sobjects", json=body
            )
            writes = [RecordWrite(link.key, {}, link.from_crm_id) for link in part]
            outcomes += self._map_results(writes, results)
        return outcomes

    # -- lead conversion (SOAP convertLead) --------------------------------------------------
    def convert_leads(
        self,
        conversions: Sequence[LeadConversion],
        *,
        id_property: str = PATIENT_ID_FIELD,
        stamp_account: bool = True,
    ) -> list[ConversionOutcome]:
        """Convert leads to Account + Contact (no Opportunity), then stamp `id_property` on both.

        Salesforce has no REST resource for conversion; the documented call is the SOAP API's
        convertLead() (developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_convertlead.htm).
        A lead that is already converted (a retry after a lost answer) is looked up and stamped,
        so calling this twice is safe.
        """
        outcomes: list[ConversionOutcome] = []
        for part in chunks(conversions, SALESFORCE_LEAD_CONVERT_MAX):
            results = self._soap_convert(part)
            already = [
                c
                for c, r in zip(part, results, strict=True)
                if r.get("statusCode") == "CANNOT_UPDATE_CONVERTED_LEAD"
            ]
            if already:
                soql = soql_select(
                    ["Id", "ConvertedAccountId", "ConvertedContactId"],
                    "Lead",
                    {"Id": [c.lead_crm_id for c in already]},
                )
                for row in self._json_call("query", "GET", "query", params={"q": soql}).get(
                    "records", []
                ):
                    for i, c in enumerate(part):
                        if c in already and row["Id"][:15] == c.lead_crm_id[:15]:
                            results[i] = {
                                "success": "true",
                                "accountId": row.get("ConvertedAccountId"),
                                "contactId": row.get("ConvertedContactId"),
                            }
            outcomes += self._stamp(part, results, id_property, stamp_account)
        return outcomes

    def _soap_convert(self, part: Sequence[LeadConversion]) -> list[dict[str, Any]]:
        items = "".join(
            f"<urn:leadConverts><urn:convertedStatus>{escape(CONVERTED_STATUS)}</urn:convertedStatus>"
            f"<urn:doNotCreateOpportunity>true</urn:doNotCreateOpportunity>"
            f"<urn:leadId>{escape(c.lead_crm_id)}</urn:leadId></urn:leadConverts>"
            for c in part
        )

        def build(session: SalesforceSession) -> httpx.Request:
            envelope = (
                f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
                f'xmlns:urn="{PARTNER_NS}"><soapenv:Header><urn:SessionHeader><urn:sessionId>'
                f"{escape(session.access_token)}</urn:sessionId></urn:SessionHeader></soapenv:Header>"
                f"<soapenv:Body><urn:convertLead>{items}</urn:convertLead></soapenv:Body></soapenv:Envelope>"
            )
            url = f"{session.instance_url}/services/Soap/u/{self.config.api_version}"
            return self.client.build_request(
                "POST",
                url,
                content=envelope.encode(),
                timeout=self.config.timeout_seconds,
                headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": "convertLead"},
            )

        response = self._send("soap convertLead", build)
        if response.status_code >= 300:
            self._raise_for("soap convertLead", response)
        root = _parse_xml(response)
        results = []
        for node in root.iter(f"{{{PARTNER_NS}}}result"):

            def text(name: str, n: ET.Element = node) -> str | None:
                return n.findtext(f"{{{PARTNER_NS}}}{name}") or None

            results.append(
                {
                    "success": text("success"),
                    "accountId": text("accountId"),
                    "contactId": text("contactId"),
                    "statusCode": text("errors/{" + PARTNER_NS + "}statusCode"),
                    "fields": [f.text for f in node.iter(f"{{{PARTNER_NS}}}fields") if f.text],
                }
            )
        if len(results) != len(part):
            raise TransientFailure("UNEXPECTED_RESPONSE", "convertLead result count differs")
        return results

    def _stamp(
        self,
        part: Sequence[LeadConversion],
        results: list[dict[str, Any]],
        id_property: str,
        stamp_account: bool,
    ) -> list[ConversionOutcome]:
        done = [(c, r) for c, r in zip(part, results, strict=True) if r.get("success") == "true"]
        records = [self._body("Contact", {id_property: c.key}, Id=r["contactId"]) for c, r in done]
        if stamp_account:
            records += [
                self._body("Account", {id_property: c.key}, Id=r["accountId"]) for c, r in done
            ]
        stamped: dict[tuple[str, str], dict[str, Any]] = {}
        for batch in chunks(records, SALESFORCE_COLLECTION_MAX):
            answer = self._json_call(
                "composite/sobjects update",
                "PATCH",
                "composite/sobjects",
                json={"allOrNone": False, "records": list(batch)},
            )
            for rec, res in zip(batch, answer, strict=True):
                stamped[(rec["attributes"]["type"], rec[id_property])] = res
        outcomes = []
        for c, r in zip(part, results, strict=True):
            if r.get("success") != "true":
                outcomes.append(
                    ConversionOutcome(
                        c.key,
                        False,
                        code=r.get("statusCode") or "UNKNOWN",
                        detail=",".join(r.get("fields") or []) or None,
                    )
                )
                continue
            failed = [
                (obj, res)
                for obj in ("Contact", "Account")
                if (res := stamped.get((obj, c.key))) is not None and not res.get("success")
            ]
            code = _errors(failed[0][1].get("errors"))[0] if failed else None
            outcomes.append(
                ConversionOutcome(
                    c.key,
                    not failed,
                    r.get("contactId"),
                    r.get("accountId"),
                    code=code,
                    detail=f"stamp {failed[0][0]}.{id_property} failed" if failed else None,
                )
            )
        return outcomes

    # -- provisioning (Tooling API) ------------------------------------------------------------
    def provision(self, properties: Sequence[CustomProperty]) -> list[ProvisionStep]:
        """Create missing custom fields; existing ones are reported as "exists" (idempotent)."""
        steps = []
        for prop in properties:
            target = f"{prop.crm_object}.{prop.name}"
            developer_name = prop.name.removesuffix("__c")
            soql = soql_select(
                ["Id"],
                "CustomField",
                {"DeveloperName": [developer_name], "TableEnumOrId": [prop.crm_object]},
            )
            if self._json_call("tooling/query", "GET", "tooling/query", params={"q": soql}).get(
                "records"
            ):
                steps.append(ProvisionStep(target, "exists"))
                continue
            try:
                self._json_call(
                    "tooling/sobjects/CustomField",
                    "POST",
                    "tooling/sobjects/CustomField",
                    json={"FullName": target, "Metadata": tooling_metadata(prop)},
                )
                steps.append(ProvisionStep(target, "created"))
            except (BatchRejected, ConfigurationError) as exc:
                if exc.code == "DUPLICATE_DEVELOPER_NAME":
                    steps.append(ProvisionStep(target, "exists"))
                else:
                    steps.append(ProvisionStep(target, "failed", exc.code))
        return steps


def tooling_metadata(prop: CustomProperty) -> dict[str, Any]:
    """CustomField Metadata for one property (Tooling API CustomField object reference)."""
    kind = TOOLING_TYPES[prop.kind]
    meta: dict[str, Any] = {"label": prop.label, "type": kind}
    if kind == "Text":
        meta["length"] = 64 if prop.unique else 255
    elif kind == "Number":
        meta |= {"precision": 18, "scale": 2}
    elif kind == "Picklist":
        meta["valueSet"] = {
            "restricted": True,
            "valueSetDefinition": {
                "sorted": False,
                "value": [{"fullName": o, "label": o, "default": False} for o in prop.options],
            },
        }
    elif kind == "Checkbox":
        meta["defaultValue"] = "false"
    if prop.unique:
        meta |= {"externalId": True, "unique": True}
    return meta


def _parse_xml(response: httpx.Response) -> ET.Element:
    try:
        # The org's own answer over TLS; expat resolves no external entities.
        return ET.fromstring(response.content)  # noqa: S314
    except ET.ParseError:
        raise TransientFailure("UNEXPECTED_RESPONSE", "SOAP answer is not XML") from None


def _soap_fault_code(response: httpx.Response) -> str | None:
    try:
        code = _parse_xml(response).findtext(f".//{{{SOAP_ENV}}}Fault/faultcode") or ""
    except TransientFailure:
        return None
    return code.rpartition(":")[2] or None


def _soap_limit_header(response: httpx.Response) -> dict[str, str]:
    """The SOAP LimitInfoHeader, spelled as the REST header so the gate reads one format."""
    if response.status_code >= 300:
        return {}
    try:
        info = _parse_xml(response).find(f".//{{{PARTNER_NS}}}limitInfo")
    except TransientFailure:
        return {}
    if info is None:
        return {}
    used, most = info.findtext(f"{{{PARTNER_NS}}}current"), info.findtext(f"{{{PARTNER_NS}}}limit")
    return {"sforce-limit-info": f"api-usage={used}/{most}"} if used and most else {}
