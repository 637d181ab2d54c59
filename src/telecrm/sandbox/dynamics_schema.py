"""The Dataverse sandbox's schema: tables, columns, lookups, alternate keys, key syntax, error codes.

The tables of a new environment (contacts, accounts, opportunities, incidents). telecrm's own
tables (DESIGN.md §4.5) do not exist until `telecrm crm provision` creates them through the
metadata API (dynamics_metadata.py). Column subsets follow Microsoft's table reference; error codes
cite crm-apis.md §4.3/§4.4 and Microsoft's docs (MicrosoftDocs/powerapps-docs) or are marked
UNCONFIRMED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# -- error codes (crm-apis.md §4.3/§4.4; MicrosoftDocs/powerapps-docs api-limits.md and
#    webapi/execute-batch-operations-using-web-api.md) ---------------------------------------------
NOT_FOUND_SEGMENT = "0x8006088a"  # §4.4: "Resource not found for the segment '...'"
BAD_PROPERTY = "0x0"  # §4.4: unknown property / unconvertible literal, 400
TOO_LONG = (
    "0x80044331"  # execute-batch-operations doc: "A validation error occurred. The length..."
)
DUPLICATE_KEY = (
    "0x80040237"  # §4.4: "A record with matching key values already exists" (UNCONFIRMED)
)
DOES_NOT_EXIST = "0x80040217"  # "<table> With Id = ... Does Not Exist" (UNCONFIRMED, widely cited)
INVALID_ARGUMENT = "0x80040203"  # generic invalid argument: bad key, inactive key (UNCONFIRMED)
METADATA_EXISTS = "0x80044363"  # attribute/key name already used (UNCONFIRMED)
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
KEY_PAIR = re.compile(r"\s*(\w+)\s*=\s*'((?:[^']|'')*)'\s*(?:,|$)")
ENTITY_REF = re.compile(r"(?:^|/)(\w+)\(([^()]*)\)$")


class OdataError(Exception):
    """A refused request: HTTP status, Dataverse's hex code and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class Column:
    kind: str  # String, Memo, Integer, Decimal, Money, Double, Boolean, DateTime, Picklist
    max_length: int = 0
    options: tuple[int, ...] = ()
    custom: bool = False
    date_only: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    logical: str
    entity_set: str
    columns: dict[str, Column]
    lookups: dict[str, tuple[str, str]]  # navigation property -> (lookup column, target table)
    requires: str | None = None  # a lookup column every create must bind (incident: customerid)
    primary_name: str = "name"  # the primary name column (contact: fullname; unused here)
    custom: bool = False  # created through the metadata API

    @property
    def primary_id(self) -> str:
        return f"{self.logical}id"


def _s(n: int) -> Column:
    return Column("String", n)


def entity_set_of(logical: str) -> str:
    """The entity set Dataverse gives a new table: its logical name in the plural."""
    if logical.endswith("y") and logical[-2:-1] not in tuple("aeiou"):
        return logical[:-1] + "ies"
    return logical + ("es" if logical.endswith(("s", "x", "ch", "sh")) else "s")


@dataclass(frozen=True, slots=True)
class Relationship:
    """A one-to-many created through RelationshipDefinitions: its lookup lives on `referencing`."""

    schema_name: str
    referenced: str  # the "one" table: contact
    referencing: str  # the "many" table
    lookup: str  # the lookup column on `referencing`
    navigation: str  # its single-valued navigation property (what `@odata.bind` names)


def standard_tables() -> dict[str, Table]:
    """The tables of a new environment (column subsets of Microsoft's table reference)."""
    customer = {
        "customerid_contact": ("customerid", "contact"),
        "customerid_account": ("customerid", "account"),
    }
    tables = [
        Table(
            "contact",
            "contacts",
            {
                "firstname": _s(50),
                "lastname": _s(50),
                "emailaddress1": _s(100),
                "telephone1": _s(50),
                "mobilephone": _s(50),
                "address1_city": _s(80),
                "address1_stateorprovince": _s(50),
                "address1_postalcode": _s(20),
                "birthdate": Column("DateTime", date_only=True),
                "description": Column("Memo", 2000),
            },
            {
                "parentcustomerid_account": ("parentcustomerid", "account"),
                "parentcustomerid_contact": ("parentcustomerid", "contact"),
            },
        ),
        Table(
            "account",
            "accounts",
            {
                "name": _s(160),
                "telephone1": _s(50),
                "emailaddress1": _s(100),
                "address1_city": _s(80),
            },
            {"primarycontactid": ("primarycontactid", "contact")},
        ),
        Table(
            "opportunity",
            "opportunities",
            {
                "name": _s(300),
                "description": Column("Memo", 2000),
                "stepname": _s(200),
                "estimatedvalue": Column("Money"),
                "estimatedclosedate": Column("DateTime", date_only=True),
                "closeprobability": Column("Integer"),
            },
            {
                "parentcontactid": ("parentcontactid", "contact"),
                "parentaccountid": ("parentaccountid", "account"),
                **customer,
            },
        ),
        Table(
            "incident",
            "incidents",
            {
                "title": _s(200),
                "description": Column("Memo", 2000),
                "ticketnumber": _s(100),
                "prioritycode": Column("Picklist", options=(1, 2, 3)),
                "caseorigincode": Column("Picklist", options=(1, 2, 3, 2483, 3986)),
            },
            {"primarycontactid": ("primarycontactid", "contact"), **customer},
            requires="customerid",  # "You should specify a parent contact or account."
        ),
    ]
    return {t.logical: t for t in tables}


@dataclass
class AlternateKey:
    name: str
    attributes: tuple[str, ...]
    active_at: float

    def status(self, now: float) -> str:
        return "Active" if now >= self.active_at else "Pending"


def odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_key(segment: str) -> str | dict[str, str]:
    """`(…)` contents: a GUID, or `name='value'[,…]` pairs of an alternate key."""
    text = segment.strip()  # callers have percent-decoded the path once
    if GUID.match(text):
        return text.lower()
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = KEY_PAIR.match(text, pos)
        if m is None:
            raise OdataError(400, BAD_PROPERTY, "Bad Request - Error in query syntax.")
        pairs[m.group(1)] = m.group(2).replace("''", "'")
        pos = m.end()
    if not pairs:
        raise OdataError(400, BAD_PROPERTY, "Bad Request - Error in query syntax.")
    return pairs
