"""CP-SAT model of the replication problem (the only mapping code that imports OR-Tools).

Variables: the period ``P`` and replicas ``r_l in [1, max_replicas_l]``; constraints
``P * r_l >= p_l`` (so ``ceil(p_l / r_l) <= P``) and ``sum_l (r_l - 1) x_l <= budget``; objective:
minimise ``P``. Seeded and time-limited; ``workers = 1`` makes it deterministic.
"""

from __future__ import annotations

import time

from ..cpsat import cp_solver
from .replication import ReplicationProblem, ReplicationSolution


def solve(problem: ReplicationProblem, *, time_limit_s: float = 10.0, seed: int = 0,
          workers: int = 1) -> ReplicationSolution | None:
    """The CP-SAT solution, or None when the solver finds no feasible one in time."""
    from ortools.sat.python import cp_model

    start = time.perf_counter()
    n = len(problem.phases)
    top = max(problem.phases, default=1)
    lower = max((-(-p // problem.max_replicas(i)) for i, p in enumerate(problem.phases)), default=1)
    model = cp_model.CpModel()
    period = model.NewIntVar(max(1, lower), max(1, top), "period")
    replicas = [model.NewIntVar(1, problem.max_replicas(i), f"r{i}") for i in range(n)]
    for i, p in enumerate(problem.phases):
        product = model.NewIntVar(1, max(1, top) * problem.max_replicas(i), f"pr{i}")
        model.AddMultiplicationEquality(product, [period, replicas[i]])
        model.Add(product >= p)
    model.Add(sum((r - 1) * x for r, x in zip(replicas, problem.crossbars)) <= problem.budget)
    model.Minimize(period)
    solver = cp_solver(time_limit_s, seed, workers)
    status = solver.Solve(model)
    wall = time.perf_counter() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    found = problem.cheapest(solver.Value(period))  # the cheapest replicas for the period found
    return ReplicationSolution(found, problem.period(found), "cp-sat", solver.StatusName(status),
                               solver.ObjectiveValue(), solver.BestObjectiveBound(), wall)
