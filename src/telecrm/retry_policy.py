"""How telecrm retries an HTTP peer: which answers are worth retrying and how long to wait.

Shared by every client telecrm runs against someone else's API (the webhook sender, the platform
puller, and the CRM connectors next), so they all back off the same way.
"""

from __future__ import annotations

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0  # a peer that is down for longer is better retried by the next run
FIRST_BACKOFF_SECONDS = 0.5


def backoff_seconds(attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff for the `attempt`-th retry (0-based); a Retry-After in seconds wins
    when it asks for longer."""
    wait = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2**attempt)
    if retry_after is not None and retry_after.strip().isdigit():
        wait = max(wait, float(retry_after))
    return wait


def with_jitter(seconds: float, draw: float, *, floor: float = 0.0) -> float:
    """Spread retries of many workers ("equal jitter"): between half and all of `seconds`, never
    below `floor` (a Retry-After the peer asked for). `draw` is a random number in [0, 1)."""
    return max(floor, seconds * (0.5 + 0.5 * draw))
