"""Pruning groups derived from the mapping plan of the actual target (background §1.2-1.3, 3.3).

:func:`plan_groups` compiles the model for the target with the pipeline, so the numbers are those the
compiler uses (the same slice-width search, ``Kin``, ``Kout``, ``n_w``, tile sizes), and builds one
:class:`~xbcompiler.prune.groups.GroupSet` per crossbar layer whose weight is a module parameter:

| grain | strategy | group | crossbars of the kept groups |
| --- | --- | --- | --- |
| ``crossbar`` | semi-folded, fully-unfolded | block ``(a, b)`` | ``mult * #kept blocks`` |
| ``column`` | semi-folded, fully-unfolded | slab ``(o, a)`` | ``mult * sum_a ceil(alive(a) / Kout)`` |
| ``kernel`` | fully-folded | channel ``i`` of column tile ``c`` | ``sum_c ceil(kh kw alive(c) / R)`` |
| ``tile`` | fully-folded | ``R x C`` tile ``(r, c)`` | ``#kept tiles`` |
| ``crossbar``, ``column`` of a packed layer | semi-folded, fully-unfolded | conv group ``g`` | ``mult * ceil(#kept / P)`` |

``mult = n_w * kernel_row_splits * row_copies`` is the number of crossbars one block occupies. Groups
are on the weights of the model as given; BatchNorm folding scales output channels, so a zero group
stays zero after folding and the masks stay valid. A layer whose conv groups share crossbars
(block-diagonal packing, ``P = groups_per_crossbar > 1``, e.g. depthwise) is pruned by whole conv
groups at the crossbar and column grains, its survivors re-packed ``P`` to a crossbar; the kernel and
tile grains leave grouped layers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ir.program import MappingPlan
from ..ir.verify_toeplitz import TOEPLITZ
from .groups import GroupSet, column_groups, conv_group_groups, crossbar_groups, kernel_groups, tile_groups

#: Strategies each grain applies to.
GRAINS: dict[str, tuple[str, ...]] = {"crossbar": TOEPLITZ, "column": TOEPLITZ, "kernel": ("fully-folded",),
                                      "tile": ("fully-folded",)}


@dataclass(frozen=True)
class LayerGroups:
    """The groups of one crossbar layer and the plan they come from."""

    layer: str
    """Crossbar layer name (the fx node; the netlist's ``layers[].name``)."""
    param: str
    """The weight's name in ``model.named_parameters()``."""
    plan: MappingPlan
    group_set: GroupSet

    @property
    def dense_crossbars(self) -> int:
        return self.plan.crossbars


def plan_groups(model, example_inputs, target, *, pipeline: str = "semi-folded", grain: str = "column",
                overrides=None, aligned: bool = True) -> list[LayerGroups]:
    """Groups of ``grain`` for every prunable crossbar layer of ``model`` compiled for ``target``, in
    topological order. ``aligned`` makes column-grain projections fill whole crossbars
    (:meth:`GroupSet.ranking`)."""
    from ..driver import compile

    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r} (known: {', '.join(GRAINS)})")
    compiled = compile(model, example_inputs, target, pipeline, overrides=overrides)
    params = dict(model.named_parameters())
    out = []
    for node in compiled.program.nodes:
        if node.op != "xbar":
            continue
        m, plan = compiled.program.matrices[node.target], compiled.program.plans[node.target]
        param = f"{m.source}.weight"
        if plan.strategy not in GRAINS[grain]:
            raise ValueError(f"grain {grain!r} needs a {' or '.join(GRAINS[grain])} mapping; layer '{m.name}' "
                             f"is {plan.strategy}")
        if param not in params or (grain in ("kernel", "tile") and m.geometry.groups > 1):
            continue
        rows = compiled.program.layer_crossbars(m.name)[0].rows
        gs = layer_group_set(param, tuple(params[param].shape), plan, grain, rows=rows,
                             groups=m.geometry.groups, aligned=aligned)
        assert gs.crossbars([True] * gs.n_groups) == plan.crossbars, (m.name, plan)
        out.append(LayerGroups(m.name, param, plan, gs))
    return out


def layer_group_set(param: str, shape, plan: MappingPlan, grain: str, *, rows: int, groups: int = 1,
                    aligned: bool = True) -> GroupSet:
    """The group set of one layer's weight (shape ``[C_out, C_in/groups, *kernel]``) under ``plan``."""
    if grain in ("crossbar", "column"):
        mult = plan.n_w * plan.kernel_row_splits * plan.row_copies
        if plan.groups_per_crossbar > 1:
            return conv_group_groups(param, shape, groups=groups, per_crossbar=plan.groups_per_crossbar, n_w=mult,
                                     aligned=aligned)
        if grain == "crossbar":
            return crossbar_groups(param, shape, kin=plan.kin, kout=plan.kout, n_w=mult, groups=groups)
        return column_groups(param, shape, kin=plan.kin, kout=plan.kout, n_w=mult, groups=groups, aligned=aligned)
    if grain == "kernel":
        return kernel_groups(param, shape, cols_per_tile=plan.kout, rows=rows)
    return tile_groups(param, shape, rows=rows, cols_per_tile=plan.kout)


def kept_groups(model: torch.nn.Module, groups: list[LayerGroups]) -> dict[str, torch.Tensor]:
    """Parameter -> keep vector of the groups with a non-zero weight, read off the model."""
    params = dict(model.named_parameters())
    return {g.param: g.group_set.norms(params[g.param]) > 0 for g in groups}


def crossbars_read_off(model: torch.nn.Module, groups: list[LayerGroups]) -> int:
    """Crossbars of the layers of ``groups`` as the model's weights stand (:func:`kept_groups`)."""
    keep = kept_groups(model, groups)
    return sum(g.group_set.crossbars(keep[g.param]) for g in groups)
