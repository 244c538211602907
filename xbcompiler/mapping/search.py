"""The slice-width search (background §2.2): the best ``w_o`` in ``1..W'`` for each layer, with runners-up.

Phases are ``H'`` for every ``w_o``, so the default objective is the crossbar count, ties broken
towards fewer partial sums, then fewer input words (less halo), then the narrower slice. A weighted
objective adds routing (input words per image) and accumulation (partial-sum additions per image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ir.program import MappingPlan
from .plan import ArraySpec, fully_folded, toeplitz_plan
from .shape import LayerShape


@dataclass(frozen=True)
class Objective:
    """Weights of ``cost = crossbars * w_x + input_words * w_r + partial_sum_additions * w_a``."""

    crossbars: float = 1.0
    routing: float = 0.0
    accumulation: float = 0.0

    def cost(self, plan: MappingPlan) -> float:
        return (self.crossbars * plan.crossbars + self.routing * plan.input_words
                + self.accumulation * plan.partial_sum_additions)

    def key(self, plan: MappingPlan) -> tuple:
        return self.cost(plan), plan.partial_sum_fanin, plan.input_words, plan.w_o


@dataclass(frozen=True)
class Alternative:
    """A runner-up of the search, as the report shows it."""

    w_o: int
    crossbars: int
    kin: int
    kout: int
    n_w: int
    partial_sum_fanin: int
    cost: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def candidates(strategy: str, shape: LayerShape, arr: ArraySpec, layer: str = "") -> list[MappingPlan]:
    """Every feasible plan of a Toeplitz strategy, one per ``w_o`` in ``1..W'``."""
    plans = (toeplitz_plan(strategy, shape, arr, w_o, layer) for w_o in range(1, shape.out_hw[1] + 1))
    return [p for p in plans if p is not None]


DEFAULT = Objective()


def search(strategy: str, shape: LayerShape, arr: ArraySpec, *, objective: Objective = DEFAULT,
           w_o: int | None = None, alternatives: int = 3, layer: str = "") -> MappingPlan | None:
    """The best plan of ``strategy`` for one layer (None when no ``w_o`` fits the crossbar).

    ``w_o`` fixes the slice width (clipped to ``W'``) instead of searching; the plan then lists the
    searched best as its first alternative only if it differs.
    """
    if strategy == "fully-folded":
        return fully_folded(shape, arr, layer)
    ranked = sorted(candidates(strategy, shape, arr, layer), key=objective.key)
    if not ranked:
        return None
    chosen = ranked[0]
    if w_o is not None:
        fixed = toeplitz_plan(strategy, shape, arr, min(w_o, shape.out_hw[1]), layer)
        chosen = fixed if fixed is not None else chosen
    others = [p for p in ranked if p.w_o != chosen.w_o][:alternatives]
    alts = tuple(Alternative(p.w_o, p.crossbars, p.kin, p.kout, p.n_w, p.partial_sum_fanin, objective.cost(p))
                 for p in others)
    return dataclasses.replace(chosen, cost=objective.cost(chosen), alternatives=alts)
