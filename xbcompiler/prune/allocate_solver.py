"""The ratio allocation (:mod:`.allocate`) solved: :func:`allocate` runs the CP-SAT model (:func:`solve`, the
only allocation code importing OR-Tools) and falls back to the exact dynamic programme.

CP-SAT model: one Boolean per (layer, choice), exactly one per layer; ``sum cost * x <= budget`` (and
``sum crossbars * x <= max_freed`` if given); maximise ``(budget + 1) * crossbars freed - cost``: the most
crossbars, then the least budget spent. Seeded and time-limited; one worker makes it deterministic.
"""

from __future__ import annotations

import time

from ..cpsat import cp_solver
from .allocate import Allocation, AllocationProblem, LayerSensitivity, allocation_problem, solve_dp


def solve(problem: AllocationProblem, *, time_limit_s: float = 5.0, seed: int = 0,
          workers: int = 1) -> tuple[tuple[int, ...], str, int, int] | None:
    """``(pick, status name, crossbars freed, bound on crossbars freed)``, or None without a solution."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    x = [[model.NewBoolVar(f"x{i}_{k}") for k in range(len(values))] for i, values in enumerate(problem.value)]
    for row in x:
        model.AddExactlyOne(row)
    model.Add(sum(c * v for costs, row in zip(problem.cost, x) for c, v in zip(costs, row)) <= problem.budget)
    freed = sum(f * v for values, row in zip(problem.value, x) for f, v in zip(values, row))
    if problem.max_freed is not None:
        model.Add(freed <= problem.max_freed)
    scale = problem.budget + 1
    model.Maximize(sum((scale * f - c) * v for values, costs, row in zip(problem.value, problem.cost, x)
                       for f, c, v in zip(values, costs, row)))
    solver = cp_solver(time_limit_s, seed, workers)
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    pick = tuple(next(k for k, v in enumerate(row) if solver.Value(v)) for row in x)
    freed = problem.freed(pick)
    bound = int(solver.BestObjectiveBound() + problem.budget) // scale  # cost >= 0, so freed <= (obj + budget) / scale
    return pick, solver.StatusName(status), freed, max(freed, bound)


def allocate(layers: list[LayerSensitivity], budget: float, *, resolution: float = 0.01,
             max_freed: int | None = None, time_limit_s: float = 5.0, seed: int = 0) -> Allocation:
    """The best ratio per layer under ``budget`` points (at most ``max_freed`` crossbars freed, if given):
    CP-SAT, or the exact dynamic programme when CP-SAT is missing or returns no solution
    (``fallback_reason`` says which). Each layer's ``choices`` must start with ratio 0."""
    problem = allocation_problem(layers, budget, resolution=resolution, max_freed=max_freed)
    start = time.perf_counter()
    reason = None
    try:
        solved = solve(problem, time_limit_s=time_limit_s, seed=seed)
        if solved is None:
            reason = "CP-SAT returned no solution in time"
    except ImportError as exc:
        solved, reason = None, f"CP-SAT unavailable: {exc}"
    if solved is not None:
        pick, status, objective, bound = solved
        method = "cp-sat"
    else:
        pick = solve_dp(problem)
        objective = bound = problem.freed(pick)
        status, method = "OPTIMAL", "dp"
    chosen = [layer.choices[k] for layer, k in zip(layers, pick)]
    return Allocation(tuple((layer.layer, c.ratio) for layer, c in zip(layers, chosen)),
                      sum(c.freed for c in chosen), sum(max(0.0, c.drop) for c in chosen), budget, method, status,
                      objective, bound, time.perf_counter() - start, reason)
