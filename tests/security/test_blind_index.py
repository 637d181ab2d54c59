"""Blind indexes: equal normalised values meet, different columns or keys never do."""

from __future__ import annotations

import re

import pytest

from telecrm.security.blind_index import BlindIndex

KEY = bytes(range(32))
INDEX = BlindIndex(KEY)


def test_the_same_normalised_email_always_gives_the_same_index():
    assert INDEX.email("jane.doe@example.com") == BlindIndex(KEY).email("jane.doe@example.com")


def test_an_index_is_32_hex_characters():
    assert re.fullmatch(r"[0-9a-f]{32}", INDEX.phone("+14155552671"))


def test_different_values_give_different_indexes():
    assert INDEX.phone("+14155552671") != INDEX.phone("+14155552672")


def test_the_same_value_under_another_label_gives_another_index():
    value = "+14155552671"
    assert INDEX.phone(value) != INDEX.of("email", value)
    assert INDEX.of("sms_from", value) != INDEX.phone(value)


def test_email_and_phone_are_the_email_and_phone_labels():
    assert INDEX.email("a@example.com") == INDEX.of("email", "a@example.com")
    assert INDEX.phone("+14155552671") == INDEX.of("phone", "+14155552671")


def test_another_key_gives_another_index():
    other = BlindIndex(bytes(reversed(range(32))))
    assert other.email("jane.doe@example.com") != INDEX.email("jane.doe@example.com")


def test_the_index_does_not_contain_the_value():
    assert "4155552671" not in INDEX.phone("+14155552671")


def test_an_empty_value_is_refused_rather_than_matching_every_other_empty():
    with pytest.raises(ValueError):
        INDEX.email("")


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        BlindIndex(b"too short")


def test_the_repr_hides_the_key():
    assert KEY.hex() not in repr(INDEX)
