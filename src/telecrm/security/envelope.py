"""Field-level encryption: AES-256-GCM tokens bound to (record id, field) and named by data key.

A token is ``0x01 | key id (8 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)``. The key
id in the header lets old ciphertexts decrypt after a new data key becomes active, so rotating
needs no schema change and no downtime. The associated data is the header followed by the
length-prefixed record id and the field name, so a token copied to another row or column fails
authentication instead of decrypting to someone else's value.

Event payloads use format 2 (``0x02 | key id | salt tag (4 bytes) | nonce | ciphertext | tag``):
the AES key is HMAC-SHA256(data key, "telecrm/payload/v2" || patient salt), a random 32-byte salt
kept per patient in ``patient_salts``; the salt tag (the first bytes of the salt's SHA-256) tells
a salt destroyed by an erasure from the new one of a patient who registered again. Deleting a patient's salt makes every payload sealed for
them unreadable by anyone, with any key (crypto-shredding; security/shredding.py). HMAC keyed by
the data key is a PRF, so a derived key says nothing about the data key or another patient's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from telecrm.security.errors import DecryptionFailed, Shredded, UnknownDataKey

FORMAT_VERSION = 1
SALTED_FORMAT_VERSION = 2  # per-patient derived key (crypto-shredding)
SALT_BYTES = 32
_DERIVE_LABEL = b"telecrm/payload/v2"
SALT_TAG_BYTES = 4
_DERIVED_CACHE = 65_536  # derived keys kept (a few MB): an import touches many patients
KEY_BYTES = 32  # AES-256
KEY_ID_BYTES = 8  # shown as 16 hex characters, the width of data_keys.key_id
NONCE_BYTES = 12  # the 96-bit nonce GCM is specified for (NIST SP 800-38D)
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES
BODY_START = HEADER_BYTES + NONCE_BYTES
MIN_TOKEN_BYTES = BODY_START + TAG_BYTES
SALTED_HEADER_BYTES = HEADER_BYTES + SALT_TAG_BYTES

_VERSION_BYTE = bytes([FORMAT_VERSION])
_SALTED_BYTE = bytes([SALTED_FORMAT_VERSION])
_pack_length = struct.Struct(">I").pack


def key_id_bytes(key_id: str) -> bytes:
    """The 8 raw bytes a token carries for a 16-hex-character key id."""
    try:
        raw = bytes.fromhex(key_id)
    except ValueError:
        raw = b""
    if len(raw) != KEY_ID_BYTES:
        raise ValueError(f"a data key id is {2 * KEY_ID_BYTES} hex characters, got {key_id!r}")
    return raw


def salt_tag(salt: bytes) -> bytes:
    """The few bytes a format-2 token carries to name the salt it was sealed under."""
    return hashlib.sha256(salt).digest()[:SALT_TAG_BYTES]


def _associated_data(header: bytes, record_id: str, field: str) -> bytes:
    # Only the record id needs a length prefix: the field runs to the end, so ("ab", "c") and
    # ("a", "bc") give different bytes.
    rid = record_id.encode()
    return b"".join((header, _pack_length(len(rid)), rid, field.encode()))


class FieldCipher:
    """Encrypts under the active data key; decrypts under any key it was given."""

    __slots__ = (
        "_active_aead",
        "_active_header",
        "_aeads",
        "_derived",
        "_keys",
        "active_key_id",
    )

    def __init__(self, active_key_id: str, keys: Mapping[str, bytes]) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active data key {active_key_id} is not among the keys given")
        aeads: dict[bytes, AESGCM] = {}
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"data key {key_id} is not {KEY_BYTES} bytes long")
            # One AESGCM per key, built once: constructing it is the costly part of a call.
            aeads[key_id_bytes(key_id)] = AESGCM(key)
        self.active_key_id = active_key_id
        self._aeads = aeads
        self._keys = {key_id_bytes(k): bytes(v) for k, v in keys.items()}
        # (data key id, salt) -> (derived AEAD, the salt's tag): each patient's is made once
        self._derived: dict[tuple[bytes, bytes], tuple[AESGCM, bytes]] = {}
        self._active_header = _VERSION_BYTE + key_id_bytes(active_key_id)
        self._active_aead = aeads[key_id_bytes(active_key_id)]

    def _derived_aead(self, key_id: bytes, salt: bytes) -> tuple[AESGCM, bytes]:
        entry = self._derived.get((key_id, salt))
        if entry is None:
            key = self._keys.get(key_id)
            if key is None:
                raise UnknownDataKey(key_id.hex())
            if len(self._derived) >= _DERIVED_CACHE:
                self._derived.clear()  # cheap to rebuild; a bound, not an LRU
            entry = (AESGCM(hmac.digest(key, _DERIVE_LABEL + salt, "sha256")), salt_tag(salt))
            self._derived[(key_id, salt)] = entry
        return entry

    def encrypt(
        self, plaintext: bytes, *, record_id: str, field: str, salt: bytes | None = None
    ) -> bytes:
        """Seal under the active data key; with ``salt``, under the patient's derived key."""
        if salt is None:
            header, aead = self._active_header, self._active_aead
        else:
            if len(salt) != SALT_BYTES:
                raise ValueError(f"a patient salt is {SALT_BYTES} bytes")
            aead, tag = self._derived_aead(self._active_header[1:], salt)
            header = _SALTED_BYTE + self._active_header[1:] + tag
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, plaintext, _associated_data(header, record_id, field))
        return header + nonce + sealed

    def decrypt(
        self, token: bytes, *, record_id: str, field: str, salt: bytes | None = None
    ) -> bytes:
        """Open a token of either format; a salted one needs its patient's salt.

        Raises Shredded for a salted token when ``salt`` is None: the patient's salt was
        deleted by an erasure (callers join ``patient_salts`` and pass what they found).
        """
        if len(token) < MIN_TOKEN_BYTES:
            raise DecryptionFailed(
                "not a telecrm ciphertext (too short)", record_id=record_id, field=field
            )
        if token[0] == FORMAT_VERSION:
            header = bytes(token[:HEADER_BYTES])
            aead = self._aeads.get(header[1:])
            if aead is None:
                raise UnknownDataKey(header[1:].hex())
        elif token[0] == SALTED_FORMAT_VERSION:
            if len(token) < MIN_TOKEN_BYTES + SALT_TAG_BYTES:
                raise DecryptionFailed(
                    "not a telecrm ciphertext (too short)", record_id=record_id, field=field
                )
            header = bytes(token[:SALTED_HEADER_BYTES])
            if salt is None:
                raise Shredded(record_id=record_id, field=field)
            aead, tag = self._derived_aead(header[1:HEADER_BYTES], bytes(salt))
            if tag != header[HEADER_BYTES:]:
                # The salt it was sealed under is gone (a later one may exist: sent again after
                # the erasure)
                raise Shredded(record_id=record_id, field=field)
        else:
            raise DecryptionFailed(
                f"unknown ciphertext format version {token[0]}", record_id=record_id, field=field
            )
        body = len(header)
        try:
            return aead.decrypt(
                token[body : body + NONCE_BYTES],
                token[body + NONCE_BYTES :],
                _associated_data(header, record_id, field),
            )
        except InvalidTag:
            raise DecryptionFailed(
                "authentication failed: the ciphertext was altered, or it belongs to another "
                "record or field",
                record_id=record_id,
                field=field,
            ) from None

    def encrypt_json(self, value: Any, *, record_id: str, field: str) -> str:
        """orjson-serialise ``value``, encrypt it and return base64 text for a JSON/text column."""
        token = self.encrypt(orjson.dumps(value), record_id=record_id, field=field)
        return base64.b64encode(token).decode("ascii")

    def decrypt_json(self, token: str, *, record_id: str, field: str) -> Any:
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionFailed(
                "not a telecrm ciphertext (not base64)", record_id=record_id, field=field
            ) from None
        plaintext = self.decrypt(raw, record_id=record_id, field=field)
        try:
            return orjson.loads(plaintext)
        except orjson.JSONDecodeError:
            # The decode error holds the document (PHI) in .doc: raise ours after the except
            # block, so it is not even the suppressed __context__ of what reaches a log.
            pass
        raise DecryptionFailed(
            "decrypted bytes are not JSON (written with encrypt, not encrypt_json)",
            record_id=record_id,
            field=field,
        )

    @staticmethod
    def key_id_of(token: bytes) -> str:
        """The id of the data key a token was encrypted under (to find rows to re-encrypt)."""
        if len(token) < MIN_TOKEN_BYTES or token[0] not in (
            FORMAT_VERSION,
            SALTED_FORMAT_VERSION,
        ):
            raise DecryptionFailed("not a telecrm ciphertext")
        return bytes(token[1:HEADER_BYTES]).hex()

    def holds(self, key_id: str) -> bool:
        """Whether tokens under ``key_id`` can be decrypted by this cipher."""
        return key_id_bytes(key_id) in self._aeads
