"""Other names for the catalog's fields, as platforms spell them in their APIs.

The readiness analyzer (telecrm.reports) matches schema property names against this table;
it lives beside the catalog so that adding a field and its synonyms is one change.
"""

from __future__ import annotations

import re

from telecrm.domain.fields import FIELDS, Field

# catalog field -> names a platform may use for it (compared after `normalise_name`).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "first_name": ("given_name", "forename", "full_name"),
    "last_name": ("family_name", "surname"),
    "email": ("email_address", "mail"),
    "phone": ("phone_number", "mobile", "mobile_phone", "cell", "telephone", "msisdn"),
    "address_line1": ("address", "street", "address1", "street_address", "line1"),
    "city": ("town", "locality"),
    "state": ("region", "province", "state_code"),
    "postal_code": ("zip", "zip_code", "postcode"),
    "timezone": ("tz",),
    "date_of_birth": ("dob", "birth_date", "birthday"),
    "sex": ("gender", "sex_at_birth"),
    "language": ("preferred_language", "locale"),
    "emergency_contact_name": ("emergency_contact", "next_of_kin"),
    "emergency_contact_phone": ("emergency_phone",),
    "preferred_channel": ("contact_preference", "preferred_contact_method"),
    "email_consent": ("email_opt_in",),
    "sms_consent": ("sms_opt_in", "text_opt_in"),
    "marketing_consent": ("marketing_opt_in", "opt_in"),
    "conditions": (
        "diagnosis",
        "diagnoses",
        "condition",
        "medical_history",
        "icd10",
        "problems",
        "condition_area",
    ),
    "medications": ("medication", "rx", "prescription", "prescriptions", "drugs", "drug"),
    "allergies": ("allergy", "allergens"),
    "symptoms": ("symptom", "severity", "chief_complaint"),
    "treatment_status": ("treatment_plan", "care_plan"),
    "treatment_outcome": ("outcome",),
    "treatment_progress": ("progress",),
    "provider_id": ("doctor_id", "clinician_id", "physician_id", "practitioner_id", "provider"),
    "provider_preference": ("preferred_provider",),
    "sessions_count": ("logins", "login_count", "sessions"),
    "last_session_at": ("last_login", "last_login_at", "last_seen_at", "last_active_at"),
    "acquisition_channel": ("utm_source", "source", "referrer"),
    "consultations_count": ("visit_count", "appointments_count"),
    "support_tickets_count": ("tickets_count",),
    "subscription_tier": ("plan", "tier", "plan_id"),
    "subscription_status": ("membership_status",),
    "payment_method_brand": ("card_brand", "brand"),
    "payment_method_last4": ("card_last4", "last4", "last_four"),
    "total_order_value": ("amount", "order_total", "total", "total_amount"),
    "insurance_provider": ("payer", "insurer", "insurance_company", "insurance_carrier"),
    "insurance_member_id": ("insurance_id", "member_id", "policy_number", "subscriber_id"),
    "billing_cycle": ("billing_interval", "billing_period"),
}

# Formats that say what a string holds even when its name does not.
FORMAT_HINTS: dict[str, str] = {"email": "email", "phone": "phone", "idn-email": "email"}


def normalise_name(name: str) -> str:
    """`birthDate`, `birth-date` and `BIRTH_DATE` all become `birthdate`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_INDEX: dict[str, str] = {}
for _field_name in FIELDS:
    _INDEX[normalise_name(_field_name)] = _field_name
for _field_name, _names in SYNONYMS.items():
    for _synonym in _names:
        _INDEX.setdefault(normalise_name(_synonym), _field_name)


def catalog_field_for(name: str, fmt: str | None = None) -> tuple[Field, str] | None:
    """The catalog field a property name (or its format) means, and how it matched."""
    key = normalise_name(name)
    if key in _INDEX:
        target = _INDEX[key]
        how = "name" if normalise_name(target) == key else "synonym"
        return FIELDS[target], how
    if fmt and fmt.lower() in FORMAT_HINTS:
        return FIELDS[FORMAT_HINTS[fmt.lower()]], "format"
    return None
