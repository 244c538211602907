"""The fully-folded layout of one layer: im2col matrix blocks (:class:`SliceAssignment`) on crossbars.

Blocks of one conv group that fit a crossbar are packed block-diagonally, ``per`` groups a crossbar;
larger ones are tiled ``R x C`` (:func:`.plan.fully_folded_count` counts the same crossbars).
"""

from __future__ import annotations

from ..ir.program import Crossbar, SliceAssignment
from .plan import fully_folded_count


def layer_slices(name: str, groups: int, rows: int, cols: int, first: int, xbar_rows: int,
                 xbar_cols: int) -> tuple[list[Crossbar], list[SliceAssignment]]:
    """The crossbars (indices from ``first``) and slices of ``groups`` blocks of ``rows x cols`` weights."""
    R, C = xbar_rows, xbar_cols
    count, per = fully_folded_count(groups, rows, cols, R, C)
    crossbars: list[Crossbar] = []
    slices: list[SliceAssignment] = []
    if per > 1:
        for g in range(groups):
            j, s = divmod(g, per)
            if s == 0:
                crossbars.append(Crossbar(first + len(crossbars), name, R, C))
            slices.append(SliceAssignment(name, first + j, g, 0, rows, 0, cols, s * rows, s * cols))
    else:
        for g in range(groups):
            for r0 in range(0, rows, R):
                for c0 in range(0, cols, C):
                    crossbars.append(Crossbar(first + len(crossbars), name, R, C))
                    slices.append(SliceAssignment(name, first + len(crossbars) - 1, g, r0, min(rows, r0 + R),
                                                  c0, min(cols, c0 + C), 0, 0))
    assert len(crossbars) == count
    return crossbars, slices
