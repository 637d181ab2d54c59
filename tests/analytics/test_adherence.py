"""PDC (PQA): hand-computed cases, and properties of the reference walk and the numpy version."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.analytics.adherence import (
    TOO_FEW_FILLS,
    TOO_SHORT,
    Fill,
    MeasurementPeriod,
    day_number,
    pdc_by_medication,
    pdc_of,
    pdc_table,
    pseudonyms,
)

YEAR = MeasurementPeriod.calendar_year(2018)


def fill(month: int, day: int, supply: int = 30, drug: str = "drug a") -> Fill:
    return Fill(date(2018, month, day), supply, drug)


def test_pqa_case_an_early_refill_starts_the_day_after_the_supply_runs_out() -> None:
    # PQA: a 90-day fill on 09-25 while supply ran to 10-02 counts from 10-03 to 12-31.
    fills = [fill(7, 5, 90), fill(9, 25, 90)]  # 07-05 + 90 days runs to 10-02
    result = pdc_of(fills, YEAR)
    assert result.index_date == date(2018, 7, 5)
    assert result.days_in_period == (date(2018, 12, 31) - date(2018, 7, 5)).days + 1 == 180
    assert result.days_covered == 90 + 90  # 07-05..10-02, then 10-03..12-31 (cut at the end)
    assert result.pdc == 1.0 and result.adherent


def test_a_gap_between_fills_is_uncovered() -> None:
    result = pdc_of([fill(1, 1), fill(3, 2), fill(5, 1)], YEAR)
    # 01-01..01-30, 03-02..03-31, 05-01..05-30: 90 of 365 days
    assert (result.days_covered, result.days_in_period) == (90, 365)
    assert result.adherent is False


def test_supply_past_the_period_end_is_cut() -> None:
    result = pdc_of([fill(9, 1, 90), fill(11, 30, 90)], YEAR)
    assert result.days_in_period == 122  # 09-01..12-31
    assert result.days_covered == 90 + 32  # 09-01..11-29, then 11-30..12-31 only


def test_fewer_than_two_fills_on_distinct_dates_are_excluded() -> None:
    one = pdc_of([fill(1, 1)], YEAR)
    same_day = pdc_of([fill(1, 1), fill(1, 1)], YEAR)
    assert one.excluded == same_day.excluded == TOO_FEW_FILLS
    assert one.pdc is None and same_day.adherent is None


def test_a_first_fill_within_91_days_of_the_end_is_excluded() -> None:
    assert pdc_of([fill(10, 15), fill(11, 14)], YEAR).excluded == TOO_SHORT  # 77 days before


def test_exactly_80_percent_is_adherent_and_one_day_less_is_not() -> None:
    period = MeasurementPeriod(date(2018, 1, 1), date(2018, 4, 10))  # 100 days
    at_80 = pdc_of([fill(1, 1, 40), fill(2, 20, 40)], period)  # 40 + 40 days covered
    assert (at_80.days_covered, at_80.days_in_period, at_80.adherent) == (80, 100, True)
    at_79 = pdc_of([fill(1, 1, 40), fill(2, 20, 39)], period)
    assert (at_79.days_covered, at_79.adherent) == (79, False)


def test_fills_outside_the_period_do_not_count() -> None:
    fills = [Fill(date(2017, 12, 1), 90, "drug a"), fill(3, 1), fill(4, 1)]
    assert pdc_of(fills, YEAR).index_date == date(2018, 3, 1)


def test_an_earlier_fill_moves_the_index_date_and_can_lower_pdc() -> None:
    # Why "adding a fill never lowers PDC" holds only for fills on or after the index date.
    later = [fill(6, 1), fill(7, 1)]
    period = MeasurementPeriod(date(2018, 1, 1), date(2018, 9, 30))
    before = pdc_of(later, period).pdc
    after = pdc_of([fill(1, 1), *later], period).pdc
    assert before is not None and after is not None and after < before


def test_each_medication_is_measured_on_its_own_with_a_pseudonym() -> None:
    fills = [fill(1, 1, drug="b"), fill(1, 5, drug="a"), fill(2, 1, drug="b")]
    results = pdc_by_medication(fills, YEAR)
    assert [r.medication for r in results] == ["b", "a"]
    assert results[1].excluded == TOO_FEW_FILLS
    assert pseudonyms(results) == ["medication 1", "medication 2"]


def test_the_numpy_table_matches_the_walk_on_a_hand_case() -> None:
    fills = [fill(1, 1), fill(1, 25), fill(9, 25, 90)]
    table = pdc_table(
        1,
        np.zeros(3, dtype=np.int64),
        np.array([day_number(f.filled_on) for f in fills]),
        np.array([30, 30, 90]),
        YEAR,
    )
    assert table.result(0, "drug a") == pdc_of(fills, YEAR)
    assert int(table.covered[0]) == 150  # 01-01..01-30, 01-31..03-01, 09-25..12-23


# -- properties ---------------------------------------------------------------------------------

PERIOD = MeasurementPeriod(date(2018, 1, 1), date(2018, 12, 31))
fills_st = st.lists(
    st.builds(
        lambda offset, supply: Fill(date(2017, 12, 1) + timedelta(days=offset), supply, "d"),
        st.integers(0, 420),
        st.integers(1, 120),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(fills_st)
def test_pdc_is_a_share_between_0_and_1(fills: list[Fill]) -> None:
    result = pdc_of(fills, PERIOD)
    assert result.pdc is None or 0.0 <= result.pdc <= 1.0


@settings(max_examples=300, deadline=None)
@given(fills_st)
def test_shifting_overlaps_never_covers_fewer_days_than_merging_them(fills: list[Fill]) -> None:
    shifted, merged = pdc_of(fills, PERIOD), pdc_of(fills, PERIOD, shift_overlaps=False)
    assert shifted.days_covered >= merged.days_covered


@settings(max_examples=300, deadline=None)
@given(fills_st, st.integers(0, 364), st.integers(1, 120))
def test_adding_a_fill_on_or_after_the_index_date_never_lowers_pdc(
    fills: list[Fill], offset: int, supply: int
) -> None:
    before = pdc_of(fills, PERIOD)
    if before.pdc is None or before.index_date is None:
        return
    extra = Fill(before.index_date + timedelta(days=offset % 300), supply, "d")
    after = pdc_of([*fills, extra], PERIOD)
    assert after.pdc is not None and after.pdc >= before.pdc


@settings(max_examples=200, deadline=None)
@given(st.lists(fills_st, min_size=1, max_size=5))
def test_the_numpy_table_equals_the_reference_walk(groups: list[list[Fill]]) -> None:
    g = [i for i, fills in enumerate(groups) for _ in fills]
    days = [day_number(f.filled_on) for fills in groups for f in fills]
    supply = [f.days_supply for fills in groups for f in fills]
    table = pdc_table(
        len(groups),
        np.array(g, dtype=np.int64),
        np.array(days, dtype=np.int64),
        np.array(supply, dtype=np.int64),
        PERIOD,
    )
    for i, fills in enumerate(groups):
        expected = pdc_of(fills, PERIOD) if fills else None
        if expected is None:
            assert not table.eligible[i]
            continue
        assert table.result(i, "d") == expected
