"""SEALED_READS is what lets the projection fold score and engagement events without decrypting
the profile: each listed event type must read and change no encrypted field but the ones named.
Checked here against the fold itself, over a profile holding every encrypted field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from telecrm.domain.events import DATA_MODELS
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Thresholds, Transition
from telecrm.domain.profile import SEALED_READS, Profile, step
from tests.domain.event_examples import MINIMAL_DATA, NOW, PATIENT_ID, event

ENCRYPTED = sorted(n for n, f in FIELDS.items() if f.encrypted)


class RecordingValues(dict[str, Any]):
    """A profile's values that remember which encrypted fields the fold looked at."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def _saw(self, key: object) -> None:
        if isinstance(key, str) and key in FIELDS and FIELDS[key].encrypted:
            self.read.add(key)

    def __getitem__(self, key: str) -> Any:
        self._saw(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._saw(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._saw(key)
        return super().__contains__(key)

    def items(self) -> Any:
        self.read.update(k for k in self if FIELDS[k].encrypted)
        return super().items()

    def values(self) -> Any:
        self.read.update(k for k in self if FIELDS[k].encrypted)
        return super().values()

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()


def _registered_profile() -> Profile:
    p = Profile(PATIENT_ID)
    history: list[Transition] = []
    reg = event(
        "patient.registered", NOW - timedelta(days=3), **MINIMAL_DATA[("patient.registered", 1)]
    )
    step(p, reg, Thresholds(), history)
    for name in ENCRYPTED:
        p.values[name] = f"kept:{name}"
    return p


def _variants(type_: str) -> list[dict[str, Any]]:
    data = dict(MINIMAL_DATA[(type_, 1)])
    if type_ == "analytics.scored":
        return [data, {**data, "adherence_pdc": 0.5}, {**data, "adherence_pdc": None}]
    return [data]


@pytest.mark.parametrize("type_", sorted(SEALED_READS))
def test_a_listed_event_touches_no_encrypted_field_but_the_ones_named(type_: str) -> None:
    allowed = SEALED_READS[type_]
    for data in _variants(type_):
        p = _registered_profile()
        before = dict(p.values)
        recording = RecordingValues(p.values)
        p.values = recording
        step(p, event(type_, NOW, **data), Thresholds(), [])
        assert recording.read <= allowed, (type_, recording.read - allowed)
        for name in ENCRYPTED:
            if name not in allowed:
                assert p.values.get(name) == before[name], (type_, name)


def test_every_listed_type_is_an_event_type() -> None:
    assert set(SEALED_READS) <= {t for t, _ in DATA_MODELS}
