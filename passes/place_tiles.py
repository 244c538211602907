"""``place-tiles``: assign crossbars (and their replicas) to tiles and chips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from xbcompiler.diagnostics import CompileError, warn
from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping.tiles import place
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class PlaceTilesPass(Pass):
    """Fill tiles with each layer's crossbar copies, layers in topological order; spill onto further chips.

    ``min-traffic`` reorders the fill to cut inter-tile traffic on the layer graph (a heuristic, kept
    only when it beats the plain fill; docs/mapping.md). The report gives the traffic objective.
    """

    max_chips: int | None = None
    """Refuse (XB302) a model that needs more chips than this; None allows any number with a warning."""
    method: Literal["fill", "min-traffic"] = "fill"
    """``fill``: slots in crossbar order; ``min-traffic``: the layer-graph heuristic."""

    name: ClassVar[str] = "place-tiles"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        h = ctx.target.hierarchy
        program, report = place(program, ctx.target, self.method)
        chips = report["chips"]
        units = sum(p.crossbars_with_replicas for p in program.plans.values())
        capacity = h.tiles * h.crossbars_per_tile
        if self.max_chips is not None and chips > self.max_chips:
            raise CompileError("XB302", f"the model needs {chips} chips ({units} crossbars, "
                                        f"{capacity} per chip) but at most {self.max_chips} are allowed",
                               hint="use a larger target, prune the model, or raise --max-chips")
        if chips > h.chips:
            message = (f"the model needs {chips} chips: {units} crossbars, {capacity} per chip"
                       + (f", {h.chips} chips allowed (hierarchy.chips)" if h.chips > 1 else ""))
            warn("XB310", message)
            ctx.warnings.append(message)
        ctx.report[self.name] = report
        return program.replace(provenance={**program.provenance, self.name: report})
