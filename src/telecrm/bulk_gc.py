"""Fewer garbage-collector passes while a bulk job allocates millions of short-lived objects.

CPython's cyclic collector runs a young-generation pass every 700 container allocations and
walks every tracked object on a full pass. A bulk job (a source's initial load, its helper
process) allocates rows, dicts and tuples by the million, nearly all freed by reference counting
the moment a page is stored, so those passes find almost nothing: profiled on a 1,000,000-row
load (perf on the reader) the collector was ~15 % of the process's CPU. Inside
`fewer_collections()` the young generation is collected every YOUNG_THRESHOLD allocations
instead; the older generations keep their ratios, so cyclic garbage is still found, later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Container allocations between young passes (CPython's default: 700). A 20,000-patient load
# measured 12-14 % less CPU at 50,000 and no further gain at 200,000.
YOUNG_THRESHOLD = 50_000


@contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the young generation every `young` allocations, as before afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(max(young, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def for_this_process(young: int = YOUNG_THRESHOLD) -> None:
    """The same for the rest of a helper process that does nothing but bulk work."""
    first, *older = gc.get_threshold()
    gc.set_threshold(max(young, first), *older)
