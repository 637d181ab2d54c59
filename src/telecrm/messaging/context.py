"""The only vocabulary message templates may use, and the builders that fill it.

A template sees six namespaces and nothing else:

- `patient.<field>`: any field of the catalog (`domain.fields.FIELDS`);
- `event.<variable>`: a variable of `EVENT_VARIABLES`, each declared with the catalog field whose
  data point it discloses, so the PHI lint classifies it through the catalog like a patient field;
- `links.<name>`: URLs to the platform (`Links.for_message`), never carrying a PHI value;
- `brand.<name>`: who is writing (`Brand`);
- `secret.<name>`: one-time values the platform passes for security messages (a two-factor code, a
  password-reset URL); never stored or logged;
- `message.id`: the message's own id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from telecrm.domain.fields import FIELDS

# event variable -> the catalog field whose data point the value discloses
EVENT_VARIABLES: dict[str, str] = {
    "order_id": "last_order_at",
    "amount": "total_order_value",
    "currency": "total_order_value",
    "tracking_number": "last_order_at",
    "tier": "subscription_tier",
    "interval": "billing_cycle",
    "renews_at": "subscription_ends_at",
    "ends_at": "subscription_ends_at",
    "subscription_id": "subscription_status",
    "consultation_id": "consultations_count",
    "appointment_at": "last_consultation_at",
    "ticket_id": "support_tickets_count",
    "category": "support_tickets_count",
    "medication": "medications",
    "prescription_id": "medications",
    "days_supply": "medications",
    "due_on": "medications",
    "treatment_status": "treatment_status",
    "provider_id": "provider_id",
}

LINK_NAMES: tuple[str, ...] = (
    "portal",
    "orders",
    "order",
    "consultation",
    "treatment_plan",
    "refill",
    "subscription",
    "billing",
    "preferences",
    "unsubscribe",
    "survey",
    "reset",
)
BRAND_NAMES: tuple[str, ...] = ("name", "support_email", "support_phone", "address")
SECRET_NAMES: tuple[str, ...] = ("code", "reset_url")
MESSAGE_NAMES: tuple[str, ...] = ("id",)

# namespace -> the attribute names a template may use on it
VOCABULARY: dict[str, frozenset[str]] = {
    "patient": frozenset(FIELDS),
    "event": frozenset(EVENT_VARIABLES),
    "links": frozenset(LINK_NAMES),
    "brand": frozenset(BRAND_NAMES),
    "secret": frozenset(SECRET_NAMES),
    "message": frozenset(MESSAGE_NAMES),
}

# Event data keys that reach templates under another name.
_RENAMED: dict[tuple[str, str], str] = {
    ("treatment_plan.updated", "status"): "treatment_status",
}


def catalog_field_of(reference: str) -> str | None:
    """The catalog field a reference such as "patient.email" or "event.amount" discloses."""
    namespace, _, name = reference.partition(".")
    if namespace == "patient":
        return name if name in FIELDS else None
    if namespace == "event":
        return EVENT_VARIABLES.get(name)
    return None


def build_event_variables(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The template variables an event's data dict carries (only names in `EVENT_VARIABLES`)."""
    found: dict[str, Any] = {}
    for key, value in data.items():
        name = _RENAMED.get((event_type, key), key)
        if name in EVENT_VARIABLES and value is not None:
            found[name] = value
    return found


@dataclass(frozen=True, slots=True)
class Brand:
    """Who the messages come from; operators set their own, the defaults are placeholders."""

    name: str = "Telecrm Health"
    support_email: str = "support@example.com"
    support_phone: str = "(555) 010-0100"
    address: str = "100 Example Street, Suite 200, Austin, TX 78701"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Links:
    """URLs into the platform. Ids go into a path only when their data point is not PHI."""

    base_url: str
    preferences_url: str | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError("Links.base_url must be an http(s) URL")

    def for_message(
        self,
        message_id: str,
        event_vars: Mapping[str, Any] | None = None,
        *,
        reset_url: str | None = None,
    ) -> dict[str, str]:
        """Every link for one message. `reset_url` is a secret the caller passes through."""
        base = self.base_url.rstrip("/")
        ev = event_vars or {}
        prefs = self.preferences_url or f"{base}/account/preferences"
        joiner = "&" if "?" in prefs else "?"
        links = {
            "portal": f"{base}/",
            "orders": f"{base}/orders",
            "order": _with_id(f"{base}/orders", ev.get("order_id")),
            "consultation": _with_id(f"{base}/consultations", ev.get("consultation_id")),
            # The prescription id is classed with medications (PHI): refill links never carry it.
            "treatment_plan": f"{base}/treatment-plan",
            "refill": f"{base}/refills",
            "subscription": f"{base}/account/subscription",
            "billing": f"{base}/account/billing",
            "preferences": prefs,
            "unsubscribe": f"{prefs}{joiner}{urlencode({'unsubscribe': message_id})}",
            "survey": f"{base}/survey?{urlencode({'m': message_id})}",
        }
        if reset_url:
            links["reset"] = reset_url
        return links


def _with_id(prefix: str, ident: Any) -> str:
    return f"{prefix}/{quote(str(ident), safe='')}" if ident else prefix


def template_context(
    *,
    patient: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
    brand: Brand | None = None,
    secret: Mapping[str, str] | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A render context in the shape `TemplateCatalog.render_*` expects."""
    return {
        "patient": dict(patient or {}),
        "event": dict(event or {}),
        "links": dict(links or {}),
        "brand": (brand or Brand()).as_dict(),
        "secret": dict(secret or {}),
        "message": {"id": message_id} if message_id else {},
    }


SAMPLE_BASE_URL = "https://portal.example.com"
SAMPLE_MESSAGE_ID = "msg_8f3a2c"

# Typical values for previews and tests: short, realistic, and fictional.
SAMPLE_PATIENT: dict[str, Any] = {
    "first_name": "Ana",
    "last_name": "Rivera",
    "email": "ana.rivera@example.com",
    "phone": "+15125550142",
    "city": "Austin",
    "state": "TX",
    "postal_code": "78701",
    "timezone": "America/Chicago",
    "language": "en",
    "preferred_channel": "sms",
    "medications": ["Sample medication"],
    "conditions": ["Sample condition"],
    "treatment_status": "created",
    "provider_id": "prov_17",
    "subscription_tier": "plus",
    "subscription_status": "active",
    "orders_count": 3,
    "total_order_value": 129.0,
}
SAMPLE_EVENT: dict[str, Any] = {
    "order_id": "ord_1042",
    "amount": 49.0,
    "currency": "USD",
    "tracking_number": "1Z999AA10123456784",
    "tier": "plus",
    "interval": "monthly",
    "renews_at": "2026-04-01T15:00:00+00:00",
    "ends_at": "2026-04-01T15:00:00+00:00",
    "subscription_id": "sub_311",
    "consultation_id": "con_5521",
    "appointment_at": "2026-03-05T16:30:00+00:00",
    "ticket_id": "tkt_90",
    "category": "billing",
    "medication": "Sample medication",
    "prescription_id": "rx_77",
    "days_supply": 30,
    "due_on": "2026-03-20",
    "treatment_status": "created",
    "provider_id": "prov_17",
}
SAMPLE_SECRET: dict[str, str] = {
    "code": "482913",
    "reset_url": f"{SAMPLE_BASE_URL}/reset/Zx81",
}

_SAMPLE_BY_KIND: dict[str, Any] = {
    "str": "sample",
    "int": 2,
    "float": 19.5,
    "bool": True,
    "date": "1990-05-17",
    "datetime": "2026-03-02T09:00:00+00:00",
    "list": ["sample"],
    "object": {},
}


def sample_patient_value(name: str) -> Any:
    """A sample value for any catalog field (a typed placeholder where none is listed)."""
    if name in SAMPLE_PATIENT:
        return SAMPLE_PATIENT[name]
    return _SAMPLE_BY_KIND.get(FIELDS[name].kind, "sample")


def sample_context(*, patient: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A full context of sample values (every catalog field, event variable, link and secret)."""
    values = {name: sample_patient_value(name) for name in FIELDS}
    values.update(patient or {})
    links = Links(SAMPLE_BASE_URL).for_message(
        SAMPLE_MESSAGE_ID, SAMPLE_EVENT, reset_url=SAMPLE_SECRET["reset_url"]
    )
    return template_context(
        patient=values,
        event=SAMPLE_EVENT,
        links=links,
        secret=SAMPLE_SECRET,
        message_id=SAMPLE_MESSAGE_ID,
    )
