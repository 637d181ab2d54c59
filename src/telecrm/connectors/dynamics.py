"""Dynamics 365 / Dataverse connector: upserts by alternate key in `$batch`, lookups, provisioning.

A thin client of the Dataverse Web API (crm-apis.md §4). `write()` sends one `$batch` per
`batch_max` records with `Prefer: odata.continue-on-error`, and puts **each upsert in its own
change set**: a change set is all-or-nothing (§4.2, ExecuteTransaction) and a failed one answers
with a single error, so one change set per batch would let one bad record sink the other 999 and
hide which one it was. One per record keeps the failure to that record, and a successful change
set's answer carries its `Content-ID`, which is how outcomes are matched to keys (a failed one
carries none and is matched by its position: answers come in request order).

Whole-call errors map to base.py's hierarchy: 429 → RateLimited with `Retry-After` (§4.3), 5xx
and transport errors → TransientFailure, 401 → one fresh token then AuthFailed, 403/404 →
ConfigurationError (so is an operation's "Resource not found for the segment": a custom table not
provisioned yet), 400 → BatchRejected. The custom tables are entity sets like any other
(`telecrm_prescriptions(telecrm_externalid='rx_1')`), their lookup bound as
`telecrm_contactid@odata.bind`; dynamics_metadata.py creates them. Dataverse messages may quote values (a literal that did
not convert, a key value): only the hex `code` and the names of columns *we sent* leave this module.
"""

from __future__ import annotations

import email
import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from telecrm.connectors.base import (
    AssociationWrite,
    AuthFailed,
    BatchRejected,
    CallGate,
    CallStats,
    ConfigurationError,
    CustomProperty,
    CustomTable,
    OpenGate,
    ProvisionStep,
    RateLimited,
    RecordOutcome,
    RecordWrite,
    TransientFailure,
    WriteMode,
)
from telecrm.connectors.dynamics_auth import DynamicsConfig, DynamicsTokenSource
from telecrm.connectors.dynamics_metadata import Provisioning

TABLES = {  # entity set -> table logical name (the metadata API speaks logical names)
    "contacts": "contact",
    "accounts": "account",
    "opportunities": "opportunity",
    "incidents": "incident",
    "telecrm_treatmentplans": "telecrm_treatmentplan",
    "telecrm_prescriptions": "telecrm_prescription",
    "telecrm_consultations": "telecrm_consultation",
    "telecrm_subscriptions": "telecrm_subscription",
    "telecrm_providerrelationships": "telecrm_providerrelationship",
}
LOOKUP_TARGETS = {  # single-valued navigation property -> the entity set it points to
    "parentcustomerid_account": "accounts",
    "parentcustomerid_contact": "contacts",
    "parentcontactid": "contacts",
    "parentaccountid": "accounts",
    "primarycontactid": "contacts",
    "customerid_contact": "contacts",
    "customerid_account": "accounts",
    "telecrm_contactid": "contacts",
}
ASSOCIATION_LOOKUPS = {  # (from set, to set) -> the lookup on `from` that links them
    ("opportunities", "contacts"): "parentcontactid",
    ("opportunities", "accounts"): "parentaccountid",
    ("incidents", "contacts"): "customerid_contact",
    ("incidents", "accounts"): "customerid_account",
    ("contacts", "accounts"): "parentcustomerid_account",
    ("accounts", "contacts"): "primarycontactid",
    **{(s, "contacts"): "telecrm_contactid" for s in TABLES if s.startswith("telecrm_")},
}
NOT_FOUND_SEGMENT = "0x8006088a"  # §4.4: "Resource not found for the segment '...'"
CONTINUE_ON_ERROR = "odata.continue-on-error"  # §4.2: otherwise the batch stops at the first error
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,99}")
ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  # under /api/data/v9.2/
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    sent: tuple[str, ...] = ()  # names we put in the body: the only names a detail may carry


@dataclass(frozen=True, slots=True)
class PartAnswer:
    status: int
    headers: Mapping[str, str]
    body: Any


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def odata_key(name: str, value: str) -> str:
    """`name='value'` for an alternate-key segment: quotes doubled (OData ABNF), then %-encoded."""
    return f"{_identifier(name)}={quote(chr(39) + value.replace(chr(39), chr(39) * 2) + chr(39), safe=chr(39))}"


def _identifier(name: str) -> str:
    if not IDENTIFIER.fullmatch(name):
        raise ConfigurationError("INVALID_IDENTIFIER", name)
    return name


def _guid(value: str | None) -> str:
    """A CRM id as the GUID literal of a key segment (anything else is not a Dataverse id)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ConfigurationError("INVALID_ID", "a CRM id is not a GUID") from None


def _error_code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


def _named(body: Any, sent: Sequence[str]) -> str | None:
    """Which of the columns we sent the error names (matched in the message, never copied)."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    return ",".join(n for n in sent if f"'{n}'" in message) or None


class DynamicsConnector:
    """One Dataverse environment through one injected httpx.Client (see base.Connector)."""

    kind = "dynamics"

    def __init__(
        self,
        config: DynamicsConfig,
        client: httpx.Client | None = None,
        *,
        gate: CallGate | None = None,
        now: Callable[[], float] = time.time,
        lookups: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        # navigation property -> entity set: the built-in lookups, and a mapping's custom tables'
        self.lookups = {**LOOKUP_TARGETS, **(lookups or {})}
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=config.timeout_seconds)
        self.gate: CallGate = gate or OpenGate()
        self.stats = CallStats()
        self._tokens = DynamicsTokenSource(config, self.client, self.stats, now)

    def batch_max(self, crm_object: str) -> int:
        return self.config.batch_size

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    # -- the wire ------------------------------------------------------------------------------
    def _send(
        self, endpoint: str, method: str, path: str, *, metered: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One Web API call through the gate; a 401 gets one fresh token, then AuthFailed.

        `metered=False` (metadata calls while provisioning) skips the wait for the mapping's
        budget, which is sized for $batch execution time, not for a few hundred light one-off
        calls; a 429 still pauses the account for every later call."""
        extra = kwargs.pop("headers", {})
        for attempt in (0, 1):
            headers = {
                "Authorization": f"Bearer {self._tokens.token()}",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
                "Accept": "application/json",
                **extra,
            }
            if metered:
                self.gate.wait_turn()
            self.stats.count(endpoint)
            try:
                response = self.client.request(
                    method,
                    self.config.data_url + path,
                    headers=headers,
                    timeout=self.config.timeout_seconds,
                    **kwargs,
                )
            except httpx.TimeoutException:
                raise TransientFailure("TIMEOUT", endpoint) from None
            except httpx.TransportError:
                raise TransientFailure("CONNECTION", endpoint) from None
            self.gate.observe(response.status_code, dict(response.headers))
            if response.status_code != 401:
                return response
            self._tokens.invalidate()
            if attempt:
                raise AuthFailed("UNAUTHORIZED", f"{endpoint}: refused a fresh token", status=401)
        raise AssertionError("unreachable")

    def _raise_for(self, endpoint: str, status: int, headers: Mapping[str, str], body: Any) -> None:
        code = _error_code(body) or f"HTTP_{status}"
        if status == 429:
            self.stats.limit_refusals += 1
            after = headers.get("retry-after", "")
            retry_after = float(after) if after.replace(".", "", 1).isdigit() else None
            raise RateLimited(code, endpoint, status=status, retry_after=retry_after)
        if status >= 500:
            raise TransientFailure(code, endpoint, status=status)
        if status in (403, 404):
            raise ConfigurationError(code, endpoint, status=status)
        raise BatchRejected(code, endpoint, status=status)

    def _json(
        self, endpoint: str, method: str, path: str, *, metered: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        """A single (non-batch) call: (status, JSON body) for 2xx and 404, else raises."""
        response = self._send(endpoint, method, path, metered=metered, **kwargs)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 300 and response.status_code != 404:
            self._raise_for(endpoint, response.status_code, response.headers, body)
        return response.status_code, body

    def _batch(self, endpoint: str, operations: Sequence[Operation]) -> list[PartAnswer]:
        """One `$batch`, one change set per operation; answers in operation order."""
        boundary = f"batch_{uuid.uuid4()}"
        lines: list[str] = []
        for i, op in enumerate(operations, start=1):
            change_set = f"changeset_{uuid.uuid4()}"
            lines += [f"--{boundary}", f"Content-Type: multipart/mixed; boundary={change_set}", ""]
            lines += [
                f"--{change_set}",
                "Content-Type: application/http",
                "Content-Transfer-Encoding: binary",
                f"Content-ID: {i}",
                "",
            ]
            lines.append(f"{op.method} /api/data/v{self.config.api_version}/{op.path} HTTP/1.1")
            lines += [f"{k}: {v}" for k, v in op.headers.items()]
            if op.body is not None:
                lines += ["Content-Type: application/json; type=entry", "", json.dumps(op.body)]
            else:
                lines.append("")
            lines.append(f"--{change_set}--")
        lines += [f"--{boundary}--", ""]
        response = self._send(
            endpoint,
            "POST",
            "$batch",
            content="\r\n".join(lines).encode(),
            headers={
                "Content-Type": f"multipart/mixed; boundary={boundary}",
                "Prefer": CONTINUE_ON_ERROR,
            },
        )
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("multipart/"):
            try:
                body = response.json()
            except ValueError:
                body = None
            self._raise_for(endpoint, response.status_code, response.headers, body)
            raise TransientFailure("UNEXPECTED_RESPONSE", f"{endpoint}: not a batch response")
        answers = _parse_batch_response(content_type, response.content, len(operations))
        for answer in answers:  # the whole call is retried: upserts and deletes are idempotent
            if answer.status == 429 or answer.status >= 500:
                self._raise_for(endpoint, answer.status, answer.headers, answer.body)
            if answer.status == 404 and _error_code(answer.body) == NOT_FOUND_SEGMENT:
                # No such entity set: a table not provisioned yet, not a fault of the record.
                raise ConfigurationError(
                    NOT_FOUND_SEGMENT, f"{endpoint}: no such table; run `telecrm crm provision`"
                )
        return answers

    # -- records -------------------------------------------------------------------------------
    def write(
        self,
        crm_object: str,
        id_property: str,
        records: Sequence[RecordWrite],
        *,
        mode: WriteMode = "upsert",
    ) -> list[RecordOutcome]:
        """PATCH `{set}({id_property}='key')`: create or update (upsert); `If-Match: *` (update)."""
        entity_set = _identifier(crm_object)
        precondition = {"If-Match": "*"} if mode == "update" else {}
        outcomes: list[RecordOutcome] = []
        for part in chunks(records, self.config.batch_size):
            operations = []
            for r in part:
                body = self._payload(r.properties)
                path = f"{entity_set}({odata_key(id_property, r.key)})"
                operations.append(Operation("PATCH", path, body, precondition, tuple(r.properties)))
            answers = self._batch(f"$batch {entity_set} {mode}", operations)
            for r, op, answer in zip(part, operations, answers, strict=True):
                outcomes.append(self._outcome(r.key, op, answer, missing_ok=mode == "update"))
        return outcomes

    def _payload(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """Column values, and relations (`{its id column: its key}`) as `nav@odata.bind`."""
        body: dict[str, Any] = {}
        for name, value in properties.items():
            if isinstance(value, Mapping):
                target = self.lookups.get(name)
                if target is None or len(value) != 1:
                    raise ConfigurationError("NO_LOOKUP", f"{name} is not a known lookup")
                ((key_name, key_value),) = value.items()
                body[f"{name}@odata.bind"] = f"/{target}({odata_key(key_name, str(key_value))})"
            else:
                body[name] = value
        return body

    @staticmethod
    def _outcome(key: str, op: Operation, answer: PartAnswer, *, missing_ok: bool) -> RecordOutcome:
        if answer.status < 300:
            m = ENTITY_ID.search(answer.headers.get("odata-entityid", ""))
            return RecordOutcome(key, "accepted", m.group(1).lower() if m else None)
        code = _error_code(answer.body) or f"HTTP_{answer.status}"
        if answer.status == 404 and missing_ok:
            return RecordOutcome(key, "missing", code=code)
        return RecordOutcome(key, "rejected", code=code, detail=_named(answer.body, op.sent))

    def archive(self, crm_object: str, records: Sequence[RecordWrite]) -> list[RecordOutcome]:
        """Mirror mode: DELETE `{set}({id})`; one already gone is "missing"."""
        entity_set = _identifier(crm_object)
        outcomes = {r.key: RecordOutcome(r.key, "missing") for r in records if not r.crm_id}
        with_ids = [r for r in records if r.crm_id]
        for part in chunks(with_ids, self.config.batch_size):
            operations = [Operation("DELETE", f"{entity_set}({_guid(r.crm_id)})") for r in part]
            answers = self._batch(f"$batch {entity_set} delete", operations)
            for r, op, answer in zip(part, operations, answers, strict=True):
                outcome = self._outcome(r.key, op, answer, missing_ok=True)
                outcomes[r.key] = RecordOutcome(r.key, outcome.outcome, r.crm_id, code=outcome.code)
        return [outcomes[r.key] for r in records]

    def associate(
        self, from_object: str, to_object: str, links: Sequence[AssociationWrite]
    ) -> list[RecordOutcome]:
        """Set the lookup on the from-record (`parentcontactid@odata.bind`), update only.

        Upserts usually bind lookups themselves (a `relation:` property); this links after the
        fact. Binding a lookup to the record it already points to is not an error."""
        nav = ASSOCIATION_LOOKUPS.get((from_object, to_object))
        if nav is None:
            raise ConfigurationError("NO_LOOKUP", f"{from_object} has no lookup to {to_object}")
        outcomes: list[RecordOutcome] = []
        for part in chunks(links, self.config.batch_size):
            operations = [
                Operation(
                    "PATCH",
                    f"{_identifier(from_object)}({_guid(link.from_crm_id)})",
                    {f"{nav}@odata.bind": f"/{to_object}({_guid(link.to_crm_id)})"},
                    {"If-Match": "*"},
                    (nav,),
                )
                for link in part
            ]
            answers = self._batch(f"$batch {from_object} associate", operations)
            for link, op, answer in zip(part, operations, answers, strict=True):
                outcomes.append(self._outcome(link.key, op, answer, missing_ok=True))
        return outcomes

    # -- provisioning (metadata API: dynamics_metadata.py) ------------------------------------
    def provision(
        self, properties: Sequence[CustomProperty], tables: Sequence[CustomTable] = ()
    ) -> list[ProvisionStep]:
        """Create missing tables (with their lookup to contact), columns, and an alternate key
        on each unique column; idempotent: a second run only finds what exists."""
        run = Provisioning(
            functools.partial(self._json, metered=False),
            self.config.solution_unique_name,
            _identifier,
        )
        return run.run(properties, tables, TABLES)


def _http_answer(part: Message) -> PartAnswer:
    raw = part.get_payload()
    text = raw if isinstance(raw, str) else ""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.strip("\n").split("\n")
    bits = status_line.split()
    if len(bits) < 2 or not bits[1].isdigit():
        raise TransientFailure("UNEXPECTED_RESPONSE", "batch part without a status line")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
    return PartAnswer(int(bits[1]), headers, parsed)


def _parse_batch_response(content_type: str, content: bytes, expected: int) -> list[PartAnswer]:
    """One answer per change set: by Content-ID when the part has one, else by position."""
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + content)
    parts = message.get_payload()
    if not isinstance(parts, list) or len(parts) != expected:
        raise TransientFailure(
            "UNEXPECTED_RESPONSE", "batch answer count differs from request count"
        )
    answers: list[PartAnswer | None] = [None] * expected
    for position, part in enumerate(parts):
        if part.is_multipart():  # a change set that succeeded: its operation carries Content-ID
            inner = part.get_payload()
            assert isinstance(inner, list)
            for op_part in inner:
                content_id = str(op_part.get("Content-ID", "")).strip()
                slot = int(content_id) - 1 if content_id.isdigit() else position
                if 0 <= slot < expected:
                    answers[slot] = _http_answer(op_part)
        else:  # a failed change set: one error, no Content-ID
            answers[position] = _http_answer(part)
    if any(a is None for a in answers):
        raise TransientFailure("UNEXPECTED_RESPONSE", "batch answer without a matching request")
    return [a for a in answers if a is not None]
