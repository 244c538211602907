"""``replicate-layers``: replicate bottleneck layers within a crossbar budget to shorten the pipeline period."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from xbcompiler.diagnostics import warn
from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping import replication
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class ReplicateLayersPass(Pass):
    """Minimise ``max_l ceil(phases_l / replicas_l)`` subject to the extra crossbars fitting the budget.

    Solved with OR-Tools CP-SAT (time-limited, seeded); the greedy result is the fallback when the
    solver finds nothing in time, and the result whenever it is better.
    """

    budget: int | None = None
    """Extra crossbars the replicas may use; none: the free crossbars of the chips the model needs."""
    method: Literal["cp-sat", "greedy"] = "cp-sat"
    """``cp-sat`` solves the model with OR-Tools; ``greedy`` replicates bottleneck layers directly."""
    time_limit_s: float = 10.0
    """CP-SAT time limit in seconds."""
    workers: int = 1
    """CP-SAT search workers (1 is deterministic)."""
    seed: int | None = None
    """CP-SAT random seed; none: the compile seed."""

    name: ClassVar[str] = "replicate-layers"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"replicated"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        problem = replication.build_problem(program, ctx.target, self.budget)
        fallback = replication.greedy(problem)
        solution = fallback
        if self.method == "cp-sat":
            from xbcompiler.mapping.replication_solver import solve

            found = solve(problem, time_limit_s=self.time_limit_s, seed=ctx.seed if self.seed is None else self.seed,
                          workers=self.workers)
            if found is None:
                message = f"CP-SAT found no replication in {self.time_limit_s} s; using the greedy period {fallback.period}"
                warn("XB321", message)
                ctx.warnings.append(message)
            elif found.period <= fallback.period:
                solution = found
        ctx.report[self.name] = {**solution.to_dict(), "budget": problem.budget, "greedy_period": fallback.period,
                                 "period_before": problem.period([1] * len(problem.phases)),
                                 "extra_crossbars": problem.cost(solution.replicas)}
        program = replication.apply(program, problem, solution)
        provenance = {**program.provenance, self.name: {k: v for k, v in ctx.report[self.name].items()
                                                        if k != "replicas"}}
        return program.replace(provenance=provenance)
