"""``place-tiles``: assign crossbars to tiles and chips in layer order."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.diagnostics import CompileError, warn
from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class PlaceTilesPass(Pass):
    """Fill tiles in crossbar order (layers in topological order); spill onto further chips when needed."""

    max_chips: int | None = None
    """Refuse (XB302) a model that needs more chips than this; None allows any number with a warning."""

    name: ClassVar[str] = "place-tiles"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        h = ctx.target.hierarchy
        placed = []
        for x in program.crossbars:
            tile, slot = divmod(x.index, h.crossbars_per_tile)
            placed.append(dataclasses.replace(x, tile=tile, slot=slot, chip=tile // h.tiles))
        chips = (placed[-1].chip + 1) if placed else 1
        if chips > 1:
            capacity = h.tiles * h.crossbars_per_tile
            if self.max_chips is not None and chips > self.max_chips:
                raise CompileError("XB302", f"the model needs {chips} chips ({len(placed)} crossbars, "
                                            f"{capacity} per chip) but at most {self.max_chips} are allowed",
                                   hint="use a larger target, prune the model, or raise --max-chips")
            message = f"the model needs {chips} chips: {len(placed)} crossbars, {capacity} per chip"
            warn("XB310", message)
            ctx.warnings.append(message)
        ctx.report[self.name] = {"chips": chips, "tiles": len({x.tile for x in placed})}
        return program.replace(crossbars=tuple(placed), placed=True)
