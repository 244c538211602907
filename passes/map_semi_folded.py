"""``map-semi-folded``: fold output rows, unfold output columns into block-Toeplitz crossbars (background §2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping.apply import map_toeplitz
from xbcompiler.mapping.search import Objective
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class MapSemiFoldedPass(Pass):
    """One output row per phase; each layer's slice width ``w_o`` minimises the objective (docs/mapping.md)."""

    crossbar_weight: float = 1.0
    """Weight of the crossbar count in the search objective."""
    routing_weight: float = 0.0
    """Weight of the input words driven onto crossbar rows per image (halo and multicast routing)."""
    accumulation_weight: float = 0.0
    """Weight of the partial-sum additions per image."""
    w_o: int | None = None
    """Slice width for every layer (clipped to its output width) instead of searching."""
    alternatives: int = 3
    """Runner-up slice widths reported per layer."""

    name: ClassVar[str] = "map-semi-folded"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"xbar"})
    establishes: ClassVar[frozenset[str]] = frozenset({"mapped"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        objective = Objective(self.crossbar_weight, self.routing_weight, self.accumulation_weight)
        program, report = map_toeplitz(program, ctx.target, "semi-folded", objective=objective, w_o=self.w_o,
                                       alternatives=self.alternatives)
        ctx.report[self.name] = report
        return program
