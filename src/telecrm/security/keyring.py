"""The keyring: master keys from settings, the data keys they wrap in data_keys, and rotation.

Two layers, as in a KMS (research/hipaa.md §8.1, §8.4). The key-encryption key (KEK, the
"master key") lives only in settings or a secrets manager. Data keys are random, live in the
``data_keys`` table wrapped (AES-256-GCM) by the KEK, and are unwrapped into memory once per
process. Rotating the KEK re-wraps a handful of rows; rotating the data key makes a new one
active while the old ones stay readable, so nothing has to be re-encrypted at once and readers
keep working throughout.

Rotation without downtime, in order: (1) give every process the new key as TELECRM_MASTER_KEY
and the old one in TELECRM_PREVIOUS_MASTER_KEYS; (2) run ``rotate_keys``; (3) remove the old key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Row, delete, false, insert, select, text, update

from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import KEY_BYTES, NONCE_BYTES, FieldCipher
from telecrm.security.errors import (
    MASTER_KEY_SETTING,
    PREVIOUS_MASTER_KEYS_SETTING,
    MasterKeyInvalid,
    MasterKeyMissing,
    SecurityError,
    UnwrapFailed,
)
from telecrm.security.tables import data_keys

DATA = "data"  # field encryption
INDEX = "index"  # blind-index HMAC key
PURPOSES = (DATA, INDEX)

_WRAP_VERSION = b"\x01"
_WRAP_LABEL = b"telecrm/data-key/v1\x00"
_KEK_ID_LABEL = b"telecrm/kek-id/v1"
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def parse_master_key(value: str, *, setting: str = MASTER_KEY_SETTING) -> bytes:
    """Decode a master key: base64, standard or URL-safe, padded or not, of exactly 32 bytes."""
    encoded = value.strip()
    if not encoded:
        raise MasterKeyMissing(setting)
    encoded = encoded.translate(_URLSAFE_TO_STANDARD)
    encoded += "=" * (-len(encoded) % 4)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyInvalid(setting, "it is not base64") from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyInvalid(setting, f"it decodes to {len(raw)} bytes, not {KEY_BYTES}")
    return raw


def generate_master_key() -> str:
    """A new master key, as the base64 text TELECRM_MASTER_KEY expects."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def kek_id(kek: bytes) -> str:
    """A key's public fingerprint (16 hex characters): says which key, reveals nothing of it."""
    return hmac.digest(kek, _KEK_ID_LABEL, "sha256")[:8].hex()


def load_master_keys(
    master_key: str | None, previous_master_keys: Iterable[str] = ()
) -> tuple[bytes, tuple[bytes, ...]]:
    """The current and previous master keys from their settings' text, checked once."""
    if master_key is None:
        raise MasterKeyMissing()
    current = parse_master_key(master_key)
    previous = tuple(
        parse_master_key(value, setting=f"{PREVIOUS_MASTER_KEYS_SETTING} (entry {number})")
        for number, value in enumerate(previous_master_keys, start=1)
    )
    return current, previous


def _kek_map(master_key: bytes, previous_master_keys: Sequence[bytes]) -> dict[str, bytes]:
    keks: dict[str, bytes] = {}
    for position, kek in enumerate((master_key, *previous_master_keys)):
        if len(kek) != KEY_BYTES:
            setting = MASTER_KEY_SETTING if position == 0 else PREVIOUS_MASTER_KEYS_SETTING
            raise MasterKeyInvalid(setting, f"it is {len(kek)} bytes, not {KEY_BYTES}")
        keks.setdefault(kek_id(kek), bytes(kek))
    return keks


def _wrap_aad(key_id: str, purpose: str) -> bytes:
    # Binds the wrapped bytes to their row: a wrapped index key pasted into a data key's row
    # (or under another id) does not unwrap.
    return _WRAP_LABEL + key_id.encode() + b"\x00" + purpose.encode()


def _wrap(kek: bytes, key_id: str, purpose: str, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return _WRAP_VERSION + nonce + AESGCM(kek).encrypt(nonce, key, _wrap_aad(key_id, purpose))


def _unwrap(keks: Mapping[str, bytes], row: Row[Any]) -> bytes:
    kek = keks.get(row.kek_id)
    if kek is None:
        raise UnwrapFailed(row.key_id, row.kek_id, list(keks))
    wrapped = bytes(row.wrapped)
    if wrapped[:1] != _WRAP_VERSION:
        raise UnwrapFailed(row.key_id, row.kek_id, altered=True)
    nonce, sealed = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
    try:
        return AESGCM(kek).decrypt(nonce, sealed, _wrap_aad(row.key_id, row.purpose))
    except InvalidTag:
        raise UnwrapFailed(row.key_id, row.kek_id, altered=True) from None


def _read_rows(conn: Connection) -> list[Row[Any]]:
    return list(conn.execute(select(data_keys).order_by(data_keys.c.created_us)).all())


def _lock_data_keys(conn: Connection) -> None:
    """Serialise writers of data_keys until the caller's transaction ends; readers go on."""
    if conn.dialect.name == "postgresql":
        # Conflicts with itself and with row writes, not with SELECT: readers never wait.
        conn.execute(text("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # SQLite: any write statement takes the database's one write lock (waiting out the
        # busy timeout), so what is read after it cannot change before this transaction ends.
        conn.execute(delete(data_keys).where(false()))


def _missing_purposes(rows: Iterable[Row[Any]]) -> list[str]:
    active = {row.purpose for row in rows if row.active}
    return [purpose for purpose in PURPOSES if purpose not in active]


def _create_key(conn: Connection, master_key: bytes, purpose: str, now_us: int) -> str:
    key_id = secrets.token_hex(8)
    key = secrets.token_bytes(KEY_BYTES)
    conn.execute(
        insert(data_keys).values(
            key_id=key_id,
            purpose=purpose,
            wrapped=_wrap(master_key, key_id, purpose, key),
            kek_id=kek_id(master_key),
            active=True,
            created_us=now_us,
            rewrapped_us=None,
        )
    )
    return key_id


def _create_missing(conn: Connection, master_key: bytes, now_us: int) -> dict[str, str]:
    """Creates an active key for each purpose that has none; the caller holds the lock."""
    return {
        purpose: _create_key(conn, master_key, purpose, now_us)
        for purpose in _missing_purposes(_read_rows(conn))
    }


def list_data_keys(conn: Connection) -> list[dict[str, Any]]:
    """Every data key's metadata (never its bytes), oldest first: for `telecrm keys list`."""
    return [
        {
            "key_id": row.key_id,
            "purpose": row.purpose,
            "active": bool(row.active),
            "kek_id": row.kek_id,
            "created_us": row.created_us,
            "rewrapped_us": row.rewrapped_us,
        }
        for row in _read_rows(conn)
    ]


class Keyring:
    """The unwrapped data keys of one process, and the ciphers built from them."""

    def __init__(self, keks: Mapping[str, bytes], current_kek_id: str) -> None:
        self._keks = dict(keks)
        self.kek_id = current_kek_id
        self._keys: dict[str, tuple[str, bytes]] = {}
        self._active: dict[str, str] = {}
        self._cipher: FieldCipher | None = None
        self._blind_index: BlindIndex | None = None

    @classmethod
    def open(
        cls,
        conn: Connection,
        master_key: bytes,
        previous_master_keys: Sequence[bytes] = (),
        *,
        now_us: int,
    ) -> Keyring:
        """Loads data_keys, creating the first data and index keys on an empty table."""
        keks = _kek_map(master_key, previous_master_keys)
        rows = _read_rows(conn)
        if _missing_purposes(rows):
            # Check again under the lock: a process opening at the same moment may have
            # created the keys since, and there must be one active key per purpose.
            _lock_data_keys(conn)
            _create_missing(conn, master_key, now_us)
            rows = _read_rows(conn)
        keyring = cls(keks, kek_id(master_key))
        keyring._load(rows)
        return keyring

    def refresh(self, conn: Connection) -> None:
        """Re-reads data_keys, after another process rotated; known keys are not unwrapped again."""
        self._load(_read_rows(conn))

    def _load(self, rows: Sequence[Row[Any]]) -> None:
        newest_active: dict[str, tuple[int, str]] = {}
        for row in rows:
            if row.key_id not in self._keys:
                self._keys[row.key_id] = (row.purpose, _unwrap(self._keks, row))
            if row.active:
                candidate = (row.created_us, row.key_id)
                if candidate > newest_active.get(row.purpose, (-1, "")):
                    newest_active[row.purpose] = candidate
        for purpose in PURPOSES:
            if purpose not in newest_active:
                raise SecurityError(
                    f"data_keys holds no active {purpose!r} key: open the keyring with "
                    "Keyring.open, which creates one"
                )
        self._active = {purpose: key_id for purpose, (_, key_id) in newest_active.items()}
        self._cipher = None
        self._blind_index = None

    @property
    def active_data_key_id(self) -> str:
        return self._active[DATA]

    @property
    def active_index_key_id(self) -> str:
        return self._active[INDEX]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def cipher(self) -> FieldCipher:
        """Encrypts under the active data key, decrypts under every data key ever made."""
        if self._cipher is None:
            data = {key_id: key for key_id, (purpose, key) in self._keys.items() if purpose == DATA}
            self._cipher = FieldCipher(self.active_data_key_id, data)
        return self._cipher

    def blind_index(self) -> BlindIndex:
        if self._blind_index is None:
            self._blind_index = BlindIndex(self._keys[self.active_index_key_id][1])
        return self._blind_index

    def __repr__(self) -> str:
        return f"Keyring(kek_id={self.kek_id!r}, data_key={self._active.get(DATA)!r})"


@dataclass(frozen=True)
class RotationReport:
    rewrapped: int  # data keys moved from an older master key to the current one
    new_data_key_id: str | None  # the data key now active, when one was made
    kek_id: str  # the master key every data key is now wrapped under


def rotate_keys(
    conn: Connection,
    master_key: bytes,
    previous_master_keys: Sequence[bytes] = (),
    *,
    now_us: int,
    new_data_key: bool = True,
) -> RotationReport:
    """Re-wraps every data key under ``master_key`` and, by default, activates a new data key.

    Runs in the caller's transaction: readers see the old rows until it commits, then the new
    ones, and every old key stays readable, so old ciphertexts decrypt throughout.
    """
    keks = _kek_map(master_key, previous_master_keys)
    current = kek_id(master_key)
    _lock_data_keys(conn)
    # Unwrap everything before writing anything: a missing previous key fails the whole
    # rotation rather than leaving it half done.
    stale = [(row, _unwrap(keks, row)) for row in _read_rows(conn) if row.kek_id != current]
    for row, key in stale:
        conn.execute(
            update(data_keys)
            .where(data_keys.c.key_id == row.key_id)
            .values(
                wrapped=_wrap(master_key, row.key_id, row.purpose, key),
                kek_id=current,
                rewrapped_us=now_us,
            )
        )
    created = _create_missing(conn, master_key, now_us)
    new_id = created.get(DATA)
    if new_data_key and new_id is None:
        conn.execute(
            update(data_keys)
            .where(data_keys.c.purpose == DATA, data_keys.c.active.is_(True))
            .values(active=False)
        )
        new_id = _create_key(conn, master_key, DATA, now_us)
    return RotationReport(rewrapped=len(stale), new_data_key_id=new_id, kek_id=current)
