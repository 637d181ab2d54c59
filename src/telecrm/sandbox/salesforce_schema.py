"""The Salesforce sandbox's sObjects (standard fields, picklists, key prefixes, defaults) and the
two ways Salesforce refuses: a whole request, or one record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ID_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"  # 15→18-char id checksum alphabet
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TEXT_DEFAULT_LENGTH = 255  # standard Text fields
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}
CONVERTED_LEAD_STATUSES = frozenset({"Closed - Converted"})  # LeadStatus with IsConverted=true


@dataclass(frozen=True, slots=True)
class FieldSpec:
    type: str  # string | email | picklist | date | datetime | boolean | number | reference | id
    required: bool = False
    values: tuple[str, ...] = ()  # picklist values
    reference_to: str = ""
    length: int = TEXT_DEFAULT_LENGTH
    read_only: bool = False
    custom: bool = False
    external_id: bool = False
    unique: bool = False
    precision: int = 18
    scale: int = 0


def _fields(**specs: FieldSpec) -> dict[str, FieldSpec]:
    base = {
        "Id": FieldSpec("id", read_only=True),
        "CreatedDate": FieldSpec("datetime", read_only=True),
        "LastModifiedDate": FieldSpec("datetime", read_only=True),
        "SystemModstamp": FieldSpec("datetime", read_only=True),
    }
    return base | specs


S, E, D, B = FieldSpec("string"), FieldSpec("email"), FieldSpec("date"), FieldSpec("boolean")
REQ = FieldSpec("string", required=True)


def _pick(*values: str, required: bool = False) -> FieldSpec:
    return FieldSpec("picklist", values=values, required=required)


def _ref(target: str) -> FieldSpec:
    return FieldSpec("reference", reference_to=target)


def _address(prefix: str) -> dict[str, FieldSpec]:
    return {f"{prefix}{part}": S for part in ("Street", "City", "State", "PostalCode", "Country")}


# Standard objects and fields, per the Object Reference (developer.salesforce.com/docs/atlas.en-us.object_reference.meta)
KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Opportunity": "006",
    "Case": "500",
}
STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
STANDARD_FIELDS: dict[str, dict[str, FieldSpec]] = {
    "Account": _fields(
        Name=REQ, Phone=S, Website=S, Industry=S, Type=S, Description=S, **_address("Billing")
    ),
    "Contact": _fields(
        FirstName=S,
        LastName=REQ,
        Email=E,
        Phone=S,
        MobilePhone=S,
        Title=S,
        Birthdate=D,
        AccountId=_ref("Account"),
        LeadSource=_pick(*LEAD_SOURCES),
        Description=S,
        HasOptedOutOfEmail=B,
        DoNotCall=B,
        **_address("Mailing"),
    ),
    "Lead": _fields(
        FirstName=S,
        LastName=REQ,
        Company=REQ,
        Email=E,
        Phone=S,
        MobilePhone=S,
        Title=S,
        Status=_pick(*LEAD_STATUSES),
        LeadSource=_pick(*LEAD_SOURCES),
        Description=S,
        HasOptedOutOfEmail=B,
        **_address(""),
        IsConverted=FieldSpec("boolean", read_only=True),
        ConvertedAccountId=FieldSpec("reference", reference_to="Account", read_only=True),
        ConvertedContactId=FieldSpec("reference", reference_to="Contact", read_only=True),
        ConvertedOpportunityId=FieldSpec("reference", reference_to="Opportunity", read_only=True),
        ConvertedDate=FieldSpec("date", read_only=True),
    ),
    "Opportunity": _fields(
        Name=REQ,
        StageName=_pick(*STAGES, required=True),
        CloseDate=FieldSpec("date", required=True),
        Amount=FieldSpec("number", scale=2),
        AccountId=_ref("Account"),
        ContactId=_ref("Contact"),
        Type=S,
        LeadSource=_pick(*LEAD_SOURCES),
        Description=S,
    ),
    "Case": _fields(
        Subject=S,
        Description=S,
        Status=_pick("New", "Working", "Escalated", "Closed"),
        Priority=_pick("High", "Medium", "Low"),
        Origin=_pick("Phone", "Email", "Web"),
        ContactId=_ref("Contact"),
        AccountId=_ref("Account"),
        SuppliedEmail=E,
    ),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "Lead": {"Status": "Open - Not Contacted", "IsConverted": False},
    "Case": {"Status": "New", "Priority": "Medium"},
}
CUSTOM_FIELD_TYPES = {
    "Text": "string",
    "Number": "number",
    "Picklist": "picklist",
    "Date": "date",
    "DateTime": "datetime",
    "Checkbox": "boolean",
    "Email": "email",
}


class RequestRefused(Exception):
    """The whole request is refused (HTTP status and one Salesforce error)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status, self.error_code, self.message = status, error_code, message


class RecordError(Exception):
    """One record refused: a Salesforce Error object (statusCode, message, fields)."""

    def __init__(self, status_code: str, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(status_code)
        self.error = {"statusCode": status_code, "message": message, "fields": list(fields)}
