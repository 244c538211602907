"""Spend an accuracy budget where it frees the most crossbars: per-layer sensitivity, then a
multiple-choice knapsack over (layer, ratio).

Sensitivity (:class:`LayerSensitivity`): each prunable layer is pruned alone at each ratio of a grid, each
briefly fine-tuned and evaluated; its accuracy drop is measured against the dense model given the same
fine-tune. The allocation picks one ratio per layer (ratio 0 always allowed) maximising the crossbars
freed with the sum of the drops within the budget; ties go to the smaller total drop. Drops are scaled
to integer units (:func:`allocation_problem`), so the CP-SAT model (:func:`.allocate_solver.allocate`,
the entry point), the exact dynamic programme (:func:`solve_dp`, its fallback) and brute force
(:func:`solve_brute_force`, for tests) answer the same integer problem.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..optimality import relative_gap


@dataclass(frozen=True)
class Choice:
    """One ratio of one layer: what it frees and what it costs."""

    ratio: float
    """Group sparsity."""
    freed: int
    """Crossbars freed (dense minus kept), from the layer's crossbar curve."""
    drop: float
    """Accuracy drop in points against the dense model with the same fine-tune (0 for ratio 0)."""
    accuracy: float | None = None
    """The measured accuracy (None for ratio 0, never measured)."""


@dataclass(frozen=True)
class LayerSensitivity:
    """The choices of one layer, ratio 0 first."""

    layer: str
    dense_crossbars: int
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class AllocationProblem:
    """Integer multiple-choice knapsack: ``value[l][k]`` crossbars and ``cost[l][k]`` budget units of
    choice ``k`` of layer ``l``; pick one choice per layer with total cost at most ``budget`` (and, if
    given, at most ``max_freed`` crossbars freed in all)."""

    value: tuple[tuple[int, ...], ...]
    cost: tuple[tuple[int, ...], ...]
    budget: int
    max_freed: int | None = None

    def freed(self, pick: tuple[int, ...]) -> int:
        return sum(self.value[i][k] for i, k in enumerate(pick))

    def spent(self, pick: tuple[int, ...]) -> int:
        return sum(self.cost[i][k] for i, k in enumerate(pick))

    def objective(self, pick: tuple[int, ...]) -> int:
        """Lexicographic score: crossbars freed first, then the smaller total cost."""
        return self.freed(pick) * (self.budget + 1) - self.spent(pick)

    def feasible(self, pick: tuple[int, ...]) -> bool:
        return self.spent(pick) <= self.budget and (self.max_freed is None or self.freed(pick) <= self.max_freed)


@dataclass(frozen=True)
class Allocation:
    """One ratio per layer and how the solver got it."""

    ratios: tuple[tuple[str, float], ...]
    """``(layer, ratio)`` for every layer of the problem, in order (ratio 0: left dense)."""
    freed: int
    """Predicted crossbars freed (sum of the chosen choices)."""
    drop: float
    """Sum of the chosen choices' drops (points)."""
    budget: float
    """The budget (points) this allocation was solved for."""
    method: str
    """``cp-sat`` or ``dp`` (exact dynamic programme, the fallback)."""
    status: str
    """CP-SAT's status name (``OPTIMAL``, ``FEASIBLE``), or ``OPTIMAL`` for the dynamic programme."""
    objective: int
    """Crossbars freed, as the solver scored it."""
    bound: int
    """The solver's upper bound on the crossbars freed."""
    seconds: float
    fallback_reason: str | None = None
    """Why the dynamic programme answered instead of CP-SAT (None when CP-SAT did)."""

    @property
    def gap(self) -> float:
        """``(bound - objective) / bound`` (0 when the bound is 0)."""
        return relative_gap(self.objective, self.bound)

    def pruned(self) -> dict[str, float]:
        """The layers with a nonzero ratio."""
        return {layer: r for layer, r in self.ratios if r > 0}


def allocation_problem(layers: list[LayerSensitivity], budget: float, *, resolution: float = 0.01,
                       max_freed: int | None = None) -> AllocationProblem:
    """Scale drops to integer units of ``resolution`` points: drops round up, the budget down (never more
    optimistic than the measured drops). Negative drops (noise) count as 0."""
    units = math.floor(budget / resolution + 1e-9)
    value = tuple(tuple(c.freed for c in layer.choices) for layer in layers)
    cost = tuple(tuple(max(0, math.ceil(c.drop / resolution - 1e-9)) for c in layer.choices) for layer in layers)
    return AllocationProblem(value, cost, max(0, units), max_freed)


def solve_dp(problem: AllocationProblem) -> tuple[int, ...]:
    """Exact dynamic programme over the crossbars freed (least cost to free exactly ``f``), then the
    largest feasible ``f``: the lexicographically best pick. O(layers x choices x total crossbars)."""
    # table[f] = (least cost, pick) freeing exactly f crossbars; absent: unreachable
    table: dict[int, tuple[int, tuple[int, ...]]] = {0: (0, ())}
    for values, costs in zip(problem.value, problem.cost):
        nxt: dict[int, tuple[int, tuple[int, ...]]] = {}
        for f, (c, pick) in table.items():
            for k, (v, w) in enumerate(zip(values, costs)):
                if c + w <= problem.budget and (f + v not in nxt or c + w < nxt[f + v][0]):
                    nxt[f + v] = (c + w, pick + (k,))
        table = nxt
    cap = problem.max_freed
    best = max((f for f in table if cap is None or f <= cap), default=None)
    if best is None:  # only when even ratio 0 everywhere breaks the cap: then the all-zero pick
        return tuple(0 for _ in problem.value)
    return table[best][1]


def solve_brute_force(problem: AllocationProblem) -> tuple[int, ...]:
    """Every combination (tests only): the lexicographically best feasible pick."""
    picks = itertools.product(*(range(len(v)) for v in problem.value))
    return max((p for p in picks if problem.feasible(p)), key=problem.objective)


def monotone_drops(choices: list[Choice]) -> list[Choice]:
    """Drops made non-decreasing in the ratio (running maximum): pruning a layer further is never
    taken to cost less than pruning it less, which filters the noise of small validation sets."""
    out, worst = [], 0.0
    for c in sorted(choices, key=lambda c: c.ratio):
        worst = max(worst, c.drop)
        out.append(Choice(c.ratio, c.freed, worst, c.accuracy))
    return out
