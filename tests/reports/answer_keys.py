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


# --- source trees (reports/source_report.py) -------------------------------------------------
# `endpoints`: (METHOD, path, auth) for every route a reader of the tree finds, auth being what
# a request must carry (`signature`: a webhook receiver that verifies its sender). `phi_fields`:
# per endpoint, the body / model fields that hold PHI by the field catalog (diagnosis,
# medications, allergies, symptoms / severity); `not_phi`: fields a reader sees that hold no PHI
# (identifiers, contact, payment), to count false PHI calls. Written from the fixture files.

EXPRESS_APP = {
    "dir": "express_app",
    "endpoints": {
        ("GET", "/health", ("none",)),
        ("GET", "/account/preferences", ("session",)),
        ("GET", "/api/orders/plans", ("none",)),  # registered before router.use(requirePartnerKey)
        ("POST", "/api/orders", ("api_key",)),
        ("GET", "/api/orders", ("api_key",)),
        ("GET", "/api/patients", ("jwt_bearer",)),
        ("POST", "/api/patients", ("jwt_bearer",)),
        ("GET", "/api/patients/{id}", ("jwt_bearer",)),  # and its alias /:patientId
        ("PATCH", "/api/patients/{id}/conditions", ("jwt_bearer",)),
        ("POST", "/hooks/stripe", ("signature",)),
        ("POST", "/hooks/lab-callback", ("none",)),
    },
    "phi_fields": {
        "POST /api/patients": {"medications"},
        "PATCH /api/patients/{id}/conditions": {"diagnosis", "severity"},
        "POST /hooks/lab-callback": {"diagnosis", "medications"},
    },
    "not_phi": {
        "POST /api/patients": {"first_name", "last_name", "email", "date_of_birth"},
        "POST /api/orders": {"plan", "amount", "card_last4"},
        "POST /hooks/lab-callback": {"patient_id"},
    },
    "templates": {
        ("email", "d-1234567890abcdef1234567890abcdef"),
        ("sms", "inline: Your refill is ready."),
        ("email", "refill-reminder.hbs"),
    },
    "triggers": {"order.paid"},
    "findings": {
        ("duplicate_endpoint", "GET /api/patients/{id}"),
        ("unauthenticated_phi", "POST /hooks/lab-callback"),
        ("unverified_webhook_receiver", "POST /hooks/lab-callback"),
    },
}

FASTAPI_APP = {
    "dir": "fastapi_app",
    "endpoints": {
        ("GET", "/health", ("none",)),
        ("POST", "/api/v1/orders", ("jwt_bearer",)),  # include_router(dependencies=[...])
        ("GET", "/api/v1/orders", ("jwt_bearer",)),
        ("GET", "/api/v1/partner/referrals", ("api_key",)),  # APIRouter(dependencies=[...])
        ("GET", "/api/v1/patients", ("jwt_bearer",)),
        ("POST", "/api/v1/patients", ("jwt_bearer",)),
        ("GET", "/api/v1/patients/{patient_id}", ("jwt_bearer",)),  # Annotated[..., Depends()]
        ("POST", "/api/v1/public/intake", ("none",)),
        ("POST", "/webhooks/stripe", ("signature",)),
        ("POST", "/webhooks/lab-results", ("none",)),
    },
    "phi_fields": {
        "POST /api/v1/patients": {"medications", "diagnosis"},
        "POST /api/v1/public/intake": {"symptoms"},
        "POST /webhooks/lab-results": {"diagnosis", "allergies"},
    },
    "not_phi": {
        "POST /api/v1/patients": {
            "first_name",
            "last_name",
            "contact.email",
            "date_of_birth",
            "favourite_colour",
        },
        "POST /api/v1/public/intake": {"email", "dob"},
        "POST /webhooks/lab-results": {"patient_id"},
    },
    "templates": {
        ("email", "d-0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        ("sms", "inline: Your visit is tomorrow."),
        ("email", "welcome.html"),
    },
    "triggers": {"order.paid", "lab.result_received"},
    "findings": {
        ("unauthenticated_phi", "POST /api/v1/public/intake"),
        ("unauthenticated_phi", "POST /webhooks/lab-results"),
        ("unverified_webhook_receiver", "POST /webhooks/lab-results"),
    },
}

FLASK_APP = {
    "dir": "flask_app",
    "endpoints": {
        ("GET", "/health", ("none",)),
        ("GET", "/api/patients", ("jwt_bearer",)),  # register_blueprint's url_prefix wins
        ("POST", "/api/patients", ("jwt_bearer",)),
        ("GET", "/api/patients/{patient_id}/notes", ("session",)),
        ("POST", "/api/patients/{patient_id}/notes", ("session",)),
        ("POST", "/webhooks/pharmacy", ("signature",)),  # hmac.compare_digest
        ("POST", "/webhooks/crm-callback", ("none",)),
    },
    "phi_fields": {
        "POST /api/patients": {"allergies"},
        "POST /api/patients/{patient_id}/notes": {"symptoms"},  # read under `if POST` only
        "POST /webhooks/pharmacy": {"prescription"},
    },
    "not_phi": {
        "POST /api/patients": {"first_name", "birth_date"},
        "POST /webhooks/pharmacy": {"email"},
        "POST /webhooks/crm-callback": {"email"},
    },
    "templates": {("email", "inline: Your results are ready")},
    "triggers": {"Results Ready Email Sent"},
    "findings": {("unauthenticated_webhook_receiver", "POST /webhooks/crm-callback")},
}

DJANGO_APP = {
    "dir": "django_app",
    "endpoints": {
        ("GET", "/health", ("none",)),
        ("GET", "/api/patients", ("jwt_bearer",)),  # DRF default auth class in settings
        ("POST", "/api/patients", ("jwt_bearer",)),
        ("GET", "/api/patients/{pk}", ("jwt_bearer",)),
        ("GET", "/api/portal/profile", ("session",)),
        ("POST", "/api/portal/profile", ("session",)),
        ("POST", "/api/webhooks/stripe", ("signature",)),
    },
    "phi_fields": {
        "GET /api/patients": {"conditions"},
        "POST /api/patients": {"conditions"},
        "GET /api/patients/{pk}": {"conditions"},
    },
    "not_phi": {
        "GET /api/patients": {"id", "first_name", "email", "date_of_birth"},
        "POST /api/portal/profile": {"preferred_language"},
    },
    "templates": set(),
    "triggers": set(),
    "findings": set(),
}

NESTJS_APP = {
    "dir": "nestjs_app",
    "endpoints": {
        ("GET", "/api/health", ("none",)),
        ("GET", "/api/admin/export", ("api_key",)),
        ("GET", "/api/patients", ("jwt_bearer",)),
        ("GET", "/api/patients/{id}", ("jwt_bearer",)),
        ("POST", "/api/patients", ("jwt_bearer",)),
        ("POST", "/api/webhooks/stripe", ("signature",)),
        ("POST", "/api/webhooks/email-events", ("none",)),
    },
    "phi_fields": {"POST /api/patients": {"medications", "allergies"}},
    "not_phi": {
        "POST /api/patients": {
            "firstName",
            "contactAddress",
            "birthDate",
            "emergencyContact.name",
            "emergencyContact.phone",
        },
        "POST /api/webhooks/email-events": {"[].email", "[].event", "[].sg_message_id"},
    },
    "templates": {
        ("email", "d-abcdefabcdefabcdefabcdefabcdef12"),
        ("whatsapp", "HXb5b62575e6e4ff6129ad7c8efe1f983e"),
    },
    "triggers": {"patient.welcomed"},
    "findings": {("unauthenticated_webhook_receiver", "POST /api/webhooks/email-events")},
}

SOURCE_KEYS = (EXPRESS_APP, FASTAPI_APP, FLASK_APP, DJANGO_APP, NESTJS_APP)
