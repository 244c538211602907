"""Solver path of the input-channel reorder (SPEC 1.6); the only module of the package importing OR-Tools.

:func:`solve` runs, within one time limit: the heuristic of :mod:`.reorder` (balanced clustering +
pairwise-swap local search), then alternating exact maximisation from its result (fix the
permutation: keep the top-``budget`` slabs; fix the kept slabs: the optimal channel-to-group
transportation problem, solved with ``SimpleMinCostFlow`` on integer-scaled profits), then, for small
layers, the joint problem with CP-SAT hinted with the best solution so far. A step that fails or
times out leaves the best permutation found so far, with a coded warning.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.sat.python import cp_model

from ..diagnostics import warn
from .reorder import (
    ReorderProblem,
    ReorderResult,
    assignment_value,
    groups_of,
    heuristic,
    kept_slabs,
    perm_of,
    upper_bound,
)

#: Warning code of a reorder solve that fell back to its best permutation so far.
FALLBACK_CODE = "XB210"


def solve(problem: ReorderProblem, *, time_limit_s: float = 10.0, seed: int = 0, max_rounds: int = 20,
          exact_max_terms: int = 20_000, workers: int = 1) -> ReorderResult:
    """Best permutation found within ``time_limit_s``; CP-SAT runs when the joint model has at most
    ``exact_max_terms`` product terms (rows x channels x groups with non-zero importance)."""
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
    proved = False
    if failure is None and _n_terms(problem) <= exact_max_terms:
        g, value, cp_bound, proved, failure = exact(problem, best, time_limit_s=deadline - time.perf_counter(),
                                                    seed=seed, workers=workers)
        bound = min(bound, cp_bound)
        if value > best_value:
            best, best_value, method = g, value, "cp-sat"
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


def _canonical(problem: ReorderProblem, g: np.ndarray) -> np.ndarray:
    """``g`` with the equal-size (full) groups of each conv group relabelled in order of their smallest channel."""
    g = g.copy()
    sizes = problem.sizes
    for j in np.unique(problem.group_class):
        slots = np.flatnonzero(problem.group_class == j)
        full = slots[sizes[slots] == sizes[slots].max()]
        first = [int(np.flatnonzero(g == a)[0]) for a in full]
        relabel = dict(zip(full[np.argsort(first)], full))
        g = np.array([relabel.get(a, a) for a in g])
    return g


def _n_terms(problem: ReorderProblem) -> int:
    valid = problem.valid.sum(axis=1)  # groups per row
    nonzero = (problem.scores > 0) & (problem.row_class[:, None] == problem.chan_class[None, :])
    return int((nonzero.sum(axis=1) * valid).sum())


def exact(problem: ReorderProblem, hint: np.ndarray, *, time_limit_s: float, seed: int = 0,
          workers: int = 1) -> tuple[np.ndarray, float, float, bool, str | None]:
    """The joint problem with CP-SAT: (assignment, objective, upper bound, proved optimal, failure or None).

    Importances are scaled to integers; the bound adds the worst rounding of every (row, channel) term,
    so it stays valid for the real-valued objective. Equal-size groups of a conv group are made
    distinguishable by ordering them by their smallest channel.
    """
    hint_value = assignment_value(problem, hint)
    if time_limit_s <= 0:
        return hint, hint_value, float("inf"), False, "time limit reached before CP-SAT"
    s = problem.scores
    pair = (s > 0) & (problem.row_class[:, None] == problem.chan_class[None, :])
    total = float(s[pair].sum())
    scale = 1e12 / total if total > 0 else 1.0
    coef = np.rint(s * scale).astype(np.int64)
    sizes = problem.sizes
    hint = _canonical(problem, hint)
    m = cp_model.CpModel()
    x = {}
    for i, j in enumerate(problem.chan_class):
        slots = np.flatnonzero(problem.group_class == j)
        full = list(slots[sizes[slots] == sizes[slots].max()])
        rank = int(np.sum(problem.chan_class[:i] == j))
        for a in slots:
            if a not in full or full.index(a) <= rank:
                x[i, int(a)] = m.new_bool_var(f"x{i}_{a}")
        m.add_exactly_one(v for (c, _), v in x.items() if c == i)
    for a in range(problem.n_groups):
        m.add(sum(v for (_, b), v in x.items() if b == a) == int(sizes[a]))
    y = {(int(r), int(a)): m.new_bool_var(f"y{r}_{a}") for r, a in zip(*np.nonzero(problem.valid))}
    m.add(sum(y.values()) == problem.budget)
    keep = kept_slabs(problem, hint)
    objective = []
    for (r, a), yv in y.items():
        m.add_hint(yv, bool(keep[r, a]))
        for i in np.flatnonzero(pair[r]):
            if (int(i), a) in x:
                z = m.new_bool_var(f"z{r}_{i}_{a}")
                m.add_implication(z, yv)
                m.add_implication(z, x[int(i), a])
                objective.append(int(coef[r, i]) * z)
    for (i, a), xv in x.items():
        m.add_hint(xv, bool(hint[i] == a))
    m.maximize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.random_seed = int(seed)
    solver.parameters.num_workers = int(workers)
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return hint, hint_value, float("inf"), False, f"CP-SAT returned {solver.status_name(status)}"
    g = np.empty(len(problem.chan_class), np.int64)
    for (i, a), xv in x.items():
        if solver.value(xv):
            g[i] = a
    slack = int(pair.sum()) * 0.5 / scale
    bound = solver.best_objective_bound / scale + slack
    return g, assignment_value(problem, g), bound, status == cp_model.OPTIMAL, None
