"""SMS segment counting: GSM-7 vs UCS-2, single vs concatenated limits (research messaging.md §8)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from telecrm.messaging.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Segments,
    count_segments,
    is_gsm7,
)

basic_text = st.text(alphabet=sorted(GSM7_BASIC), max_size=600)
gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=600)
non_gsm_char = st.characters(codec="utf-8").filter(
    lambda c: c not in GSM7_BASIC and c not in GSM7_EXTENSION
)


def test_plain_ascii_sentence_is_one_gsm7_segment() -> None:
    assert count_segments("Telecrm Health: your order shipped.") == Segments("GSM-7", 35, 1)


def test_160_gsm_chars_fit_one_segment_and_161_need_two() -> None:
    assert count_segments("a" * 160) == Segments("GSM-7", 160, 1)
    assert count_segments("a" * 161) == Segments("GSM-7", 161, 2)
    assert count_segments("a" * 306).segments == 2
    assert count_segments("a" * 307).segments == 3


def test_extension_characters_cost_two_septets() -> None:
    for char in "^{}\\[~]|€\f":
        assert count_segments(char) == Segments("GSM-7", 2, 1)
    assert count_segments("€" * 80).segments == 1
    assert count_segments("€" * 81).segments == 2


def test_one_emoji_turns_the_whole_message_into_ucs2() -> None:
    text = "a" * 69 + "é"  # é is GSM-7; still 70 units
    assert count_segments(text).encoding == "GSM-7"
    with_emoji = "a" * 68 + "🙂"  # non-BMP: two UTF-16 units
    assert count_segments(with_emoji) == Segments("UCS-2", 70, 1)
    assert count_segments("a" * 69 + "🙂") == Segments("UCS-2", 71, 2)


def test_ucs2_limits_are_70_then_67() -> None:
    assert count_segments("ç" * 70) == Segments("UCS-2", 70, 1)  # ç (lower case) is not GSM-7
    assert count_segments("ç" * 71).segments == 2
    assert count_segments("ç" * 134).segments == 2
    assert count_segments("ç" * 135).segments == 3


def test_spanish_accents_outside_gsm7_force_ucs2() -> None:
    assert count_segments("Tu pedido está listo").encoding == "UCS-2"  # á is not in GSM 03.38
    assert count_segments("Tu pedido esta listo").encoding == "GSM-7"


def test_empty_body_is_one_segment_of_nothing() -> None:
    assert count_segments("") == Segments("GSM-7", 0, 1)


@given(basic_text)
def test_basic_gsm_text_counts_one_unit_per_character(text: str) -> None:
    result = count_segments(text)
    assert result.encoding == "GSM-7"
    assert result.units == len(text)


@given(gsm_text)
def test_gsm_segments_follow_160_153(text: str) -> None:
    result = count_segments(text)
    assert is_gsm7(text)
    assert result.units == len(text) + sum(c in GSM7_EXTENSION for c in text)
    expected = 1 if result.units <= 160 else math.ceil(result.units / 153)
    assert result.segments == expected


@given(gsm_text, non_gsm_char, gsm_text)
def test_any_non_gsm_character_makes_everything_ucs2(before: str, odd: str, after: str) -> None:
    text = before + odd + after
    result = count_segments(text)
    assert result.encoding == "UCS-2"
    assert result.units == len(text.encode("utf-16-le")) // 2
    expected = 1 if result.units <= 70 else math.ceil(result.units / 67)
    assert result.segments == expected


@given(st.text(max_size=400), st.text(max_size=400))
def test_appending_text_never_reduces_the_segment_count_within_an_encoding(a: str, b: str) -> None:
    whole, part = count_segments(a + b), count_segments(a)
    if whole.encoding == part.encoding:
        assert whole.segments >= part.segments
    assert whole.units >= part.units or whole.encoding != part.encoding
