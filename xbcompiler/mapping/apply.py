"""Map every crossbar layer of a program with a block-Toeplitz strategy (semi-folded, fully-unfolded)."""

from __future__ import annotations

from ..diagnostics import CompileError, Location
from ..ir.program import XbarProgram
from .placement import layer_blocks
from .plan import ArraySpec
from .search import DEFAULT, Objective, search
from .shape import shape_of


def map_toeplitz(program: XbarProgram, target, strategy: str, *, objective: Objective = DEFAULT,
                 w_o: int | None = None, alternatives: int = 3) -> tuple[XbarProgram, dict]:
    """The program with plans, crossbars and blocks of ``strategy``; and a per-layer search report."""
    arr = ArraySpec.of(target)
    crossbars, blocks, plans, report = [], [], {}, {}
    for node in program.nodes:
        if node.op != "xbar":
            continue
        m = program.matrices[node.target]
        shape = shape_of(m)
        plan = search(strategy, shape, arr, objective=objective, w_o=w_o, alternatives=alternatives, layer=m.name)
        if plan is None:
            raise CompileError("XB301", f"no slice width of layer '{m.name}' fits a {arr.rows}x{arr.cols} crossbar: "
                                        f"one kernel row needs {shape.input_cols(1)} rows",
                               location=Location(node=m.name), hint="map it with the fully-folded pipeline")
        xs, bs = layer_blocks(m.name, shape, plan, len(crossbars), arr.rows, arr.cols)
        crossbars += xs
        blocks += bs
        plans[m.name] = plan
        report[m.name] = {"w_o": plan.w_o, "crossbars": plan.crossbars, "cost": plan.cost,
                          "alternatives": [a.to_dict() for a in plan.alternatives]}
    program = program.replace(crossbars=tuple(crossbars), slices=(), blocks=tuple(blocks), plans=plans,
                              placed=False)
    return program, {"crossbars": len(crossbars), "layers": report}
