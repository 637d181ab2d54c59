"""Fast draws from the simulator's one RNG: weighted and uniform picks, Poisson counts.

`random.choices` re-validates its arguments on every call; a journey makes millions of small
draws, so fixed weightings keep their cumulative weights and pick with one bisect.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Sequence
from itertools import accumulate
from typing import Generic, TypeVar

T = TypeVar("T")


class Weighted(Generic[T]):
    """A fixed weighted choice among `items`."""

    __slots__ = ("_cdf", "_total", "items")

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        if len(items) != len(weights) or not items:
            raise ValueError("need one weight per item, and at least one item")
        self.items = tuple(items)
        self._cdf = tuple(accumulate(weights))
        self._total = self._cdf[-1]

    def draw(self, rng: random.Random) -> T:
        return self.items[bisect(self._cdf, rng.random() * self._total)]


def one_of(rng: random.Random, items: Sequence[T]) -> T:
    """A uniform pick (what `rng.choice` does, without its per-call overhead)."""
    return items[int(rng.random() * len(items))]


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: the means here are small (a few per month)."""
    if mean <= 0:
        return 0
    limit, k, prod = math.exp(-mean), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k
