"""``recombine-pruned-columns``: re-pack the surviving output channels of each input group (background §1.3, 1.8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.prune.layout import recombine, relayout


@dataclass(frozen=True)
class RecombinePrunedColumnsPass(Pass):
    """After column-grain pruning, a block-Toeplitz layer's all-zero slabs ``(o, a)`` leave their crossbars.

    For every input group the surviving output channels are packed ``Kout`` per crossbar in their
    original order, so a crossbar holds an arbitrary set of output channels (the netlist gives its
    column -> output-channel table) and output ``o`` adds the partial sums of only the input groups
    it still uses (variable fan-in). A layer whose conv groups share crossbars (block-diagonal packing,
    e.g. depthwise) drops its all-zero conv groups and re-packs the others. Exact: only zero weights
    leave the crossbars. Layers without a zero slab (or zero group) and fully-folded layers are left as
    they are.
    """

    name: ClassVar[str] = "recombine-pruned-columns"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"recombined"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        return relayout(self.name, recombine, program, ctx)
