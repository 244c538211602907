"""``map-fully-folded``: tile each im2col matrix into crossbars, one window per cycle (background §2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import Crossbar, SliceAssignment, XbarProgram
from xbcompiler.mapping.plan import ArraySpec, fully_folded, fully_folded_count
from xbcompiler.mapping.shape import shape_of
from xbcompiler.pipeline import Pass, PassContext


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
            plans[m.name] = fully_folded(shape_of(m), ArraySpec.of(ctx.target), m.name)
            assert plans[m.name].crossbars == count and plans[m.name].cycles == m.cycles
        return program.replace(crossbars=tuple(crossbars), slices=tuple(slices), plans=plans, placed=False)
