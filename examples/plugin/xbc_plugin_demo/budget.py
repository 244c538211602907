"""``crossbar-budget``: refuse a placed program that needs more crossbars than a budget; record the count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class CrossbarBudgetPass(Pass):
    """Count the crossbars of the placed program, replicas included; XB302 when they exceed the budget.

    The count, the budget and what is left go into the netlist's ``provenance["crossbar-budget"]``.
    """

    max_crossbars: int = 128
    """The most crossbars the program may use."""

    name: ClassVar[str] = "crossbar-budget"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        used = sum(plan.crossbars_with_replicas for plan in program.plans.values())
        if used > self.max_crossbars:
            raise CompileError("XB302", f"the program needs {used} crossbars, over the budget of {self.max_crossbars}",
                               hint="raise crossbar-budget{max-crossbars=N}, prune the model or pick a larger target")
        record = {"crossbars": used, "max_crossbars": self.max_crossbars, "left": self.max_crossbars - used}
        ctx.report[self.name] = record
        return program.replace(provenance={**program.provenance, self.name: record})
