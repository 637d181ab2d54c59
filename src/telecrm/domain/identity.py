"""Identity normalisation: the one spelling of an email, a phone number and a name we store and index."""

from __future__ import annotations

import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_PHONE_REGION = (
    "US"  # the platforms we serve are US telehealth; E.164 input is accepted as is
)


class InvalidIdentity(ValueError):
    """An email, phone or name that cannot be normalised. The message never repeats the value."""


def normalise_email(raw: str) -> str:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise InvalidIdentity("not a valid email address") from None
    # Domains are case-insensitive; local parts are in practice too for every mailbox provider
    # our platforms see, and lowercasing keeps the blind index stable.
    return result.normalized.lower()


def normalise_phone(raw: str, region: str = DEFAULT_PHONE_REGION) -> str:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentity("not a parseable phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentity("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_name(raw: str, *, max_length: int = 100) -> str:
    """Unicode names are welcome (NFC-normalised); control and format characters are not."""
    value = unicodedata.normalize("NFC", raw).strip()
    if not value:
        raise InvalidIdentity("must not be empty")
    if len(value) > max_length:
        raise InvalidIdentity(f"longer than {max_length} characters")
    for ch in value:
        if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            raise InvalidIdentity(f"contains a control or unassigned character (U+{ord(ch):04X})")
    return value
