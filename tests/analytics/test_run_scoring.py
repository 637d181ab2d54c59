"""The run rounds every patient's numbers at once with numpy: it must store exactly what
Python's `round` (the CRM-facing rounding) gives, halves and near-halves included."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.analytics.run_inputs import SCORE_FIELDS
from telecrm.analytics.run_scoring import DIGITS, changed_rows, rounded, shown

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e7, max_value=1e7),
    # halves of the last kept digit, and their float neighbours: where rounding methods differ
    st.builds(
        lambda k, d, step: float(np.nextafter((k + 0.5) / 10**d, math.inf * step)),
        st.integers(-(10**6), 10**6),
        st.sampled_from([1, 2, 3]),
        st.sampled_from([-1, 0, 1]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(NUMBERS, min_size=5, max_size=5), min_size=1, max_size=40))
def test_shown_is_pythons_rounding_of_every_number(rows: list[list[float]]) -> None:
    raw = np.asarray(rows, dtype=np.float64)
    got = shown(raw)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            want = rounded(value, SCORE_FIELDS[j])
            if want is None:
                assert math.isnan(got[i, j])
            else:
                assert got[i, j] == want and repr(float(got[i, j])) == repr(want)


def test_the_known_halves_round_as_python_does() -> None:
    # 2.675 is stored as 2.67499999...: Python gives 2.67, a naive x*100 rounding 2.68
    raw = np.array([[0.05, 0.15, 2.0675, 2.675, 0.0005]])
    assert shown(raw).tolist() == [
        [round(v, DIGITS[n]) for v, n in zip(raw[0].tolist(), SCORE_FIELDS, strict=True)]
    ]


def test_only_rows_whose_shown_numbers_moved_are_changed() -> None:
    held = np.array([[1.0, np.nan, 0.5, 2.0, np.nan], [1.0, 2.0, np.nan, 2.0, 0.5]])
    now = np.array([[1.0, np.nan, 0.5, 2.0, np.nan], [1.0, 2.0, 0.1, 2.0, 0.5]])
    assert changed_rows(now, held).tolist() == [1]
    now[0, 1] = 3.0  # an empty score that gets a value is a change too
    assert changed_rows(now, held).tolist() == [0, 1]
