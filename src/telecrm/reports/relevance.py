"""A CRM relevance class per endpoint (high / medium / low), from rules a reader can check.

The rules, first match wins (docs/reports.md lists them with the reasons):
  R1 webhook            high    the platform pushes changes: triggers for journeys and sync
  R2 change_feed        high    a list endpoint with an `updated_since`-style parameter: incremental pull
  R3 lifecycle_entity   high    patient contact data, or a patient / order / subscription entity
  R4 phi_only_clinical  medium  only PHI clinical data: syncs to BAA destinations only
  R5 catalog_data       medium  some other catalog data point
  R6 no_catalog_data    low     nothing a CRM holds (health checks, admin, metadata)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telecrm.domain.fields import Category, Sensitivity
from telecrm.reports.data_points import EndpointData
from telecrm.reports.endpoints import Endpoint

CONTACT_POINTS = frozenset(
    {"contact", "location", "demographics", "communication_preferences", "subscription", "orders"}
)
LIFECYCLE_ENTITIES = re.compile(
    r"^(patients?|members?|customers?|users?|leads?|contacts?|consultations?|appointments?|"
    r"visits?|orders?|subscriptions?|payments?|referrals?|reviews?)$",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Relevance:
    level: str  # "high", "medium" or "low"
    rule: str
    reason: str


def entity_of(path: str) -> str:
    """The collection an endpoint acts on: its last segment that is not a parameter."""
    segments = [s for s in path.split("/") if s and not s.startswith("{")]
    return segments[-1] if segments else ""


def classify(endpoint: Endpoint, data: EndpointData) -> Relevance:
    if endpoint.is_webhook:
        return Relevance("high", "R1 webhook", "the platform pushes this event")
    if endpoint.is_list and endpoint.parameters_for("change_feed"):
        names = ", ".join(p.name for p in endpoint.parameters_for("change_feed"))
        return Relevance("high", "R2 change_feed", f"list endpoint filtered by {names}")
    points = data.data_points
    if points & CONTACT_POINTS or LIFECYCLE_ENTITIES.match(entity_of(endpoint.path)):
        return Relevance("high", "R3 lifecycle_entity", "patient contact or lifecycle entity")
    clinical = [m for m in data.matches if m.catalog.category is Category.MEDICAL]
    if clinical and all(m.catalog.sensitivity is Sensitivity.PHI for m in data.matches):
        return Relevance("medium", "R4 phi_only_clinical", "PHI only: BAA destinations only")
    if points:
        return Relevance("medium", "R5 catalog_data", "carries catalog data points")
    return Relevance("low", "R6 no_catalog_data", "no catalog data point")
