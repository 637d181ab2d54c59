"""Blind indexes: keyed hashes of normalised identifiers, so encrypted columns can be looked up.

An inbound SMS names a phone number and a bounce names an email address; the profile holding
either is found by ``profiles.phone_bidx = BlindIndex.phone(e164)`` without decrypting a row.
Each label (column) gets its own subkey derived from the index key, so the same value indexed
under "email" and under "phone" gives unrelated digests and a leak of one column's index says
nothing about another's. The index reveals equality (which rows share a value) and nothing
more; it is still derived from an identifier, so it is treated as PHI (research/hipaa.md §8.2).
"""

from __future__ import annotations

import hmac

DIGEST_BYTES = 16  # 128 bits: shown as 32 hex characters, the width of the *_bidx columns
EMAIL = "email"
PHONE = "phone"

# Prefix of the subkey derivation; a new scheme gets a new prefix, never a changed meaning.
_SUBKEY_LABEL = b"telecrm/blind-index/v1\x00"


class BlindIndex:
    """HMAC-SHA256 under a per-label subkey of the index key, truncated to 128 bits."""

    __slots__ = ("_key", "_subkeys")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a blind-index key must be at least 32 bytes")
        self._key = bytes(key)
        self._subkeys: dict[str, bytes] = {}

    def subkey(self, label: str) -> bytes:
        """The 32-byte key of `label`: unrelated to every other label's (HMAC-SHA256 of it)."""
        subkey = self._subkeys.get(label)
        if subkey is None:
            if not label:
                raise ValueError("a blind index needs a non-empty label")
            subkey = hmac.digest(self._key, _SUBKEY_LABEL + label.encode(), "sha256")
            self._subkeys[label] = subkey
        return subkey

    def of(self, label: str, value: str) -> str:
        """The index of an already-normalised ``value`` in the column family ``label``."""
        if not value:
            # Every empty value would share one index and "match" each other.
            raise ValueError(f"cannot blind-index an empty {label} value")
        return hmac.digest(self.subkey(label), value.encode(), "sha256")[:DIGEST_BYTES].hex()

    def email(self, normalised_email: str) -> str:
        """Index of an email address as `domain.identity.normalise_email` spells it."""
        return self.of(EMAIL, normalised_email)

    def phone(self, e164: str) -> str:
        """Index of a phone number as `domain.identity.normalise_phone` spells it (E.164)."""
        return self.of(PHONE, e164)

    def __repr__(self) -> str:
        return "BlindIndex(key=<hidden>)"
