"""Identity normalisation: the one spelling of an email, a phone number and a name we store and index."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

DEFAULT_PHONE_REGION = (
    "US"  # the platforms we serve are US telehealth; E.164 input is accepted as is
)


class InvalidIdentity(ValueError):
    """An email, phone or name that cannot be normalised. The message never repeats the value."""


# The common case (plain ASCII address, ordinary domain) is decided here in a microsecond;
# anything else goes to email_validator, the authority. A property test checks that both agree.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(value: str) -> str | None:
    lowered = value.lower()
    if len(lowered) > 254 or not _PLAIN_EMAIL.fullmatch(lowered):
        return None
    local, _, domain = lowered.partition("@")
    # Labels with "--" in their 3rd and 4th places are reserved for IDNA (RFC 5891 4.2.3.1).
    if len(local) > 64 or any(label[2:4] == "--" for label in domain.split(".")):
        return None
    if any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE):
        return None
    return lowered


def normalise_email(raw: str) -> str:
    plain = _plain_email(raw.strip())
    if plain is not None:
        return plain
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise InvalidIdentity("not a valid email address") from None
    # Domains are case-insensitive; local parts are in practice too for every mailbox provider
    # our platforms see, and lowercasing keeps the blind index stable.
    return result.normalized.lower()


@lru_cache(maxsize=65_536)  # phonenumbers costs ~70 µs a call; shared numbers repeat
def normalise_phone(raw: str, region: str = DEFAULT_PHONE_REGION) -> str:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentity("not a parseable phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentity("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Control, format, surrogate, private-use and unassigned characters, plus the line and paragraph
# separators that split a log line as a newline does.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# ZWNJ and ZWJ are format characters, but Persian and Indic scripts need them inside words.
_JOINERS = frozenset({"\u200c", "\u200d"})


def _joins_letters(value: str, i: int) -> bool:
    return 0 < i < len(value) - 1 and all(
        unicodedata.category(value[j])[0] in "LM" for j in (i - 1, i + 1)
    )


def clean_name(raw: str, *, max_length: int = 100) -> str:
    """Unicode names are welcome (NFC-normalised); control and format characters are not."""
    if raw.isascii():
        # Most names: printable ASCII is NFC already and holds no refused character, so the
        # per-character check below can only pass (tested against it).
        value = raw.strip()
        if value.isprintable():
            if not value:
                raise InvalidIdentity("must not be empty")
            if len(value) > max_length:
                raise InvalidIdentity(f"longer than {max_length} characters")
            return value
    value = unicodedata.normalize("NFC", raw).strip()
    if not value:
        raise InvalidIdentity("must not be empty")
    if len(value) > max_length:
        raise InvalidIdentity(f"longer than {max_length} characters")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) not in _REFUSED_CATEGORIES:
            continue
        if ch in _JOINERS and _joins_letters(value, i):
            continue
        raise InvalidIdentity(f"contains a control or unassigned character (U+{ord(ch):04X})")
    return value
