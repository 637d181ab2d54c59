"""Labelled answers for the analyzer's fixtures, written by hand from the documents themselves.

`ENDPOINTS`: (kind, METHOD, path, auth, relevance) per endpoint. `FIELDS`: per endpoint, every
schema field a reader finds in its 2xx bodies and the catalog field it truly holds (None: no
catalog data point). Disagreements the analyzer is known to make are listed in `KNOWN_MISSES`
and `KNOWN_FALSE_MATCHES` so the precision and recall below are honest, and a change shows.
"""

from __future__ import annotations

_PATIENT = {
    "id": None,
    "firstName": "first_name",
    "lastName": "last_name",
    "contact.email": "email",
    "contact.mobile": "phone",
    "birthDate": "date_of_birth",
    "insuranceId": "insurance_member_id",
    "favouriteColour": None,
}
_CONSULTATION = {"id": None, "patient_id": None, "provider_id": "provider_id", "status": None}

OPENAPI31 = {
    "file": "telehealth_openapi31.yaml",
    "endpoints": {
        ("path", "GET", "/patients", ("jwt_bearer",), "high"),
        ("path", "POST", "/patients", ("jwt_bearer",), "high"),
        ("path", "GET", "/patients/{id}", ("jwt_bearer",), "high"),
        ("path", "GET", "/patients/{id}/conditions", ("jwt_bearer",), "medium"),
        ("path", "GET", "/consultations", ("jwt_bearer",), "high"),
        ("path", "POST", "/public/intake", ("none",), "high"),
        ("path", "GET", "/health", ("none",), "low"),
        ("webhook", "POST", "consultationSubmitted", ("n/a",), "high"),
    },
    "fields": {
        "GET /patients": {**{f"data[].{k}": v for k, v in _PATIENT.items()}, "next_cursor": None},
        "POST /patients": _PATIENT,
        "GET /patients/{id}": _PATIENT,
        "GET /patients/{id}/conditions": {
            "[].diagnosis": "conditions",
            "[].onset": "conditions",  # when a condition began is medical history
            "[].related": None,
        },
        "GET /consultations": {f"[].{k}": v for k, v in _CONSULTATION.items()},
        "POST /public/intake": {"email": "email", "dob": "date_of_birth", "symptoms": "symptoms"},
        "GET /health": {},
        "POST consultationSubmitted": _CONSULTATION,
    },
    "known_misses": {("GET /patients/{id}/conditions", "[].onset")},
    "known_false_matches": set(),
}

SWAGGER2 = {
    "file": "petclinic_swagger2.json",
    "endpoints": {
        ("path", "GET", "/members", ("api_key",), "high"),
        ("path", "GET", "/members/{memberId}/prescriptions", ("oauth2",), "medium"),
        ("path", "POST", "/hooks/payment-callback", ("none",), "high"),
    },
    "fields": {
        "GET /members": {
            "[].member_id": None,  # the clinic's own account id, not an insurance member id
            "[].full_name": "first_name",
            "[].email_address": "email",
            "[].zip": "postal_code",
            "[].gender": "sex",
        },
        "GET /members/{memberId}/prescriptions": {
            "[].rx": "medications",
            "[].allergies": "allergies",
        },
        "POST /hooks/payment-callback": {
            "amount": "total_order_value",
            "card_last4": "payment_method_last4",
            "plan": "subscription_tier",
        },
    },
    "known_misses": set(),
    "known_false_matches": {("GET /members", "[].member_id")},
}

KEYS = (OPENAPI31, SWAGGER2)
