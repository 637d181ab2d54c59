"""The field catalog against DESIGN.md §4.1: 20 data points, their sensitivity and sync policy."""

from __future__ import annotations

import pytest

from telecrm.domain import fields
from telecrm.domain.fields import (
    DATA_POINTS,
    FIELDS,
    Category,
    Sensitivity,
    SyncPolicy,
    UnknownField,
    encrypted_fields,
    field,
    fields_of,
    phi_fields,
)

_BI = SyncPolicy.BIDIRECTIONAL
_BAA = SyncPolicy.ONE_WAY_BAA_ONLY
_STREAM = SyncPolicy.STREAMED

# Copied from the table in DESIGN.md §4.1, not from the code: (title, category, sensitivity, policy).
DESIGN_TABLE = [
    ("full name and contact", "demographic", Sensitivity.PII, _BI),
    ("location and timezone", "demographic", Sensitivity.PII, _BI),
    ("age, gender, demographics", "demographic", Sensitivity.PII, _BI),
    ("emergency contact", "demographic", Sensitivity.PII, _BI),
    ("communication preferences", "demographic", Sensitivity.PII, _BI),
    ("medical history and conditions", "medical", Sensitivity.PHI, _BAA),
    ("current medications and allergies", "medical", Sensitivity.PHI, _BAA),
    ("symptom tracking and severity", "medical", Sensitivity.PHI, _BAA),
    ("treatment outcomes and progress", "medical", Sensitivity.PHI, _BAA),
    ("provider relationships and preferences", "medical", Sensitivity.PHI, _BAA),
    ("platform usage patterns", "engagement", Sensitivity.INTERNAL, _STREAM),
    ("communication engagement rates", "engagement", Sensitivity.INTERNAL, _STREAM),
    (
        "consultation frequency and outcomes",
        "engagement",
        Sensitivity.PHI_ADJACENT,
        SyncPolicy.STREAMED_COUNTS_ONLY,
    ),
    ("support interaction history", "engagement", Sensitivity.INTERNAL, _STREAM),
    ("feature adoption and usage", "engagement", Sensitivity.INTERNAL, _STREAM),
    ("subscription tier and status", "financial", Sensitivity.FINANCIAL, _BI),
    ("payment history and methods", "financial", Sensitivity.FINANCIAL, _BI),
    ("order value and frequency", "financial", Sensitivity.FINANCIAL, _BI),
    ("insurance and coverage", "financial", Sensitivity.PHI, _BAA),
    ("billing preferences", "financial", Sensitivity.FINANCIAL, _BI),
]

# Fields that name, reach or locate a person: DESIGN.md §5 encrypts them at rest.
IDENTIFYING = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "address_line1",
    "city",
    "state",
    "postal_code",
    "emergency_contact_name",
    "emergency_contact_phone",
}


def test_catalog_has_the_20_data_points_of_the_design_in_order():
    actual = [
        (dp.title.lower(), dp.category.value, dp.sensitivity, dp.policy) for dp in DATA_POINTS
    ]
    assert actual == DESIGN_TABLE


def test_data_points_fall_into_4_categories_of_5():
    per_category = {c: sum(dp.category is c for dp in DATA_POINTS) for c in Category}
    assert per_category == {c: 5 for c in Category}


def test_data_point_keys_are_unique():
    assert len({dp.key for dp in DATA_POINTS}) == len(DATA_POINTS) == 20


def test_every_data_point_has_at_least_one_field():
    empty = [dp.key for dp in DATA_POINTS if not fields_of(dp.key)]
    assert empty == []


def test_no_field_is_listed_twice_so_none_belongs_to_two_data_points():
    names = [row[0] for row in fields._FIELD_ROWS]  # the dict would hide a duplicate
    assert len(names) == len(set(names)) == len(FIELDS)


def test_every_medical_field_and_insurance_is_phi_and_only_they_are():
    expected = {n for n, f in FIELDS.items() if f.category is Category.MEDICAL} | {
        "insurance_provider",
        "insurance_member_id",
    }
    assert phi_fields() == expected


def test_every_phi_field_syncs_one_way_to_baa_destinations_only():
    assert {FIELDS[n].policy for n in phi_fields()} == {SyncPolicy.ONE_WAY_BAA_ONLY}


def test_every_phi_field_is_encrypted_at_rest():
    assert phi_fields() <= encrypted_fields()


def test_every_name_email_phone_birth_date_and_address_field_is_encrypted():
    assert encrypted_fields() >= IDENTIFYING


def test_identifying_fields_are_the_encrypted_ones():
    assert {n for n, f in FIELDS.items() if f.is_identifying} == encrypted_fields()


def test_counters_and_timestamps_stay_clear_for_queries():
    encrypted_counters = [
        n for n, f in FIELDS.items() if f.kind in {"int", "datetime"} and f.encrypted
    ]
    assert encrypted_counters == []


def test_payment_methods_hold_brand_and_last4_never_a_card_number():
    assert {f.name for f in fields_of("payments") if f.kind == "str"} == {
        "payment_method_brand",
        "payment_method_last4",
    }
    assert not [n for n in FIELDS if "card" in n or "pan" in n.split("_")]


def test_consultation_frequency_is_counts_and_times_only():
    kinds = {f.kind for f in fields_of("consultation_frequency")}
    assert kinds <= {"int", "datetime"}


def test_field_lookup_returns_the_catalog_entry_with_its_data_point():
    email = field("email")
    assert email.data_point.key == "contact"
    assert email.category is Category.DEMOGRAPHIC
    assert email.sensitivity is Sensitivity.PII
    assert email.policy is SyncPolicy.BIDIRECTIONAL
    assert email.encrypted and not email.is_phi


def test_unknown_field_lookup_raises_unknown_field():
    with pytest.raises(UnknownField):
        field("social_security_number")
