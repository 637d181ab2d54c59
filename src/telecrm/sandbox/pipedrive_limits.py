"""The Pipedrive sandbox's rate limits: a daily token budget, 2-second bursts, POST/PUT per day.

Pipedrive charges every request tokens from the company's daily budget and limits each user's
requests per 2-second window, search more tightly (docs/research crm-apis.md §3.3). Requests it
refuses cost nothing. Every answer carries `x-ratelimit-limit/-remaining/-reset` for the window
the request fell in, and api_token writes carry `x-daily-requests-left`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

DAILY_TOKEN_BUDGET = 30_000  # 30,000 base tokens x plan multiplier 1 (Lite) x 1 seat (§3.3)
BURST_WINDOW_S = 2.0  # burst limits are per 2-second window (§3.3)
BURST_API_TOKEN = 20  # Essential/Lite api_token: 20 per 2 s (§3.3; new burst table UNCONFIRMED)
BURST_OAUTH = 80  # Essential OAuth access token: 80 per 2 s (§3.3; UNCONFIRMED under tokens)
BURST_SEARCH = 10  # Search API, all plans: 10 per 2 s (§3.3)
DAILY_WRITES_API_TOKEN = 10_000  # POST/PUT per user per UTC day, api_token only (§3.3)
SECONDS_PER_DAY = 86_400  # budgets reset at the start of the next (UTC) day (§3.3)
# Token costs: the third-party example table of §3.3, UNCONFIRMED per endpoint. Pipedrive says
# v2 costs less than v1; the sandbox charges both at these (v1) prices, so it errs on the dear side.
COST_GET_ONE = 2
COST_GET_LIST = 20
COST_WRITE = 10  # create / update
COST_DELETE = 10  # not in §3.3's table: charged like a write (UNCONFIRMED)
COST_SEARCH = 40


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused for the limits, and when to come back."""

    reason: str  # "burst" | "search_burst" | "daily_tokens" | "daily_writes"
    retry_after: int


class CompanyLimits:
    """Counters for one company; `who` is the credential kind ("api_token" or "oauth")."""

    def __init__(
        self,
        daily_tokens: int,
        burst: dict[str, int],
        search_burst: int,
        window_seconds: float,
        daily_writes: int,
    ) -> None:
        self.daily_tokens, self.burst, self.search_burst = daily_tokens, burst, search_burst
        self.window, self.daily_writes = window_seconds, daily_writes
        self.day = -1
        self.tokens_spent = 0
        self.writes: dict[str, int] = {}
        self.hits: dict[str, deque[float]] = {}

    def _roll(self, now: float) -> None:
        day = int(now // SECONDS_PER_DAY)
        if day != self.day:
            self.day, self.tokens_spent, self.writes = day, 0, {}
        for hits in self.hits.values():
            while hits and hits[0] <= now - self.window:
                hits.popleft()

    def _bucket(self, who: str, search: bool) -> tuple[str, int]:
        return ("search", self.search_burst) if search else (who, self.burst[who])

    def admit(
        self, now: float, who: str, cost: int, *, search: bool, write: bool
    ) -> Refusal | None:
        """Spend `cost` tokens and one burst slot, or say why not (and spend nothing)."""
        self._roll(now)
        until_midnight = math.ceil(SECONDS_PER_DAY - now % SECONDS_PER_DAY)
        if self.tokens_spent + cost > self.daily_tokens:
            return Refusal("daily_tokens", until_midnight)
        if write and who == "api_token" and self.writes.get(who, 0) >= self.daily_writes:
            return Refusal("daily_writes", until_midnight)
        name, limit = self._bucket(who, search)
        hits = self.hits.setdefault(name, deque())
        if len(hits) >= limit:
            return Refusal("search_burst" if search else "burst", self._reset(now, hits))
        hits.append(now)
        self.tokens_spent += cost
        if write:
            self.writes[who] = self.writes.get(who, 0) + 1
        return None

    def _reset(self, now: float, hits: deque[float]) -> int:
        """Whole seconds until the oldest request leaves the window (at least 1)."""
        return max(1, math.ceil(hits[0] + self.window - now)) if hits else math.ceil(self.window)

    def headers(self, now: float, who: str, *, search: bool, write: bool) -> dict[str, str]:
        self._roll(now)
        name, limit = self._bucket(who, search)
        hits = self.hits.setdefault(name, deque())
        out = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - len(hits))),
            "x-ratelimit-reset": str(self._reset(now, hits)),
        }
        if write and who == "api_token":
            out["x-daily-requests-left"] = str(max(0, self.daily_writes - self.writes.get(who, 0)))
        return out

    @property
    def tokens_left(self) -> int:
        return max(0, self.daily_tokens - self.tokens_spent)
