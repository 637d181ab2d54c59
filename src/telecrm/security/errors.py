"""The security part's exceptions: each says what to do, none carries a key, plaintext or PHI value."""

from __future__ import annotations

from collections.abc import Sequence

MASTER_KEY_SETTING = "TELECRM_MASTER_KEY"
PREVIOUS_MASTER_KEYS_SETTING = "TELECRM_PREVIOUS_MASTER_KEYS"


class SecurityError(Exception):
    """Base of every error raised by telecrm.security."""


class MasterKeyMissing(SecurityError):
    """No key-encryption key is configured, so no PHI can be encrypted or read."""

    def __init__(self, setting: str = MASTER_KEY_SETTING) -> None:
        self.setting = setting
        super().__init__(
            f"{setting} is not set: telecrm needs it to encrypt and read PHI. "
            "Generate one with `telecrm keys generate`, store it in your secrets manager "
            f"(never in the database) and set {setting}=<that value>."
        )


class MasterKeyInvalid(SecurityError):
    """A configured key is not base64 of 32 bytes; the message never repeats the value."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(
            f"{setting} is not a usable key: {reason}. It must be the base64 of exactly 32 "
            "random bytes; `telecrm keys generate` prints a new one."
        )


class UnknownDataKey(SecurityError):
    """A ciphertext names a data key that the keyring does not hold."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"ciphertext was encrypted under data key {key_id}, which is not in the keyring: "
            "the data_keys table was replaced or another process rotated keys "
            "(call Keyring.refresh, or restore that key's row)."
        )


class UnwrapFailed(SecurityError):
    """A wrapped data key cannot be unwrapped by any configured key-encryption key."""

    def __init__(
        self,
        key_id: str,
        needed_kek_id: str,
        configured_kek_ids: Sequence[str] = (),
        *,
        altered: bool = False,
    ) -> None:
        self.key_id = key_id
        self.needed_kek_id = needed_kek_id
        self.configured_kek_ids = tuple(configured_kek_ids)
        if altered:
            message = (
                f"data key {key_id} is wrapped under KEK {needed_kek_id}, which is configured, "
                "but unwrapping failed: its row in data_keys was altered or corrupted."
            )
        else:
            have = ", ".join(self.configured_kek_ids) or "none"
            message = (
                f"data key {key_id} is wrapped under KEK {needed_kek_id}, but the configured "
                f"keys have ids {have}. Set {MASTER_KEY_SETTING} (or add to "
                f"{PREVIOUS_MASTER_KEYS_SETTING}) the key whose id is {needed_kek_id}."
            )
        super().__init__(message)


class DecryptionFailed(SecurityError):
    """A ciphertext is malformed, was altered, or belongs to another record or field."""

    def __init__(self, reason: str, *, record_id: str | None = None, field: str | None = None):
        # Record ids are opaque platform ids and field names come from the catalog: both are
        # safe to name and tell an operator where to look. The value itself never appears.
        self.reason = reason
        self.record_id = record_id
        self.field = field
        where = ""
        if field is not None:
            where += f" field {field!r}"
        if record_id is not None:
            where += f" of record {record_id!r}"
        super().__init__(f"cannot decrypt{where}: {reason}")


class Shredded(DecryptionFailed):
    """A payload sealed for a patient whose salt an erasure deleted: gone for good, by design."""

    def __init__(self, *, record_id: str | None = None, field: str | None = None) -> None:
        super().__init__(
            "the patient was erased: this value was sealed under their destroyed key",
            record_id=record_id,
            field=field,
        )


class InvalidAuditEntry(SecurityError, ValueError):
    """An audit entry breaks the log's shape (too long a column, a string where ids go)."""

    def __init__(self, column: str, reason: str) -> None:
        self.column = column
        super().__init__(f"audit entry {column}: {reason}")


class AuditChainBroken(SecurityError):
    """The audit log cannot be appended to safely; `telecrm audit verify` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"audit log refused the append: {reason}. Run `telecrm audit verify` and restore "
            "the log from backup before recording more PHI access."
        )
