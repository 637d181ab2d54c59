"""Small-cell suppression: counts under MIN_CELL are never shown, so no one can be singled out."""

from __future__ import annotations

# HHS de-identification guidance and CMS cell-size practice suppress counts below a small
# threshold; 5 is the common floor for aggregate health reporting (brief: "suppress cells < 5").
MIN_CELL = 5
SUPPRESSED = "<5"


def shown_count(n: int) -> str:
    """A count as it may be printed: `<5` when small, else with thousands separators."""
    return SUPPRESSED if 0 < n < MIN_CELL else f"{n:,}"


def shown_share(numerator: int, denominator: int) -> str:
    """A share, hidden when its denominator or numerator is a small cell (the other is derivable)."""
    if denominator == 0:
        return "-"
    if denominator < MIN_CELL or 0 < numerator < MIN_CELL:
        return SUPPRESSED
    return f"{numerator / denominator:.1%}"
