"""Roles: what each may do and which fields each sees, derived from the field catalog."""

from __future__ import annotations

import pytest

from telecrm.domain.fields import FIELDS, Category, DataPoint, Field, Sensitivity, SyncPolicy
from telecrm.security import roles
from telecrm.security.roles import (
    Permission,
    Role,
    may,
    may_break_glass,
    sees_identifying_values,
    visible_fields,
)


def test_marketing_sees_exactly_the_fields_neither_encrypted_nor_phi() -> None:
    expected = {n for n, f in FIELDS.items() if not f.encrypted and not f.is_phi}
    assert visible_fields(Role.MARKETING) == expected
    assert {"orders_count", "marketing_consent", "timezone"} <= expected
    assert not {"email", "first_name", "conditions", "date_of_birth"} & expected


def test_a_care_coordinator_sees_all_but_identifying_financial_fields() -> None:
    usual = visible_fields(Role.CARE_COORDINATOR)
    assert {"first_name", "phone", "conditions", "medications", "symptoms"} <= usual
    hidden = set(FIELDS) - usual
    assert hidden == {
        n for n, f in FIELDS.items() if f.category is Category.FINANCIAL and f.encrypted
    }
    assert {"insurance_member_id", "payment_method_last4"} <= hidden


def test_break_glass_adds_the_rest_for_care_coordinators_only() -> None:
    assert visible_fields(Role.CARE_COORDINATOR, break_glass=True) == set(FIELDS)
    assert may_break_glass(Role.CARE_COORDINATOR)
    for role in (Role.ADMIN, Role.INTEGRATION, Role.MARKETING, Role.COMPLIANCE):
        assert not may_break_glass(role)
        assert visible_fields(role, break_glass=True) == visible_fields(role)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.INTEGRATION, Role.COMPLIANCE])
def test_admin_integration_and_compliance_see_no_patient_field(role: Role) -> None:
    assert visible_fields(role) == frozenset()
    assert not sees_identifying_values(role)


def test_only_care_coordinators_read_identifying_values() -> None:
    assert [r for r in Role if sees_identifying_values(r)] == [Role.CARE_COORDINATOR]


def test_a_field_added_to_the_catalog_lands_in_roles_by_its_sensitivity(monkeypatch) -> None:
    clear = DataPoint("loyalty", "Loyalty", Category.ENGAGEMENT, Sensitivity.INTERNAL,
                      SyncPolicy.STREAMED)  # fmt: skip
    medical = DataPoint("labs", "Lab results", Category.MEDICAL, Sensitivity.PHI,
                        SyncPolicy.ONE_WAY_BAA_ONLY)  # fmt: skip
    extra = {
        "loyalty_points": Field("loyalty_points", clear, "int", False),
        "lab_result": Field("lab_result", medical, "str", True),
    }
    monkeypatch.setattr(roles, "FIELDS", {**FIELDS, **extra})
    assert "loyalty_points" in visible_fields(Role.MARKETING)
    assert "lab_result" not in visible_fields(Role.MARKETING)
    assert "lab_result" in visible_fields(Role.CARE_COORDINATOR)
    assert "lab_result" not in visible_fields(Role.ADMIN)


def test_permissions_follow_minimum_necessary() -> None:
    assert may(Role.CARE_COORDINATOR, Permission.PATIENT_READ)
    assert not may(Role.ADMIN, Permission.PATIENT_READ)
    assert not may(Role.INTEGRATION, Permission.PATIENT_READ)
    assert may(Role.COMPLIANCE, Permission.DISCLOSURES_READ)
    assert not may(Role.MARKETING, Permission.PATIENT_SEARCH)
    assert may(Role.ADMIN, Permission.CLIENTS_READ)
    assert [r for r in Role if may(r, Permission.AUDIT_READ)] == [Role.ADMIN, Role.COMPLIANCE]


def test_an_unknown_role_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="admin, integration, marketing"):
        roles.parse_role("superuser")
