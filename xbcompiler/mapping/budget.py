"""The budgeted mapping: per layer a strategy, ``w_o`` and replicas, so that the model fits ``hierarchy.chips``.

Layer ``l`` mapped with base plan ``b`` (fully-folded, or semi-folded / fully-unfolded at one ``w_o``:
``x_b`` crossbars, ``p_b`` phases) and ``r`` replicas costs ``r x_b`` crossbars and needs
``ceil(p_b / r)`` phases per image. The pipeline period is the slowest layer's; the problem is

    minimise  P = max_l period_l,  then  sum_l cost_l,   subject to  sum_l cost_l <= capacity

with ``capacity = hierarchy.chips * crossbars_per_chip``, the crossbars (replicas included) that
``place-tiles`` packs onto that many chips. Each layer keeps only its Pareto-optimal options (no other
option is as fast and as cheap), fastest first. For a fixed ``P`` every layer's cheapest option with a
period ``<= P`` is independent of the others, so :func:`greedy`, which tries the candidate periods in
order, is exact: it is the fallback of the CP-SAT model (:mod:`.budget_solver`, the only code here that
imports OR-Tools) and its check. :func:`apply` builds the chosen mixture of strategies.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass

import numpy as np

from ..ir.program import MappingPlan, XbarProgram
from ..optimality import relative_gap
from .placement import layer_blocks
from .plan import ArraySpec, fully_folded, toeplitz_plan
from .search import candidates
from .shape import LayerShape, shape_of
from .slices import layer_slices

#: Tie-break between options of equal period and cost: the plain tiling, then the Toeplitz strategies.
_RANK = {"fully-folded": 0, "semi-folded": 1, "fully-unfolded": 2}


@dataclass(frozen=True)
class Option:
    """One way to map a layer: a base plan (strategy, ``w_o``) of ``crossbars`` per copy, ``replicas`` copies."""

    strategy: str
    w_o: int
    replicas: int
    crossbars: int  # one copy
    period: int  # ceil(phases / replicas)

    @property
    def cost(self) -> int:
        """Crossbars with replicas."""
        return self.crossbars * self.replicas


@dataclass(frozen=True)
class BudgetProblem:
    """Pure data: per layer its name and Pareto-optimal options (period ascending, cost descending)."""

    layers: tuple[str, ...]
    options: tuple[tuple[Option, ...], ...]
    capacity: int  # crossbars with replicas that ``chips`` chips hold
    chips: int

    def periods(self) -> list[int]:
        """Every period some layer's option has, ascending: the optimum is one of them."""
        return sorted({o.period for opts in self.options for o in opts})

    def cheapest(self, period: int) -> tuple[int, ...] | None:
        """Per layer the index of its cheapest option no slower than ``period`` (None if a layer has none)."""
        choice = []
        for opts in self.options:
            k = bisect.bisect_right([o.period for o in opts], period) - 1
            if k < 0:
                return None
            choice.append(k)
        return tuple(choice)

    def smallest(self) -> tuple[int, ...]:
        """The fewest crossbars: every layer's cheapest option."""
        return tuple(len(opts) - 1 for opts in self.options)

    def chosen(self, choice) -> list[Option]:
        return [opts[k] for opts, k in zip(self.options, choice)]

    def period(self, choice) -> int:
        return max((o.period for o in self.chosen(choice)), default=0)

    def cost(self, choice) -> int:
        return sum(o.cost for o in self.chosen(choice))

    def objective(self, choice) -> int:
        """``period * (capacity + 1) + crossbars``: minimises the period first, then the crossbars."""
        return self.period(choice) * (self.capacity + 1) + self.cost(choice)


@dataclass(frozen=True)
class BudgetSolution:
    """The option of each layer and how it was found (status, objective, bound, relative gap)."""

    choice: tuple[int, ...]
    period: int
    crossbars: int  # with replicas
    fits: bool  # crossbars <= capacity
    method: str  # "cp-sat" | "greedy"
    status: str
    objective: float
    bound: float
    wall_s: float = 0.0

    @property
    def gap(self) -> float:
        return relative_gap(self.objective, self.bound)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "choice": list(self.choice), "gap": self.gap}


def _bases(shape: LayerShape, arr: ArraySpec) -> list[MappingPlan]:
    """Fully-folded and every feasible semi-folded and fully-unfolded plan, most preferred first."""
    plans = [fully_folded(shape, arr), *candidates("semi-folded", shape, arr), *candidates("fully-unfolded", shape, arr)]
    return sorted(plans, key=lambda p: (_RANK[p.strategy], p.partial_sum_fanin, p.input_words, p.w_o))


def layer_options(shape: LayerShape, arr: ArraySpec) -> tuple[Option, ...]:
    """The Pareto-optimal options of one layer over every base plan and replica count, fastest first.

    Ties (same period and cost) go to fewer replicas, then the base order of :func:`_bases`.
    """
    bases = _bases(shape, arr)
    x = np.array([p.crossbars for p in bases], dtype=np.int64)
    p = np.array([p.phases for p in bases], dtype=np.int64)
    periods = np.unique(np.concatenate([-(-q // np.arange(1, q + 1)) for q in np.unique(p)]))
    replicas = -(-p[None, :] // periods[:, None])  # (periods, bases): the fewest replicas reaching each period
    cost = x[None, :] * replicas
    best = np.argmin(cost * (int(replicas.max()) + 1) + replicas, axis=1)  # first minimum: preferred base
    options: list[Option] = []
    for row, b in enumerate(best.tolist()):
        r = int(replicas[row, b])
        if options and int(cost[row, b]) >= options[-1].cost:
            continue
        options.append(Option(bases[b].strategy, bases[b].w_o, r, int(x[b]), -(-int(p[b]) // r)))
    return tuple(options)


def build_problem(program: XbarProgram, target) -> BudgetProblem:
    """The problem of a lowered program for ``target.hierarchy.chips`` chips.

    Options costing more than the whole budget are left out, except each layer's cheapest.
    """
    arr = ArraySpec.of(target)
    chips = target.hierarchy.chips
    capacity = chips * target.crossbars_per_chip
    layers, options = [], []
    for node in program.nodes:
        if node.op != "xbar":
            continue
        m = program.matrices[node.target]
        front = layer_options(shape_of(m), arr)
        layers.append(m.name)
        options.append(tuple(o for o in front if o.cost <= capacity) or front[-1:])
    return BudgetProblem(tuple(layers), tuple(options), capacity, chips)


def greedy(problem: BudgetProblem) -> BudgetSolution:
    """The exact solution by enumerating the candidate periods (bisection: feasibility is monotone).

    When even the cheapest options do not fit, they are the result (``fits`` False, status ``OVER_BUDGET``).
    """
    periods = problem.periods()

    def fits(period: int) -> tuple[int, ...] | None:
        choice = problem.cheapest(period)
        return choice if choice is not None and problem.cost(choice) <= problem.capacity else None

    k = bisect.bisect_left(periods, True, key=lambda period: fits(period) is not None)
    if not problem.layers:
        choice, status = (), "OPTIMAL"
    elif k == len(periods):
        choice, status = problem.smallest(), "OVER_BUDGET"
    else:
        choice, status = fits(periods[k]), "OPTIMAL"
    value = problem.objective(choice)
    cost = problem.cost(choice)
    return BudgetSolution(choice, problem.period(choice), cost, cost <= problem.capacity, "greedy", status,
                          value, value)


def apply(program: XbarProgram, target, problem: BudgetProblem, solution: BudgetSolution) -> XbarProgram:
    """The program with each layer mapped by its chosen option: plans (with replicas), crossbars, slices, blocks."""
    arr = ArraySpec.of(target)
    R, C = target.crossbar.rows, target.logical_cols
    crossbars, slices, blocks, plans = [], [], [], {}
    for name, option in zip(problem.layers, problem.chosen(solution.choice)):
        m = program.matrices[name]
        shape = shape_of(m)
        if option.strategy == "fully-folded":
            plan = fully_folded(shape, arr, name)
            xs, ss = layer_slices(name, *m.weight.shape, len(crossbars), R, C)
            slices += ss
        else:
            plan = toeplitz_plan(option.strategy, shape, arr, option.w_o, name)
            xs, bs = layer_blocks(name, shape, plan, len(crossbars), R, C)
            blocks += bs
        assert len(xs) == plan.crossbars == option.crossbars
        crossbars += xs
        plans[name] = dataclasses.replace(plan, replicas=option.replicas, cost=float(option.cost))
    return program.replace(crossbars=tuple(crossbars), slices=tuple(slices), blocks=tuple(blocks), plans=plans,
                           placed=False)
