"""``map-fully-folded``: tile each im2col matrix into crossbars, one window per cycle (background §2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import Crossbar, SliceAssignment, XbarProgram
from xbcompiler.mapping.plan import ArraySpec, fully_folded
from xbcompiler.mapping.shape import shape_of
from xbcompiler.mapping.slices import layer_slices
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
            xs, ss = layer_slices(m.name, groups, K, N, len(crossbars), R, C)
            crossbars += xs
            slices += ss
            plans[m.name] = fully_folded(shape_of(m), ArraySpec.of(ctx.target), m.name)
            assert plans[m.name].crossbars == len(xs) and plans[m.name].cycles == m.cycles
        return program.replace(crossbars=tuple(crossbars), slices=tuple(slices), plans=plans, placed=False)
