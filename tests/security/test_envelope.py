"""Field encryption: tokens round-trip, are bound to their record and field, and fail loudly."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telecrm.security.envelope import MIN_TOKEN_BYTES, FieldCipher
from telecrm.security.errors import DecryptionFailed, SecurityError, Shredded, UnknownDataKey

OLD_ID = "0123456789abcdef"
NEW_ID = "fedcba9876543210"
CANARY = b"CANARY-jane.doe@example.com"
CIPHER = FieldCipher(OLD_ID, {OLD_ID: bytes(range(32))})


def test_a_field_round_trips():
    token = CIPHER.encrypt(b"+14155552671", record_id="p_1", field="phone")
    assert CIPHER.decrypt(token, record_id="p_1", field="phone") == b"+14155552671"


def test_the_token_names_the_key_and_carries_version_nonce_and_tag():
    token = CIPHER.encrypt(b"abc", record_id="p_1", field="phone")
    assert token[0] == 1
    assert FieldCipher.key_id_of(token) == OLD_ID
    assert len(token) == MIN_TOKEN_BYTES + 3


def test_the_same_value_encrypts_differently_each_time():
    first = CIPHER.encrypt(CANARY, record_id="p_1", field="email")
    second = CIPHER.encrypt(CANARY, record_id="p_1", field="email")
    assert first != second
    assert CANARY not in first


@pytest.mark.parametrize(
    ("record_id", "field"),
    [("p_2", "email"), ("p_1", "phone"), ("p_", "1email"), ("p_1e", "mail")],
)
def test_a_token_moved_to_another_record_or_field_does_not_decrypt(record_id, field):
    token = CIPHER.encrypt(CANARY, record_id="p_1", field="email")
    with pytest.raises(DecryptionFailed) as caught:
        CIPHER.decrypt(token, record_id=record_id, field=field)
    assert caught.value.field == field
    assert caught.value.record_id == record_id


def test_the_record_id_and_field_boundary_is_unambiguous():
    token = CIPHER.encrypt(CANARY, record_id="ab", field="c")
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(token, record_id="a", field="bc")


def test_a_tampered_byte_is_detected():
    token = bytearray(CIPHER.encrypt(CANARY, record_id="p_1", field="email"))
    token[-20] ^= 0x01
    with pytest.raises(DecryptionFailed, match="authentication failed"):
        CIPHER.decrypt(bytes(token), record_id="p_1", field="email")


def test_decryption_errors_never_contain_the_plaintext():
    token = CIPHER.encrypt(CANARY, record_id="p_1", field="email")
    with pytest.raises(DecryptionFailed) as caught:
        CIPHER.decrypt(token, record_id="p_1", field="phone")
    for text in (str(caught.value), repr(caught.value)):
        assert "CANARY" not in text
        assert "jane.doe" not in text
    assert "'phone'" in str(caught.value)
    assert "'p_1'" in str(caught.value)


def test_non_json_plaintext_read_as_json_fails_without_leaking_it():
    token = base64.b64encode(CIPHER.encrypt(CANARY, record_id="p_1", field="notes")).decode()
    with pytest.raises(DecryptionFailed) as caught:
        CIPHER.decrypt_json(token, record_id="p_1", field="notes")
    assert "CANARY" not in str(caught.value) + repr(caught.value)
    assert caught.value.__context__ is None


def test_json_values_round_trip_as_base64_text():
    value = {"given": "Zoë", "dob": "1980-02-29", "allergies": ["penicillin"], "weight_kg": 71.5}
    text = CIPHER.encrypt_json(value, record_id="p_1", field="medical")
    assert isinstance(text, str)
    assert "Zoë" not in text
    assert CIPHER.decrypt_json(text, record_id="p_1", field="medical") == value


@pytest.mark.parametrize("token", [b"", b"\x01" + bytes(10), b"\x02" + bytes(MIN_TOKEN_BYTES)])
def test_malformed_tokens_fail_with_decryption_failed(token):
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(token, record_id="p_1", field="email")


def test_a_token_that_is_not_base64_fails_with_decryption_failed():
    with pytest.raises(DecryptionFailed, match="not base64"):
        CIPHER.decrypt_json("not base64 at all!", record_id="p_1", field="medical")


def test_a_token_under_a_key_the_cipher_lacks_names_that_key():
    newer = FieldCipher(NEW_ID, {NEW_ID: os.urandom(32)})
    token = newer.encrypt(b"x", record_id="p_1", field="email")
    with pytest.raises(UnknownDataKey) as caught:
        CIPHER.decrypt(token, record_id="p_1", field="email")
    assert caught.value.key_id == NEW_ID


def test_a_cipher_with_old_and_new_keys_encrypts_under_the_new_and_reads_both():
    old_key = bytes(range(32))
    both = FieldCipher(NEW_ID, {OLD_ID: old_key, NEW_ID: os.urandom(32)})
    old_token = CIPHER.encrypt(b"before", record_id="p_1", field="email")
    new_token = both.encrypt(b"after", record_id="p_1", field="email")
    assert FieldCipher.key_id_of(new_token) == NEW_ID
    assert both.decrypt(old_token, record_id="p_1", field="email") == b"before"
    assert both.decrypt(new_token, record_id="p_1", field="email") == b"after"


@pytest.mark.parametrize(
    ("active", "keys"),
    [
        (OLD_ID, {NEW_ID: bytes(32)}),
        (OLD_ID, {OLD_ID: bytes(16)}),
        ("short", {"short": bytes(32)}),
    ],
)
def test_a_cipher_refuses_inconsistent_keys(active, keys):
    with pytest.raises(ValueError):
        FieldCipher(active, keys)


@given(plaintext=st.binary(max_size=512), record_id=st.text(), field=st.text())
def test_any_plaintext_record_id_and_field_round_trip(plaintext, record_id, field):
    token = CIPHER.encrypt(plaintext, record_id=record_id, field=field)
    assert CIPHER.decrypt(token, record_id=record_id, field=field) == plaintext


@given(
    plaintext=st.binary(max_size=256),
    record_id=st.text(max_size=40),
    field=st.text(max_size=40),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_makes_decryption_fail(plaintext, record_id, field, position, flip):
    token = bytearray(CIPHER.encrypt(plaintext, record_id=record_id, field=field))
    token[position % len(token)] ^= flip
    with pytest.raises(SecurityError) as caught:
        CIPHER.decrypt(bytes(token), record_id=record_id, field=field)
    assert isinstance(caught.value, DecryptionFailed | UnknownDataKey)


# Format 2: payloads sealed under a key derived from the data key and a patient's salt.
SALT_A, SALT_B = bytes(32), bytes(range(1, 33))


@given(plaintext=st.binary(max_size=256), record_id=st.text(max_size=40))
def test_a_salted_token_opens_only_with_its_salt(plaintext, record_id):
    token = CIPHER.encrypt(plaintext, record_id=record_id, field="data", salt=SALT_A)
    assert token[0] == 2 and FieldCipher.key_id_of(token) == OLD_ID
    assert CIPHER.decrypt(token, record_id=record_id, field="data", salt=SALT_A) == plaintext
    with pytest.raises(DecryptionFailed):  # another patient's salt
        CIPHER.decrypt(token, record_id=record_id, field="data", salt=SALT_B)
    with pytest.raises(Shredded):  # the salt was destroyed: no key opens it
        CIPHER.decrypt(token, record_id=record_id, field="data")


def test_a_salted_token_does_not_open_under_the_plain_data_key():
    token = bytearray(CIPHER.encrypt(CANARY, record_id="evt_1", field="data", salt=SALT_A))
    token[0] = 1  # claim the shared-key format: the derived key is not the data key
    with pytest.raises(DecryptionFailed) as caught:
        CIPHER.decrypt(bytes(token), record_id="evt_1", field="data")
    assert "CANARY" not in str(caught.value)


def test_a_salt_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError):
        CIPHER.encrypt(b"x", record_id="evt_1", field="data", salt=b"short")


def test_salted_tokens_written_before_a_rotation_still_open():
    token = CIPHER.encrypt(CANARY, record_id="evt_1", field="data", salt=SALT_A)
    rotated = FieldCipher(NEW_ID, {OLD_ID: bytes(range(32)), NEW_ID: os.urandom(32)})
    assert rotated.decrypt(token, record_id="evt_1", field="data", salt=SALT_A) == CANARY
    fresh = rotated.encrypt(CANARY, record_id="evt_1", field="data", salt=SALT_A)
    assert FieldCipher.key_id_of(fresh) == NEW_ID
