"""How many SMS segments a body costs: GSM-7 vs UCS-2 (research messaging.md §8).

A message whose every character is in the GSM 03.38 basic table or its extension table is sent
as GSM-7 (extension characters take two septets: ESC + char); any other character puts the
whole message into UCS-2, counted in UTF-16 code units (a non-BMP emoji is two). A single
segment holds 160 septets / 70 units; concatenated segments lose six octets to the User Data
Header, leaving 153 / 67 each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

GSM7_SINGLE = 160  # septets in one un-concatenated segment (§8)
GSM7_MULTI = 153  # septets per segment once a UDH is needed (§8)
UCS2_SINGLE = 70  # UTF-16 units in one segment (§8)
UCS2_MULTI = 67  # UTF-16 units per concatenated segment (§8)

# GSM 03.38 basic character set (3GPP TS 23.038 §6.2.1); ESC (0x1B) itself is not text.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (§8).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class Segments:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def count_segments(text: str) -> Segments:
    """The encoding Twilio would pick for `text`, its length in units, and the segment count.

    An empty body is one segment of nothing (the API refuses it before counting matters).
    """
    encoding: Encoding
    if is_gsm7(text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, multi, encoding = GSM7_SINGLE, GSM7_MULTI, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = UCS2_SINGLE, UCS2_MULTI, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / multi)
    return Segments(encoding=encoding, units=units, segments=segments)
