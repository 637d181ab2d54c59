"""The last check before a message leaves for a destination without a BAA: does the rendered
content hold any of this patient's PHI values? The template lint should make this impossible;
this guard makes it certain (a template override, a link built from data, a bug)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from telecrm.domain.fields import FIELDS

MIN_LENGTH = 4  # shorter values ("F", "no") match ordinary words


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def phi_values(values: Mapping[str, Any]) -> list[str]:
    """The patient's PHI values as lower-case text, longest first."""
    found = {
        s.strip().lower()
        for name, value in values.items()
        if name in FIELDS and FIELDS[name].is_phi
        for s in _strings(value)
        if len(s.strip()) >= MIN_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def phi_leaks(values: Mapping[str, Any], texts: Iterable[str]) -> bool:
    """True when any rendered text contains one of the patient's PHI values."""
    needles = phi_values(values)
    if not needles:
        return False
    haystack = "\n".join(texts).lower()
    return any(n in haystack for n in needles)
