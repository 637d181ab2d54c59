"""The keyring: master keys from settings, data keys wrapped in the database, and rotation."""

from __future__ import annotations

import base64
import re
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select, update

from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.security.envelope import FieldCipher
from telecrm.security.errors import (
    MasterKeyInvalid,
    MasterKeyMissing,
    UnknownDataKey,
    UnwrapFailed,
)
from telecrm.security.keyring import (
    Keyring,
    generate_master_key,
    kek_id,
    list_data_keys,
    load_master_keys,
    parse_master_key,
    rotate_keys,
)
from telecrm.security.tables import data_keys

OLD = bytes(range(32))
NEW = bytes(range(100, 132))


@pytest.fixture
def now_us(clock: FrozenClock) -> int:
    return to_micros(clock.now())


def _open(engine: Engine, master: bytes, previous: tuple[bytes, ...] = (), *, now_us: int = 1):
    with engine.begin() as conn:
        return Keyring.open(conn, master, previous, now_us=now_us)


# --- master keys from settings ----------------------------------------------------------------


def test_a_generated_master_key_parses_back_to_32_bytes():
    text = generate_master_key()
    assert len(parse_master_key(text)) == 32
    assert generate_master_key() != text


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="),
    ],
)
def test_standard_urlsafe_and_unpadded_base64_are_accepted(encode):
    raw = bytes([0xFB, 0xFF] * 16)  # bytes whose base64 uses + / (or - _)
    assert parse_master_key(" " + encode(raw).decode() + "\n") == raw


@pytest.mark.parametrize(
    "value",
    ["not base64 at all!!", base64.b64encode(bytes(16)).decode(), "QUJD" * 20],
)
def test_a_bad_master_key_is_refused_without_repeating_it(value):
    with pytest.raises(MasterKeyInvalid) as caught:
        parse_master_key(value)
    assert value.strip() not in str(caught.value)
    assert "TELECRM_MASTER_KEY" in str(caught.value)


def test_a_missing_master_key_says_how_to_make_one():
    with pytest.raises(MasterKeyMissing) as caught:
        load_master_keys(None)
    assert "TELECRM_MASTER_KEY" in str(caught.value)
    assert "telecrm keys generate" in str(caught.value)


def test_a_bad_previous_master_key_is_named_by_its_position():
    with pytest.raises(MasterKeyInvalid, match=r"TELECRM_PREVIOUS_MASTER_KEYS \(entry 2\)"):
        load_master_keys(generate_master_key(), [generate_master_key(), "nope"])


def test_a_kek_id_is_a_stable_16_hex_fingerprint_that_reveals_nothing_of_the_key():
    assert re.fullmatch(r"[0-9a-f]{16}", kek_id(OLD))
    assert kek_id(OLD) == kek_id(bytes(OLD))
    assert kek_id(OLD) != kek_id(NEW)
    assert kek_id(OLD) not in OLD.hex()


# --- opening ------------------------------------------------------------------------------------


def test_opening_an_empty_keyring_creates_one_active_data_key_and_one_index_key(engine, now_us):
    keyring = _open(engine, OLD, now_us=now_us)
    with engine.connect() as conn:
        keys = list_data_keys(conn)
    assert sorted((k["purpose"], k["active"]) for k in keys) == [("data", True), ("index", True)]
    assert {k["kek_id"] for k in keys} == {kek_id(OLD)}
    assert {k["created_us"] for k in keys} == {now_us}
    assert keyring.active_data_key_id in {k["key_id"] for k in keys}


def test_reopening_reuses_the_same_keys(engine):
    first = _open(engine, OLD)
    token = first.cipher().encrypt(b"x", record_id="p_1", field="email")
    second = _open(engine, OLD)
    assert second.active_data_key_id == first.active_data_key_id
    assert second.active_index_key_id == first.active_index_key_id
    assert second.cipher().decrypt(token, record_id="p_1", field="email") == b"x"
    assert second.blind_index().email("a@example.com") == first.blind_index().email("a@example.com")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(data_keys)).scalar() == 2


def test_the_table_holds_keys_wrapped_under_the_master_key_never_the_keys_themselves(engine):
    keyring = _open(engine, OLD)
    token = keyring.cipher().encrypt(b"secret", record_id="p_1", field="email")
    with engine.connect() as conn:
        row = conn.execute(
            select(data_keys).where(data_keys.c.key_id == keyring.active_data_key_id)
        ).one()
    # The stored format, pinned: version 1 | nonce | AES-GCM(key), AAD naming the row.
    wrapped = bytes(row.wrapped)
    aad = b"telecrm/data-key/v1\x00" + row.key_id.encode() + b"\x00data"
    raw = AESGCM(OLD).decrypt(wrapped[1:13], wrapped[13:], aad)
    assert wrapped[0] == 1
    assert raw not in wrapped
    assert OLD not in wrapped
    alone = FieldCipher(row.key_id, {row.key_id: raw})
    assert alone.decrypt(token, record_id="p_1", field="email") == b"secret"


def test_opening_with_the_wrong_master_key_names_the_key_that_is_needed(engine):
    _open(engine, OLD)
    with pytest.raises(UnwrapFailed) as caught:
        _open(engine, NEW)
    assert caught.value.needed_kek_id == kek_id(OLD)
    assert kek_id(OLD) in str(caught.value)
    assert kek_id(NEW) in str(caught.value)
    assert base64.b64encode(NEW).decode() not in str(caught.value)


def test_an_altered_wrapped_key_is_reported_as_altered(engine):
    keyring = _open(engine, OLD)
    with engine.begin() as conn:
        conn.execute(
            update(data_keys)
            .where(data_keys.c.key_id == keyring.active_data_key_id)
            .values(wrapped=b"\x01" + bytes(60))
        )
    with pytest.raises(UnwrapFailed, match="altered"):
        _open(engine, OLD)


def test_two_processes_opening_an_empty_keyring_at_once_share_one_key_per_purpose(engine):
    opened: list[Keyring] = []

    def second_process() -> None:
        with engine.begin() as conn:
            opened.append(Keyring.open(conn, OLD, now_us=2))

    with engine.begin() as conn:
        first = Keyring.open(conn, OLD, now_us=1)
        # The second opener starts while the first has created its keys but not committed.
        other = threading.Thread(target=second_process)
        other.start()
    other.join(timeout=60)
    assert not other.is_alive()
    assert opened[0].active_data_key_id == first.active_data_key_id
    assert opened[0].active_index_key_id == first.active_index_key_id
    with engine.connect() as conn:
        assert len(list_data_keys(conn)) == 2


# --- rotation -----------------------------------------------------------------------------------


def test_data_encrypted_before_a_master_key_rotation_still_decrypts_after(engine, now_us):
    before = _open(engine, OLD).cipher()
    token = before.encrypt(b"before", record_id="p_1", field="email")

    with engine.begin() as conn:
        report = rotate_keys(conn, NEW, [OLD], now_us=now_us + 1)
    assert report.rewrapped == 2
    assert report.kek_id == kek_id(NEW)
    assert report.new_data_key_id not in (None, before.active_key_id)

    after = _open(engine, NEW)  # the old master key is no longer needed
    cipher = after.cipher()
    assert after.active_data_key_id == report.new_data_key_id
    assert cipher.decrypt(token, record_id="p_1", field="email") == b"before"
    fresh = cipher.encrypt(b"after", record_id="p_1", field="email")
    assert FieldCipher.key_id_of(fresh) == report.new_data_key_id
    with engine.connect() as conn:
        keys = list_data_keys(conn)
    assert {k["kek_id"] for k in keys} == {kek_id(NEW)}
    assert {k["rewrapped_us"] for k in keys if k["key_id"] != report.new_data_key_id} == {
        now_us + 1
    }
    assert [k["key_id"] for k in keys if k["purpose"] == "data" and k["active"]] == [
        report.new_data_key_id
    ]


def test_after_rotation_only_the_new_master_key_opens_the_keyring(engine):
    _open(engine, OLD)
    with engine.begin() as conn:
        rotate_keys(conn, NEW, [OLD], now_us=2)
    with pytest.raises(UnwrapFailed) as caught:
        _open(engine, OLD)
    assert caught.value.needed_kek_id == kek_id(NEW)


def test_rotation_without_the_previous_master_key_fails_and_changes_nothing(engine):
    _open(engine, OLD)
    with engine.connect() as conn:
        before = list_data_keys(conn)
    with pytest.raises(UnwrapFailed) as caught, engine.begin() as conn:
        rotate_keys(conn, NEW, now_us=2)
    assert caught.value.needed_kek_id == kek_id(OLD)
    with engine.connect() as conn:
        assert list_data_keys(conn) == before


def test_a_rewrap_only_rotation_keeps_the_active_data_key(engine):
    first = _open(engine, OLD)
    with engine.begin() as conn:
        report = rotate_keys(conn, NEW, [OLD], now_us=2, new_data_key=False)
    assert report.new_data_key_id is None
    assert _open(engine, NEW).active_data_key_id == first.active_data_key_id


def test_rotating_twice_under_the_same_master_key_rewraps_nothing(engine):
    _open(engine, OLD)
    with engine.begin() as conn:
        first = rotate_keys(conn, OLD, now_us=2)
    with engine.begin() as conn:
        second = rotate_keys(conn, OLD, now_us=3)
    assert (first.rewrapped, second.rewrapped) == (0, 0)
    assert first.new_data_key_id != second.new_data_key_id
    assert _open(engine, OLD).active_data_key_id == second.new_data_key_id


def test_a_running_keyring_picks_up_another_process_rotation_on_refresh(engine):
    running = _open(engine, NEW, (OLD,))
    old_token = running.cipher().encrypt(b"old", record_id="p_1", field="email")
    with engine.begin() as conn:
        report = rotate_keys(conn, NEW, [OLD], now_us=2)

    # Until it refreshes, the running process keeps encrypting under the old key: still
    # readable by everyone, so nothing breaks in between.
    unrefreshed = running.cipher().encrypt(b"mid", record_id="p_1", field="email")
    assert _open(engine, NEW).cipher().decrypt(unrefreshed, record_id="p_1", field="email")

    with engine.connect() as conn:
        running.refresh(conn)
    assert running.active_data_key_id == report.new_data_key_id
    cipher = running.cipher()
    assert cipher.decrypt(old_token, record_id="p_1", field="email") == b"old"
    new_token = cipher.encrypt(b"new", record_id="p_1", field="email")
    assert FieldCipher.key_id_of(new_token) == report.new_data_key_id


def test_a_keyring_that_has_not_refreshed_names_the_unknown_new_key(engine):
    stale = _open(engine, OLD)
    with engine.begin() as conn:
        report = rotate_keys(conn, OLD, now_us=2)
    token = _open(engine, OLD).cipher().encrypt(b"x", record_id="p_1", field="email")
    with pytest.raises(UnknownDataKey) as caught:
        stale.cipher().decrypt(token, record_id="p_1", field="email")
    assert caught.value.key_id == report.new_data_key_id


def test_rotating_an_empty_keyring_creates_its_first_keys(engine):
    with engine.begin() as conn:
        report = rotate_keys(conn, OLD, now_us=5)
    assert report.rewrapped == 0
    assert _open(engine, OLD).active_data_key_id == report.new_data_key_id
