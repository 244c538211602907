"""``compact-pruned-rows``: pack the surviving im2col rows of each column tile (CRIMP, background §3.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.prune.layout import compact, relayout


@dataclass(frozen=True)
class CompactPrunedRowsPass(Pass):
    """After kernel-group or crossbar (tile) pruning, a fully-folded layer's all-zero rows leave its crossbars.

    In each column tile the rows that still hold a nonzero weight are packed ``R`` per crossbar; each
    crossbar's input is a static gather of those rows (the netlist's row -> input-row table), a tile
    left without rows disappears, and each output adds only the partial sums of its tile's remaining
    crossbars (the pruned adder tree). Exact: only zero weights leave the crossbars. Grouped layers
    and layers without an all-zero row are left as they are.
    """

    name: ClassVar[str] = "compact-pruned-rows"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"compacted"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        return relayout(self.name, compact, program, ctx)
