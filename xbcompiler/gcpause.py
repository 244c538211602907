"""Fewer passes of Python's cyclic garbage collector while a compile or a load builds its records.

A ResNet-50 compiled semi-folded holds about 130,000 crossbars and as many placement blocks; with the
collector's default first threshold (700 new container objects) it ran often enough over that growing
heap to take a third of the compile time. :func:`fewer_collections` raises the first threshold for the
duration of a ``with`` block and restores the caller's thresholds after it (reference counting still
frees acyclic garbage at once; cyclic garbage waits for the next, rarer pass). It is what mypy does
for the same reason.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 100_000
"""New container objects between two collections of the youngest generation inside the block."""


@contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Run the block with the youngest generation's threshold at least ``young``; restore it after."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], young), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
