"""``map-budgeted``: per layer the strategy, ``w_o`` and replicas that minimise the pipeline period, then the
crossbars, with the whole model on ``hierarchy.chips`` chips (docs/mapping.md, "The budgeted default")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from xbcompiler.diagnostics import warn
from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping import budget
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class MapBudgetedPass(Pass):
    """Solved with OR-Tools CP-SAT (time-limited, seeded); the exact enumeration over candidate periods
    (``greedy``) is the fallback when the solver finds nothing in time, and the result whenever it is better.

    When even every layer's cheapest option does not fit the budget, those options are mapped and
    ``place-tiles`` warns (XB310) about the extra chips.
    """

    method: Literal["cp-sat", "greedy"] = "cp-sat"
    """``cp-sat`` solves the model with OR-Tools; ``greedy`` enumerates the candidate periods."""
    time_limit_s: float = 10.0
    """CP-SAT time limit in seconds."""
    workers: int = 1
    """CP-SAT search workers (1 is deterministic)."""
    seed: int | None = None
    """CP-SAT random seed; none: the compile seed."""

    name: ClassVar[str] = "map-budgeted"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"xbar"})
    establishes: ClassVar[frozenset[str]] = frozenset({"mapped"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        problem = budget.build_problem(program, ctx.target)
        fallback = budget.greedy(problem)
        solution = fallback
        if self.method == "cp-sat" and fallback.fits and problem.layers:
            from xbcompiler.mapping.budget_solver import solve

            found = solve(problem, time_limit_s=self.time_limit_s, seed=ctx.seed if self.seed is None else self.seed,
                          workers=self.workers)
            if found is None:
                message = (f"CP-SAT found no budgeted mapping in {self.time_limit_s} s; using the greedy one "
                           f"(period {fallback.period}, {fallback.crossbars} crossbars)")
                warn("XB322", message)
                ctx.warnings.append(message)
            elif (found.period, found.crossbars) <= (fallback.period, fallback.crossbars):
                solution = found
        options = problem.chosen(solution.choice)
        layers = {name: {"strategy": o.strategy, "w_o": o.w_o, "replicas": o.replicas, "crossbars": o.crossbars,
                         "period": o.period} for name, o in zip(problem.layers, options)}
        summary = {k: v for k, v in solution.to_dict().items() if k not in ("choice", "wall_s")}
        summary.update(chips=problem.chips, capacity=problem.capacity, greedy_period=fallback.period,
                       greedy_crossbars=fallback.crossbars)
        ctx.report[self.name] = {**summary, "wall_s": solution.wall_s, "layers": layers}
        program = budget.apply(program, ctx.target, problem, solution)
        return program.replace(provenance={**program.provenance, self.name: summary})
