"""Solver path of the input-channel reorder (background §1.6); the only module of the package importing OR-Tools.

:func:`solve` runs, within one time limit: the heuristic of :mod:`.reorder` (balanced clustering +
pairwise-swap local search), then alternating exact maximisation from its result (fix the
permutation: keep the top-``budget`` slabs; fix the kept slabs: the optimal channel-to-group
transportation problem, solved with ``SimpleMinCostFlow`` on integer-scaled profits), repeated from
random perturbations of the best assignment (iterated local search), then, for small
layers, the joint problem exactly as a set-partitioning MIP (CBC through ``pywraplp``). A step that fails or
times out leaves the best permutation found so far, with a coded warning.
"""

from __future__ import annotations

import time
from itertools import combinations
from math import comb

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.linear_solver import pywraplp

from ..diagnostics import warn
from .reorder import (
    ReorderProblem,
    ReorderResult,
    assignment_value,
    groups_of,
    heuristic,
    kept_slabs,
    local_search,
    perm_of,
    perturb,
    upper_bound,
)

#: Warning code of a reorder solve that fell back to its best permutation so far.
FALLBACK_CODE = "XB230"


def solve(problem: ReorderProblem, *, time_limit_s: float = 10.0, seed: int = 0, max_rounds: int = 20,
          kicks: int = 10, exact_max_columns: int = 20_000) -> ReorderResult:
    """Best permutation found within ``time_limit_s``.

    After the heuristic and the alternation, ``kicks`` rounds of iterated local search shuffle the
    groups of ``C/16`` random channels of the best assignment, then local search and alternation
    (they stop quietly at the deadline); the exact MIP runs when it has at most
    ``exact_max_columns`` columns (see :func:`exact`). ``seed`` drives the clustering and the kicks;
    when the time limit is not reached, results are deterministic.
    """
    start = time.perf_counter()
    deadline = start + time_limit_s
    identity = groups_of(problem, np.arange(len(problem.slots)))
    id_value = assignment_value(problem, identity)
    best = heuristic(problem, seed=seed, deadline=deadline)
    h_value = best_value = assignment_value(problem, best)
    method = "heuristic" if h_value > id_value else "identity"
    bound = upper_bound(problem)
    g, value, failure = alternate(problem, best, deadline=deadline, max_rounds=max_rounds)
    if value > best_value:
        best, best_value, method = g, value, "alternating"
    rng = np.random.default_rng(seed)
    for _ in range(kicks if failure is None else 0):  # optional: stops quietly at the deadline
        if time.perf_counter() >= deadline:
            break
        kicked = perturb(problem, best, rng, max(2, len(best) // 16))
        g, value, _ = alternate(problem, local_search(problem, kicked, deadline=deadline), deadline=deadline,
                                max_rounds=max_rounds)
        if value > best_value:
            best, best_value, method = g, value, "alternating"
    proved = False
    if failure is None and _columns(problem) <= exact_max_columns:
        left = deadline - time.perf_counter()
        g, value, mip_bound, proved, failure = exact(problem, best, time_limit_s=left)
        bound = min(bound, mip_bound)
        if value > best_value:
            best, best_value, method = g, value, "mip"
    bound = max(bound, best_value)
    if failure is not None:
        status = "fallback"
        warn(FALLBACK_CODE, f"input-channel reorder: {failure}; using the best permutation found "
                            f"({method}, kept importance {best_value:.6g}, bound {bound:.6g})")
    elif proved or bound - best_value <= 1e-12 * max(bound, 1e-300):
        status = "optimal"
    else:
        status = "feasible"
    return ReorderResult(perm_of(problem, best), best_value, bound, status, method, id_value, h_value,
                         time.perf_counter() - start)


def alternate(problem: ReorderProblem, g: np.ndarray, *, deadline: float = float("inf"),
              max_rounds: int = 20) -> tuple[np.ndarray, float, str | None]:
    """Alternating exact maximisation from assignment ``g``: (assignment, objective, failure or None)."""
    value = assignment_value(problem, g)
    for rounds in range(max_rounds):
        if time.perf_counter() >= deadline:
            return g, value, f"time limit reached after {rounds} alternating rounds"
        profit = problem.scores.T @ kept_slabs(problem, g).astype(np.float64)
        new, status = transport(problem, profit)
        if new is None:
            return g, value, f"min-cost flow returned status {status}"
        new_value = assignment_value(problem, new)
        if new_value <= value * (1 + 1e-12):
            break
        g, value = new, new_value
    return g, value, None


def transport(problem: ReorderProblem, profit: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Assignment of channels to groups (group ``a`` takes ``sizes[a]`` channels of its conv group)
    maximising ``sum_i profit[i, g(i)]``, by min-cost flow on costs ``-profit`` scaled to integers."""
    n_c, n_a = profit.shape
    chan, grp = np.nonzero(problem.chan_class[:, None] == problem.group_class[None, :])
    top = float(profit.max(initial=0.0))
    scale = 2.0**31 / top if top > 0 else 1.0
    src, sink = n_c + n_a, n_c + n_a + 1
    tails = np.concatenate([np.full(n_c, src), chan, n_c + np.arange(n_a)])
    heads = np.concatenate([np.arange(n_c), n_c + grp, np.full(n_a, sink)])
    caps = np.concatenate([np.ones(n_c + len(chan), np.int64), problem.sizes.astype(np.int64)])
    costs = np.concatenate([np.zeros(n_c, np.int64), -np.rint(profit[chan, grp] * scale).astype(np.int64),
                            np.zeros(n_a, np.int64)])
    flow = min_cost_flow.SimpleMinCostFlow()
    arcs = flow.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    flow.set_node_supply(src, n_c)
    flow.set_node_supply(sink, -n_c)
    status = flow.solve()
    if status != flow.OPTIMAL:
        return None, str(status)
    used = flow.flows(arcs[n_c:n_c + len(chan)]) > 0
    g = np.empty(n_c, np.int64)
    g[chan[used]] = grp[used]
    return g, "OPTIMAL"


def _columns(problem: ReorderProblem) -> int:
    """Columns of the set-partitioning model: (channel subset, kept rows) per conv group and group size."""
    total = 0
    for j in np.unique(problem.group_class):
        n_chan, n_rows = int(np.sum(problem.chan_class == j)), int(np.sum(problem.row_class == j))
        sizes = problem.sizes[problem.group_class == j]
        total += sum(comb(n_chan, int(size)) for size in np.unique(sizes)) * (n_rows + 1)
    return total


def exact(problem: ReorderProblem, hint: np.ndarray, *,
          time_limit_s: float) -> tuple[np.ndarray, float, float, bool, str | None]:
    """The joint problem as a set-partitioning MIP (OR-Tools' CBC): (assignment, objective, upper bound,
    proved optimal, failure or None).

    A column is a channel subset ``G`` of one conv group, sized like one of its input groups, with a
    number ``k`` of kept slabs; its value is the sum of the ``k`` largest row sums of ``S`` over ``G``.
    The MIP picks columns covering every channel once, each group size as often as it occurs, with
    ``budget`` kept slabs in all. Solved to a zero relative gap; ``hint`` is returned if it is better.
    """
    hint_value = assignment_value(problem, hint)
    if time_limit_s <= 0:
        return hint, hint_value, float("inf"), False, "time limit reached before the MIP"
    solver = pywraplp.Solver.CreateSolver("CBC")
    solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    solver.SetNumThreads(1)
    objective = solver.Objective()
    cover = [solver.Constraint(1, 1) for _ in problem.chan_class]
    budget = solver.Constraint(problem.budget, problem.budget)
    columns = []  # (conv group, channels, variable)
    for j in np.unique(problem.group_class):
        chans = np.flatnonzero(problem.chan_class == j)
        s = problem.scores[problem.row_class == j][:, chans]
        slots = np.flatnonzero(problem.group_class == j)
        for size, count in zip(*np.unique(problem.sizes[slots], return_counts=True)):
            uses = solver.Constraint(int(count), int(count))
            for subset in combinations(range(len(chans)), int(size)):
                members = chans[list(subset)]
                gains = np.concatenate([[0.0], np.cumsum(np.sort(s[:, subset].sum(1))[::-1])])
                for k, value in enumerate(gains.tolist()):
                    u = solver.BoolVar("")
                    objective.SetCoefficient(u, value)
                    uses.SetCoefficient(u, 1)
                    budget.SetCoefficient(u, k)
                    for c in members:
                        cover[c].SetCoefficient(u, 1)
                    columns.append((j, members, u))
    objective.SetMaximization()
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
    status = solver.Solve(params)
    if status not in (solver.OPTIMAL, solver.FEASIBLE):
        return hint, hint_value, float("inf"), False, f"MIP returned status {status}"
    g = np.empty(len(problem.chan_class), np.int64)
    free = np.ones(problem.n_groups, bool)
    for j, members, u in columns:
        if u.solution_value() > 0.5:
            fits = (problem.group_class == j) & free & (problem.sizes == len(members))
            a = int(np.flatnonzero(fits)[0])
            free[a] = False
            g[members] = a
    value = assignment_value(problem, g)
    bound = objective.BestBound() * (1 + 1e-9) + 1e-12  # LP tolerances
    if hint_value > value:
        g, value = hint, hint_value
    return g, value, bound, status == solver.OPTIMAL, None
