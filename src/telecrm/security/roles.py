"""Roles of API clients: what each may do, and which catalog fields each may see (minimum necessary).

Field sets are derived from the field catalog (`domain/fields.py`), never listed by name, so a
field added to the catalog lands in the right roles by its category and sensitivity alone:

- ``marketing`` sees fields that are neither encrypted (identifying) nor PHI: timezone, consent
  and channel preferences, engagement counters, subscription, orders, billing preferences;
- ``care_coordinator`` sees every field except identifying financial ones (payment method,
  insurance member id and provider): coordinating care does not need them. A break-glass read
  adds them, and is audited and alerted on;
- ``admin`` manages API clients and configuration and sees no patient field at all;
- ``integration`` runs the sync (status, dead letters, configuration) and sees no patient field;
- ``compliance`` reads the audit log and the accounting of disclosures (field *names*, ids and
  destinations) and may locate a patient by email or phone, but sees no patient field value.

A field a role may not see is absent from a response, never blanked.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from telecrm.domain.fields import FIELDS, Category, Field


class Role(StrEnum):
    ADMIN = "admin"
    INTEGRATION = "integration"
    MARKETING = "marketing"
    CARE_COORDINATOR = "care_coordinator"
    COMPLIANCE = "compliance"


class Permission(StrEnum):
    PATIENT_READ = "patient.read"  # one patient's profile and timeline
    PATIENT_SEARCH = "patient.search"  # find a patient by email or phone (blind index)
    DISCLOSURES_READ = "disclosures.read"  # the accounting of disclosures of a patient
    EXPORT = "export"  # patient exports (docs/compliance.md)
    AUDIT_READ = "audit.read"
    SEGMENTS_READ = "segments.read"
    FUNNELS_READ = "funnels.read"
    JOURNEYS_READ = "journeys.read"
    SYNC_READ = "sync.read"  # sync status and dead letters
    CLIENTS_READ = "clients.read"


_P = Permission
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        {
            _P.CLIENTS_READ,
            _P.AUDIT_READ,
            _P.SYNC_READ,
            _P.SEGMENTS_READ,
            _P.JOURNEYS_READ,
            _P.FUNNELS_READ,
        }
    ),
    Role.INTEGRATION: frozenset({_P.SYNC_READ, _P.SEGMENTS_READ, _P.JOURNEYS_READ}),
    Role.MARKETING: frozenset(
        {_P.PATIENT_READ, _P.SEGMENTS_READ, _P.FUNNELS_READ, _P.JOURNEYS_READ}
    ),
    Role.CARE_COORDINATOR: frozenset({_P.PATIENT_READ, _P.PATIENT_SEARCH}),
    Role.COMPLIANCE: frozenset({_P.AUDIT_READ, _P.DISCLOSURES_READ, _P.PATIENT_SEARCH, _P.EXPORT}),
}


def _never(_: Field) -> bool:
    return False


def _not_identifying_nor_phi(f: Field) -> bool:
    return not f.encrypted and not f.is_phi


def _care(f: Field) -> bool:
    # Payment method and insurance identify an account, not a condition: not needed to
    # coordinate care day to day.
    return not (f.category is Category.FINANCIAL and f.encrypted)


def _everything(_: Field) -> bool:
    return True


_USUAL: dict[Role, Callable[[Field], bool]] = {
    Role.ADMIN: _never,
    Role.INTEGRATION: _never,
    Role.MARKETING: _not_identifying_nor_phi,
    Role.CARE_COORDINATOR: _care,
    Role.COMPLIANCE: _never,
}
_BREAK_GLASS: dict[Role, Callable[[Field], bool]] = {Role.CARE_COORDINATOR: _everything}


def may(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


def may_break_glass(role: Role) -> bool:
    return role in _BREAK_GLASS


def visible_fields(role: Role, *, break_glass: bool = False) -> frozenset[str]:
    """The catalog fields ``role`` may see; with ``break_glass`` the emergency set (if it has one)."""
    rule = _BREAK_GLASS[role] if break_glass and role in _BREAK_GLASS else _USUAL[role]
    return frozenset(name for name, f in FIELDS.items() if rule(f))


def sees_identifying_values(role: Role) -> bool:
    """Whether any field of the role's usual set is encrypted: its reads must give a reason."""
    return any(FIELDS[name].encrypted for name in visible_fields(role))


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role (roles: {known})") from None
