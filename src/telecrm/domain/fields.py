"""The field catalog: every concrete patient field, its data point, sensitivity and sync policy.

Nothing else in telecrm decides what is PHI. Mappings, templates, logs, exports and the UI ask
this catalog (DESIGN.md §4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    DEMOGRAPHIC = "demographic"
    MEDICAL = "medical"
    ENGAGEMENT = "engagement"
    FINANCIAL = "financial"


class Sensitivity(StrEnum):
    PII = "pii"
    PHI = "phi"
    PHI_ADJACENT = "phi_adjacent"
    INTERNAL = "internal"
    FINANCIAL = "financial"


class SyncPolicy(StrEnum):
    BIDIRECTIONAL = "bidirectional_realtime"
    ONE_WAY_BAA_ONLY = "one_way_baa_only"
    STREAMED = "streamed_one_way"
    STREAMED_COUNTS_ONLY = "streamed_counts_only"


@dataclass(frozen=True, slots=True)
class DataPoint:
    key: str
    title: str
    category: Category
    sensitivity: Sensitivity
    policy: SyncPolicy


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    data_point: DataPoint
    kind: str  # "str", "date", "datetime", "int", "float", "bool", "list", "object"
    encrypted: bool

    @property
    def category(self) -> Category:
        return self.data_point.category

    @property
    def sensitivity(self) -> Sensitivity:
        return self.data_point.sensitivity

    @property
    def policy(self) -> SyncPolicy:
        return self.data_point.policy

    @property
    def is_phi(self) -> bool:
        """PHI in HIPAA's sense: only destinations under a BAA may receive it."""
        return self.data_point.sensitivity is Sensitivity.PHI

    @property
    def is_identifying(self) -> bool:
        """A value that identifies a person or describes their health: never in logs or errors."""
        return self.encrypted


_D, _M, _E, _F = Category.DEMOGRAPHIC, Category.MEDICAL, Category.ENGAGEMENT, Category.FINANCIAL
_BI = SyncPolicy.BIDIRECTIONAL
_BAA = SyncPolicy.ONE_WAY_BAA_ONLY

DATA_POINTS: tuple[DataPoint, ...] = (
    DataPoint("contact", "Full name and contact", _D, Sensitivity.PII, _BI),
    DataPoint("location", "Location and timezone", _D, Sensitivity.PII, _BI),
    DataPoint("demographics", "Age, gender, demographics", _D, Sensitivity.PII, _BI),
    DataPoint("emergency_contact", "Emergency contact", _D, Sensitivity.PII, _BI),
    DataPoint("communication_preferences", "Communication preferences", _D, Sensitivity.PII, _BI),
    DataPoint("medical_history", "Medical history and conditions", _M, Sensitivity.PHI, _BAA),
    DataPoint("medications", "Current medications and allergies", _M, Sensitivity.PHI, _BAA),
    DataPoint("symptoms", "Symptom tracking and severity", _M, Sensitivity.PHI, _BAA),
    DataPoint("treatment_outcomes", "Treatment outcomes and progress", _M, Sensitivity.PHI, _BAA),
    DataPoint("providers", "Provider relationships and preferences", _M, Sensitivity.PHI, _BAA),
    DataPoint(
        "platform_usage", "Platform usage patterns", _E, Sensitivity.INTERNAL, SyncPolicy.STREAMED
    ),
    DataPoint(
        "communication_engagement",
        "Communication engagement rates",
        _E,
        Sensitivity.INTERNAL,
        SyncPolicy.STREAMED,
    ),
    DataPoint(
        "consultation_frequency",
        "Consultation frequency and outcomes",
        _E,
        Sensitivity.PHI_ADJACENT,
        SyncPolicy.STREAMED_COUNTS_ONLY,
    ),
    DataPoint(
        "support_history",
        "Support interaction history",
        _E,
        Sensitivity.INTERNAL,
        SyncPolicy.STREAMED,
    ),
    DataPoint(
        "feature_adoption",
        "Feature adoption and usage",
        _E,
        Sensitivity.INTERNAL,
        SyncPolicy.STREAMED,
    ),
    DataPoint("subscription", "Subscription tier and status", _F, Sensitivity.FINANCIAL, _BI),
    DataPoint("payments", "Payment history and methods", _F, Sensitivity.FINANCIAL, _BI),
    DataPoint("orders", "Order value and frequency", _F, Sensitivity.FINANCIAL, _BI),
    DataPoint("insurance", "Insurance and coverage", _F, Sensitivity.PHI, _BAA),
    DataPoint("billing_preferences", "Billing preferences", _F, Sensitivity.FINANCIAL, _BI),
)
_DP = {dp.key: dp for dp in DATA_POINTS}

# (field name, data point, kind, encrypted at rest). Identifying and health values are
# encrypted; counters and timestamps stay clear so stages and funnels can be queried.
_FIELD_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("first_name", "contact", "str", True),
    ("last_name", "contact", "str", True),
    ("email", "contact", "str", True),
    ("phone", "contact", "str", True),
    ("address_line1", "location", "str", True),
    ("city", "location", "str", True),
    ("state", "location", "str", True),
    ("postal_code", "location", "str", True),
    ("timezone", "location", "str", False),
    ("date_of_birth", "demographics", "date", True),
    ("sex", "demographics", "str", True),
    ("language", "demographics", "str", True),
    ("emergency_contact_name", "emergency_contact", "str", True),
    ("emergency_contact_phone", "emergency_contact", "str", True),
    ("emergency_contact_relation", "emergency_contact", "str", True),
    ("preferred_channel", "communication_preferences", "str", False),
    ("email_consent", "communication_preferences", "bool", False),
    ("sms_consent", "communication_preferences", "bool", False),
    ("marketing_consent", "communication_preferences", "bool", False),
    ("quiet_hours_start", "communication_preferences", "str", False),
    ("quiet_hours_end", "communication_preferences", "str", False),
    ("conditions", "medical_history", "list", True),
    ("medications", "medications", "list", True),
    ("allergies", "medications", "list", True),
    ("adherence_pdc", "medications", "float", True),  # written by `telecrm analytics run`
    ("symptoms", "symptoms", "list", True),
    ("treatment_status", "treatment_outcomes", "str", True),
    ("treatment_outcome", "treatment_outcomes", "str", True),
    ("treatment_progress", "treatment_outcomes", "str", True),
    ("provider_id", "providers", "str", True),
    ("provider_preference", "providers", "str", True),
    ("sessions_count", "platform_usage", "int", False),
    ("last_session_at", "platform_usage", "datetime", False),
    ("acquisition_channel", "platform_usage", "str", False),
    ("emails_delivered", "communication_engagement", "int", False),
    ("emails_opened", "communication_engagement", "int", False),
    ("emails_clicked", "communication_engagement", "int", False),
    ("emails_bounced", "communication_engagement", "int", False),
    ("sms_delivered", "communication_engagement", "int", False),
    ("sms_failed", "communication_engagement", "int", False),
    ("sms_replied", "communication_engagement", "int", False),
    ("consultations_count", "consultation_frequency", "int", False),
    ("consultations_accepted", "consultation_frequency", "int", False),
    ("last_consultation_at", "consultation_frequency", "datetime", False),
    ("support_tickets_count", "support_history", "int", False),
    ("last_support_ticket_at", "support_history", "datetime", False),
    ("features_used", "feature_adoption", "list", False),
    ("subscription_tier", "subscription", "str", False),
    ("subscription_status", "subscription", "str", False),
    ("subscription_started_at", "subscription", "datetime", False),
    ("subscription_ends_at", "subscription", "datetime", False),
    ("payment_method_brand", "payments", "str", True),
    ("payment_method_last4", "payments", "str", True),
    ("payments_failed_count", "payments", "int", False),
    ("orders_count", "orders", "int", False),
    ("total_order_value", "orders", "float", False),
    ("first_order_at", "orders", "datetime", False),
    ("last_order_at", "orders", "datetime", False),
    ("insurance_provider", "insurance", "str", True),
    ("insurance_member_id", "insurance", "str", True),
    ("billing_cycle", "billing_preferences", "str", False),
    ("paperless_billing", "billing_preferences", "bool", False),
)

FIELDS: dict[str, Field] = {
    name: Field(name, _DP[dp], kind, encrypted) for name, dp, kind, encrypted in _FIELD_ROWS
}


class UnknownField(KeyError):
    """A field name that the catalog does not define."""


def field(name: str) -> Field:
    try:
        return FIELDS[name]
    except KeyError:
        raise UnknownField(name) from None


def encrypted_fields() -> frozenset[str]:
    return frozenset(n for n, f in FIELDS.items() if f.encrypted)


def phi_fields() -> frozenset[str]:
    return frozenset(n for n, f in FIELDS.items() if f.is_phi)


def fields_of(data_point: str) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS.values() if f.data_point.key == data_point)
