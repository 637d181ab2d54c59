"""Bulk jobs collect the young generation less often, and leave the collector as they found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from telecrm.bulk_gc import YOUNG_THRESHOLD, fewer_collections, no_cyclic_collection


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_inside_the_young_generation_waits_longer_and_the_older_keep_their_ratios() -> None:
    gc.set_threshold(700, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_come_back_after_an_error() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a page failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_set_by_the_user_is_kept() -> None:
    gc.set_threshold(200_000, 10, 10)
    with fewer_collections():
        assert gc.get_threshold()[0] == 200_000
    assert gc.get_threshold() == (200_000, 10, 10)


def test_no_cyclic_collection_turns_the_collector_off_and_back_on() -> None:
    assert gc.isenabled()
    with no_cyclic_collection():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # what lived before is left out of later passes
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_no_cyclic_collection_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with no_cyclic_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
