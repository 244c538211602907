"""CP-SAT model of the budgeted mapping (with :mod:`.replication_solver`, the only mapping code importing OR-Tools).

The candidate periods ``T_0 < T_1 < ... < T_m`` (every option's period) are order-encoded: boolean
``u_j`` means ``P >= T_j`` (``u_j >= u_{j+1}``), and ``P = T_0 + sum_j u_j (T_j - T_{j-1})``. One boolean
``y[l, k]`` per option ``k`` of layer ``l``, exactly one per layer; an option needs the period it has
(``y[l, k] -> u_j`` for its ``T_j``); ``sum cost[l, k] y[l, k] <= capacity``. A redundant cut per layer
bounds its crossbars below by the cheapest option the period allows (a staircase in the ``u_j``), which
lets propagation prove the period optimal. Objective: minimise ``P * (capacity + 1) + crossbars``: the
period first, then the crossbars, which never exceed the capacity. Seeded and time-limited;
``workers = 1`` is deterministic.
"""

from __future__ import annotations

import bisect
import time

from ..cpsat import cp_solver
from .budget import BudgetProblem, BudgetSolution


def solve(problem: BudgetProblem, *, time_limit_s: float = 10.0, seed: int = 0,
          workers: int = 1) -> BudgetSolution | None:
    """The CP-SAT solution, or None when the solver finds no feasible one in time."""
    from ortools.sat.python import cp_model

    start = time.perf_counter()
    model = cp_model.CpModel()
    periods = problem.periods()
    u = [model.NewConstant(1)] + [model.NewBoolVar(f"u{j}") for j in range(1, len(periods))]
    for j in range(1, len(u) - 1):
        model.AddImplication(u[j + 1], u[j])
    period = (periods[0] if periods else 0) + sum(u[j] * (periods[j] - periods[j - 1]) for j in range(1, len(u)))
    chosen, total = [], []
    for i, opts in enumerate(problem.options):
        ys = [model.NewBoolVar(f"y{i}_{k}") for k in range(len(opts))]
        model.AddExactlyOne(ys)
        for o, y in zip(opts, ys):
            model.AddImplication(y, u[periods.index(o.period)])
        cost = sum(o.cost * y for o, y in zip(opts, ys))
        # the cheapest option no slower than T_j, for every j: the staircase cost_l(P)
        stair = [opts[max(0, bisect.bisect_right([o.period for o in opts], t) - 1)].cost for t in periods]
        model.Add(cost >= stair[0] - sum(u[j] * (stair[j - 1] - stair[j]) for j in range(1, len(u))))
        chosen.append(ys)
        total.append(cost)
    crossbars = sum(total)
    model.Add(crossbars <= problem.capacity)
    model.Minimize(period * (problem.capacity + 1) + crossbars)
    solver = cp_solver(time_limit_s, seed, workers)
    status = solver.Solve(model)
    wall = time.perf_counter() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    choice = tuple(next(k for k, y in enumerate(ys) if solver.BooleanValue(y)) for ys in chosen)
    cost = problem.cost(choice)
    return BudgetSolution(choice, problem.period(choice), cost, cost <= problem.capacity, "cp-sat",
                          solver.StatusName(status), solver.ObjectiveValue(), solver.BestObjectiveBound(), wall)
