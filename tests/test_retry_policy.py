"""The shared retry policy: exponential, capped, and Retry-After wins when it asks for longer."""

from __future__ import annotations

from telecrm.retry_policy import MAX_BACKOFF_SECONDS, backoff_seconds


def test_backoff_doubles_from_half_a_second_and_is_capped() -> None:
    assert [backoff_seconds(a) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_seconds(20) == MAX_BACKOFF_SECONDS


def test_retry_after_wins_only_when_longer_and_only_as_seconds() -> None:
    assert backoff_seconds(0, "7") == 7.0
    assert backoff_seconds(5, "1") == 16.0
    assert backoff_seconds(0, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5  # HTTP-date: use our own


def test_jitter_spreads_retries_between_half_and_all_of_the_backoff_but_never_below_retry_after() -> (
    None
):
    from telecrm.retry_policy import with_jitter

    assert with_jitter(8.0, 0.0) == 4.0
    assert with_jitter(8.0, 0.999) < 8.0
    assert with_jitter(8.0, 0.0, floor=30.0) == 30.0
