"""Solver of ``remap-faults``: the row and column permutations of one crossbar that put its stuck cells where
they cost least (docs/remap_faults.md).

Cells are ``[rows, logical columns, planes]``. Placement cell ``(r, c, p)`` goes to word line ``rows[r]``,
logical column ``cols[c]``, plane ``p`` (planes never move: a logical column's bit lines move together).
Its cost there is ``cost0[r, c, p]`` when that physical cell is stuck at ``G_min``, ``cost1[r, c, p]`` when
stuck at ``G_max``, 0 when free. With the columns fixed the best rows are a linear assignment, and with
the rows fixed so are the best columns: the solver alternates the two exact assignments (OR-Tools'
``SimpleLinearSumAssignment``, integer costs) from the identity, then from ``restarts`` random column
orders, until neither improves, keeping the best; ties keep a row or column where it is. The lower
bound relaxes one side's bijection (each placement column, or row, picks its best partner independently
for every row, or column, assignment), which is exact where it is 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from ortools.graph.python import linear_sum_assignment

from ..optimality import relative_gap


@dataclass(frozen=True, eq=False)
class RemapProblem:
    """One crossbar: costs per placement cell and the stuck cells per physical cell, ``[R, C, P]`` each."""

    cost0: np.ndarray
    """int64: the error of placement cell ``(r, c, p)`` on a cell stuck at ``G_min``."""
    cost1: np.ndarray
    """int64: the error on a cell stuck at ``G_max``."""
    sa0: np.ndarray
    """bool or int: physical cells (word line, logical column, plane) stuck at ``G_min``; a count where copies
    of the crossbar (replicas) share the permutation, each with its own cells."""
    sa1: np.ndarray
    """bool or int: physical cells stuck at ``G_max``."""
    row_class: np.ndarray
    """int ``[R]``: row ``r`` may go to word line ``q`` when either is -1 (spare) or both are equal."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.cost0.shape

    @cached_property
    def _faults(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stuck cells as lists: word line, logical column and index into :attr:`_costs`' last axis."""
        planes = self.shape[2]

        def listed(stuck: np.ndarray) -> np.ndarray:  # [3, faults], a cell repeated by its count
            at = np.nonzero(stuck)
            return np.repeat(np.stack(at).reshape(3, -1), np.asarray(stuck[at], dtype=np.int64), axis=1)

        f0, f1 = listed(self.sa0), listed(self.sa1)
        return np.concatenate([f0[0], f1[0]]), np.concatenate([f0[1], f1[1]]), np.concatenate([f0[2], f1[2] + planes])

    @cached_property
    def _costs(self) -> np.ndarray:
        """``[R, C, 2P]`` int64: ``cost0`` and ``cost1`` side by side."""
        return np.concatenate([self.cost0, self.cost1], axis=2).astype(np.int64)

    def cost(self, rows: np.ndarray, cols: np.ndarray) -> int:
        """Total error with placement row ``r`` on word line ``rows[r]`` and column ``c`` at ``cols[c]``."""
        q, k, t = self._faults
        return int(self._costs[_inverse(rows)[q], _inverse(cols)[k], t].sum())

    def row_costs(self, cols: np.ndarray) -> np.ndarray:
        """``[R, R]``: the error of placement row ``r`` on word line ``q``, columns at ``cols``."""
        q, k, t = self._faults
        return _scatter(self._costs[:, _inverse(cols)[k], t], q, self.shape[0])

    def col_costs(self, rows: np.ndarray) -> np.ndarray:
        """``[C, C]``: the error of placement column ``c`` at logical column ``k``, rows at ``rows``."""
        q, k, t = self._faults
        return _scatter(self._costs[_inverse(rows)[q], :, t].T, k, self.shape[1])

    def allowed_rows(self) -> np.ndarray:
        """``[R, R]`` bool: placement row ``r`` may sit on word line ``q``."""
        c = self.row_class
        return (c[:, None] < 0) | (c[None, :] < 0) | (c[:, None] == c[None, :])


def _inverse(perm: np.ndarray) -> np.ndarray:
    out = np.empty_like(perm)
    out[perm] = np.arange(len(perm))
    return out


def _scatter(values: np.ndarray, to: np.ndarray, n: int) -> np.ndarray:
    """``[A, n]``: column ``j`` the sum of the columns of ``values`` ``[A, F]`` whose ``to`` is ``j``."""
    out = np.zeros((values.shape[0], n), dtype=np.int64)
    np.add.at(out.T, to, values.T)
    return out


@dataclass(frozen=True, eq=False)
class RemapResult:
    """The permutations found and what they cost (integer error units, see :class:`RemapProblem`)."""

    rows: np.ndarray
    cols: np.ndarray
    before: int
    after: int
    bound: int
    status: str
    """``optimal`` (cost meets the bound), ``feasible`` (no single-side assignment improves it) or
    ``time-limit`` (stopped at the deadline with the best permutations so far)."""
    iterations: int
    """Linear assignments solved."""

    @property
    def gap(self) -> float:
        """``(after - bound) / after`` (0 when ``after`` is 0)."""
        return relative_gap(self.after, self.bound)


class AssignmentError(RuntimeError):
    """OR-Tools returned no optimal assignment (never expected: every cost matrix has a feasible identity)."""


def assign(costs: np.ndarray, allowed: np.ndarray | None = None, current: np.ndarray | None = None) -> np.ndarray:
    """The permutation ``p`` minimising ``sum_i costs[i, p[i]]`` over the allowed pairs; ties keep ``current``."""
    n = costs.shape[0]
    tails, heads = np.nonzero(np.ones(costs.shape, bool) if allowed is None else allowed)
    scaled = costs[tails, heads] * (n + 1)
    if current is not None:  # +1 per moved item: never outweighs one unit of cost (at most n moves)
        scaled = scaled + (current[tails] != heads)
    solver = linear_sum_assignment.SimpleLinearSumAssignment()
    solver.add_arcs_with_cost(tails, heads, scaled)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise AssignmentError(f"linear assignment returned status {status}")
    return np.array([solver.right_mate(i) for i in range(n)], dtype=np.int64)


def alternate(problem: RemapProblem, rows: np.ndarray, cols: np.ndarray, deadline: float,
              max_rounds: int) -> tuple[np.ndarray, np.ndarray, int, int, bool]:
    """Alternate the exact row and column assignments: (rows, cols, cost, assignments, hit the deadline)."""
    allowed = problem.allowed_rows()
    cost = problem.cost(rows, cols)
    solved = 0
    for _ in range(max_rounds):
        if cost == 0:
            break
        if time.perf_counter() >= deadline:
            return rows, cols, cost, solved, True
        new_rows = assign(problem.row_costs(cols), allowed, rows)
        new_cols = assign(problem.col_costs(new_rows), None, cols)
        solved += 2
        new_cost = problem.cost(new_rows, new_cols)
        if new_cost >= cost:
            break
        rows, cols, cost = new_rows, new_cols, new_cost
    return rows, cols, cost, solved, False


def lower_bound(problem: RemapProblem) -> int:
    """``max`` of the row and column relaxations (each side's bijection dropped in turn; see the module)."""
    n_r, n_c, _ = problem.shape

    def relaxed(cost0, cost1, sa0, sa1) -> np.ndarray:
        """``[A, A]``: ``sum_b min_k`` of placing item ``a``'s cells ``[A, B, P]`` on item ``q``'s ``[A, K, P]``."""
        out = np.zeros((cost0.shape[0], sa0.shape[0]), dtype=np.int64)
        for q in np.flatnonzero((sa0 | sa1).any(axis=2).all(axis=1)):  # every partner of q is faulty
            per = (np.einsum("abp,kp->abk", cost0, sa0[q].astype(np.int64))
                   + np.einsum("abp,kp->abk", cost1, sa1[q].astype(np.int64)))
            out[:, q] = per.min(axis=2).sum(axis=1)
        return out

    rows = relaxed(problem.cost0, problem.cost1, problem.sa0, problem.sa1)
    t = (1, 0, 2)
    cols = relaxed(problem.cost0.transpose(t), problem.cost1.transpose(t), problem.sa0.transpose(t),
                   problem.sa1.transpose(t))
    bound = 0
    if rows.any():
        p = assign(rows, problem.allowed_rows())
        bound = max(bound, int(rows[np.arange(n_r), p].sum()))
    if cols.any():
        p = assign(cols)
        bound = max(bound, int(cols[np.arange(n_c), p].sum()))
    return bound


def solve(problem: RemapProblem, *, deadline: float = float("inf"), restarts: int = 2, seed: int = 0,
          max_rounds: int = 50) -> RemapResult:
    """The best permutations the alternation finds from the identity and ``restarts`` random column orders."""
    n_r, n_c, _ = problem.shape
    identity_rows, identity_cols = np.arange(n_r), np.arange(n_c)
    before = problem.cost(identity_rows, identity_cols)
    if before == 0:
        return RemapResult(identity_rows, identity_cols, 0, 0, 0, "optimal", 0)
    rows, cols, best, solved, stopped = alternate(problem, identity_rows, identity_cols, deadline, max_rounds)
    rng = np.random.default_rng(seed)
    for _ in range(restarts):
        if best == 0 or stopped or n_c < 2:
            break
        r, c, cost, n, stopped = alternate(problem, identity_rows, rng.permutation(n_c), deadline, max_rounds)
        solved += n
        if cost < best:
            rows, cols, best = r, c, cost
    bound = min(lower_bound(problem), best) if best else 0
    status = "time-limit" if stopped else "optimal" if best == bound else "feasible"
    return RemapResult(rows, cols, before, best, bound, status, solved)
