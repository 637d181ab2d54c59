"""What the sync engine asks of a CRM connector, and the answers and errors a connector gives.

A connector is a thin, honest client of one CRM's HTTP API (STYLE.md §4). It knows the CRM's paths,
bodies, batch maximums, auth and error shapes; it knows nothing about profiles, hashes or the
outbox. The sync worker hands it records that are already mapped to CRM property names and
values, and gets back one outcome per record. Whole-call failures are exceptions from this
module, each one either retryable or not, and none of them carries a PHI value: a connector puts
only the provider's error codes, HTTP statuses and field *names* into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["accepted", "rejected", "missing"]
"""accepted: the CRM holds the record now; rejected: the CRM refused this record for its data
(permanent until the data changes); missing: update-only or archive found no such record."""

WriteMode = Literal["upsert", "update"]


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """One record to write: its external id value, its CRM properties, and its CRM id if known."""

    key: str
    properties: Mapping[str, Any]
    crm_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    key: str
    outcome: Outcome
    crm_id: str | None = None
    created: bool | None = None
    code: str | None = None  # the provider's error code, e.g. INVALID_EMAIL_ADDRESS
    detail: str | None = None  # PHI-free: codes and property names only, never a value


@dataclass(frozen=True, slots=True)
class AssociationWrite:
    """Link two CRM records (by CRM id). `key` is the from-record's external id, for reporting."""

    key: str
    from_crm_id: str
    to_crm_id: str


@dataclass(frozen=True, slots=True)
class LeadConversion:
    """A lead that became a patient: convert it, and stamp the external id on what it became."""

    key: str  # the patient id
    lead_crm_id: str


@dataclass(frozen=True, slots=True)
class ConversionOutcome:
    key: str
    ok: bool
    contact_crm_id: str | None = None
    account_crm_id: str | None = None
    code: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ProvisionStep:
    """One thing `telecrm crm provision` checked: a property, field, group or key."""

    target: str  # e.g. "contacts.telecrm_patient_id"
    action: Literal["created", "exists", "failed"]
    detail: str = ""


@dataclass(slots=True)
class CallStats:
    """What a connector spent: every HTTP request it made to the CRM's API, by kind."""

    calls: int = 0
    token_calls: int = 0  # OAuth token endpoint: not counted against the API limits
    limit_refusals: int = 0  # 429s, or Salesforce's 403 REQUEST_LIMIT_EXCEEDED
    by_endpoint: dict[str, int] = field(default_factory=dict)

    def count(self, endpoint: str) -> None:
        self.calls += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1


# -- errors -----------------------------------------------------------------------------------
class ConnectorError(Exception):
    """A whole call failed. `code` is the provider's code or our short name for the failure."""

    retryable: bool = False

    def __init__(self, code: str, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.status = status


class TransientFailure(ConnectorError):
    """5xx, a timeout, a dropped connection, a locked row: the same call may succeed later."""

    retryable = True

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, detail, status=status)
        self.retry_after = retry_after


class RateLimited(TransientFailure):
    """The CRM refused for its limits (429, or Salesforce's 403 REQUEST_LIMIT_EXCEEDED).

    `daily` is true when the day's allocation is spent: waiting seconds will not help, the
    destination pauses until `retry_after` (the CRM's next reset) instead.
    """

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        daily: bool = False,
    ) -> None:
        super().__init__(code, detail, status=status, retry_after=retry_after)
        self.daily = daily


class BatchRejected(ConnectorError):
    """The CRM refused the whole batch for the data of some record in it (e.g. HubSpot's 400
    without multi-status). The worker splits the batch and retries the halves."""


class AuthFailed(ConnectorError):
    """Credentials refused even after a token refresh: an operator must fix the configuration."""


class ConfigurationError(ConnectorError):
    """The CRM is not set up for this mapping (missing scope, field or permission)."""


# -- rate-limit gate --------------------------------------------------------------------------
class CallGate(Protocol):
    """The budget every call to one CRM account goes through (shared by all workers).

    `wait_turn` blocks until the account's budget allows one more call; `observe` reads the
    CRM's own limit headers after each answer; `back_off` makes every worker of this account wait.
    """

    def wait_turn(self) -> None: ...

    def observe(self, status: int, headers: Mapping[str, str]) -> None: ...

    def back_off(self, seconds: float, *, daily: bool = False) -> None: ...


class OpenGate:
    """No budget: for tools and tests that talk to a sandbox without limits."""

    def wait_turn(self) -> None:
        return None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None

    def back_off(self, seconds: float, *, daily: bool = False) -> None:
        return None


# -- the connector ----------------------------------------------------------------------------
class Connector(Protocol):
    """One CRM account. Objects are the CRM's own names ("contacts", "Contact", ...)."""

    kind: str  # "hubspot" | "salesforce"
    stats: CallStats

    def batch_max(self, crm_object: str) -> int: ...

    def write(
        self,
        crm_object: str,
        id_property: str,
        records: Sequence[RecordWrite],
        *,
        mode: WriteMode = "upsert",
    ) -> list[RecordOutcome]:
        """Upsert (or update only) up to `batch_max` records keyed by `id_property`.

        One outcome per record, matched by key, whatever order the CRM answered in. Raises
        TransientFailure / RateLimited / BatchRejected / AuthFailed for the whole call.
        """
        ...

    def archive(self, crm_object: str, records: Sequence[RecordWrite]) -> list[RecordOutcome]:
        """Archive or delete records by CRM id (mirror mode: the patient was erased)."""
        ...

    def associate(
        self, from_object: str, to_object: str, links: Sequence[AssociationWrite]
    ) -> list[RecordOutcome]:
        """Create default associations; creating one that exists is not an error."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CustomProperty:
    """A custom property / field telecrm needs in the CRM, as the mapping declares it."""

    crm_object: str  # "contacts", "Contact", ...
    name: str  # "telecrm_patient_id", "Telecrm_Patient_Id__c", ...
    label: str
    kind: Literal["string", "number", "enumeration", "date", "datetime", "bool"]
    unique: bool = False  # an external id: what upserts key on
    options: tuple[str, ...] = ()  # for enumerations
    sensitive: bool = False  # HubSpot: created as sensitive data (may hold PHI under the BAA)
    max_length: int | None = None  # Dataverse: a text column's MaxLength (default 100)


@dataclass(frozen=True, slots=True)
class CustomTable:
    """A table telecrm needs in Dataverse, as the mapping declares it: created with its primary
    name column and a lookup to contact; its columns and alternate key are CustomProperty's."""

    schema_name: str  # "telecrm_prescription": the publisher prefix, then the name
    label: str
    plural_label: str
    primary_name: str  # the primary name column, "telecrm_name"
    contact_lookup: str  # the lookup column to contact, also its navigation property
    description: str = ""
    ownership: Literal["UserOwned", "OrganizationOwned"] = "UserOwned"

    @property
    def entity_set(self) -> str:
        return f"{self.schema_name}s"


def check_token_or_oauth(
    token_name: str, token: object, client_id: object, client_secret: object, refresh_token: object
) -> None:
    """A CRM account is reached one way: a token, or the OAuth client id, secret and refresh
    token together (HubSpot's private app, Pipedrive's API token)."""
    oauth = (client_id, client_secret, refresh_token)
    if token is None and not all(oauth):
        raise ValueError(f"set {token_name}, or client_id, client_secret and refresh_token")
    if token is not None and any(oauth):
        raise ValueError(f"set {token_name} or the OAuth fields, not both")
