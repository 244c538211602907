"""``map-fully-folded``: tile each im2col matrix into crossbars, one window per cycle (SPEC 2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import ClassVar

from xbcompiler.ir.program import Crossbar, MappingPlan, SliceAssignment, XbarProgram
from xbcompiler.pipeline import Pass, PassContext


def fully_folded_count(groups: int, rows: int, cols: int, xbar_rows: int, xbar_cols: int) -> tuple[int, int]:
    """(crossbars, groups per crossbar) for ``groups`` blocks of ``rows x cols`` on ``xbar_rows x xbar_cols``.

    Blocks that fit are packed block-diagonally, ``min(R // rows, C // cols)`` per crossbar; larger
    blocks are tiled alone: ``ceil(rows / R) * ceil(cols / C)`` crossbars each.
    """
    if groups > 1 and rows <= xbar_rows and cols <= xbar_cols:
        per = min(xbar_rows // rows, xbar_cols // cols)
        return ceil(groups / per), per
    return groups * ceil(rows / xbar_rows) * ceil(cols / xbar_cols), 1


@dataclass(frozen=True)
class MapFullyFoldedPass(Pass):
    """Each logical column takes ``m_c`` adjacent physical columns of one crossbar and is never split."""

    name: ClassVar[str] = "map-fully-folded"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"xbar"})
    establishes: ClassVar[frozenset[str]] = frozenset({"mapped"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        R, C = ctx.target.crossbar.rows, ctx.target.logical_cols
        crossbars: list[Crossbar] = []
        slices: list[SliceAssignment] = []
        plans = {}
        for node in program.nodes:
            if node.op != "xbar":
                continue
            m = program.matrices[node.target]
            groups, K, N = m.weight.shape
            count, per = fully_folded_count(groups, K, N, R, C)
            first = len(crossbars)
            if per > 1:
                for g in range(groups):
                    j, s = divmod(g, per)
                    if s == 0:
                        crossbars.append(Crossbar(len(crossbars), m.name, R, C))
                    slices.append(SliceAssignment(m.name, first + j, g, 0, K, 0, N, s * K, s * N))
            else:
                for g in range(groups):
                    for r0 in range(0, K, R):
                        for c0 in range(0, N, C):
                            crossbars.append(Crossbar(len(crossbars), m.name, R, C))
                            slices.append(SliceAssignment(m.name, len(crossbars) - 1, g, r0, min(K, r0 + R),
                                                          c0, min(N, c0 + C), 0, 0))
            assert len(crossbars) - first == count
            plans[m.name] = MappingPlan(m.name, "fully-folded", count, m.cycles, ceil(K / R), ceil(N / C), per)
        return program.replace(crossbars=tuple(crossbars), slices=tuple(slices), plans=plans, placed=False)
