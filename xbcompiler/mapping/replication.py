"""Replication under a crossbar budget: the problem, its greedy solution, and applying a solution.

Layer ``l`` with ``x_l`` crossbars and ``p_l`` phases per image, replicated ``r_l`` times, needs
``ceil(p_l / r_l)`` phases per image; the inter-image period is ``P = max_l ceil(p_l / r_l)``.
Minimise ``P`` subject to ``sum_l (r_l - 1) x_l <= budget``. For a given ``P`` the cheapest replica
vector is ``r_l = ceil(p_l / P)``. The CP-SAT model is in :mod:`.replication_solver` (the only
code importing OR-Tools); :func:`greedy` replicates the bottleneck layer while the budget allows,
which is optimal for this objective and serves as the fallback and the check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import ceil

from ..ir.program import XbarProgram
from ..optimality import relative_gap


@dataclass(frozen=True)
class ReplicationProblem:
    """Pure data: per layer its name, phases and crossbars (one copy); the extra-crossbar budget."""

    layers: tuple[str, ...]
    phases: tuple[int, ...]
    crossbars: tuple[int, ...]
    budget: int

    def max_replicas(self, i: int) -> int:
        """More replicas than phases, or than the budget pays for, never help."""
        return max(1, min(self.phases[i], 1 + self.budget // max(1, self.crossbars[i])))

    def period(self, replicas) -> int:
        return max((ceil(p / r) for p, r in zip(self.phases, replicas)), default=0)

    def cost(self, replicas) -> int:
        """Extra crossbars a replica vector uses."""
        return sum((r - 1) * x for r, x in zip(replicas, self.crossbars))

    def cheapest(self, period: int) -> tuple[int, ...]:
        return tuple(ceil(p / period) for p in self.phases)


@dataclass(frozen=True)
class ReplicationSolution:
    """Replicas per layer and how they were found (status, objective = period, bound, relative gap)."""

    replicas: tuple[int, ...]
    period: int
    method: str  # "cp-sat" | "greedy"
    status: str
    objective: float
    bound: float
    wall_s: float = 0.0

    @property
    def gap(self) -> float:
        return relative_gap(self.objective, self.bound)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "replicas": list(self.replicas), "gap": self.gap}


def build_problem(program: XbarProgram, target, budget: int | None = None) -> ReplicationProblem:
    """The problem of a mapped program; ``budget`` None means the free crossbars of the chips it needs."""
    layers = [n.target for n in program.nodes if n.op == "xbar"]
    plans = [program.plans[name] for name in layers]
    if budget is None:
        per_chip = target.crossbars_per_chip
        used = sum(p.crossbars for p in plans)
        budget = max(1, ceil(used / per_chip)) * per_chip - used
    return ReplicationProblem(tuple(layers), tuple(p.phases for p in plans), tuple(p.crossbars for p in plans),
                              max(0, budget))


def greedy(problem: ReplicationProblem) -> ReplicationSolution:
    """Lower the period while the bottleneck layers can all be replicated once more within the budget."""
    period = problem.period([1] * len(problem.phases))
    best = tuple([1] * len(problem.phases))
    while period > 1:
        replicas = problem.cheapest(period - 1)
        if any(r > problem.max_replicas(i) for i, r in enumerate(replicas)) or problem.cost(replicas) > problem.budget:
            break
        best, period = replicas, problem.period(replicas)
    return ReplicationSolution(best, period, "greedy", "GREEDY", period, period)


def apply(program: XbarProgram, problem: ReplicationProblem, solution: ReplicationSolution) -> XbarProgram:
    """The program with each layer's plan carrying its replica count."""
    plans = dict(program.plans)
    for name, r in zip(problem.layers, solution.replicas):
        plans[name] = dataclasses.replace(plans[name], replicas=r)
    return program.replace(plans=plans, placed=False)
