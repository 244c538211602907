"""The three strategies side by side from the cost model alone (no placement, no cells).

Works on a netlist (its layer geometry) or on a model (traced for shapes only), so ImageNet models
are compared in well under a second per model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..frontend.trace import check_inputs, is_crossbar_module, trace
from ..ir.matrix import geometry_of
from ..mapping.plan import STRATEGIES, ArraySpec
from ..mapping.search import search
from ..mapping.shape import LayerShape, layer_shape, shape_of_layer
from ..target import target_from_dict


@dataclass(frozen=True)
class StrategyComparison:
    """Per layer (name, {strategy: plan}) and the network totals of crossbars and phases."""

    layers: list[tuple[str, dict]]

    def total(self, strategy: str, key: str) -> int:
        return sum(getattr(plans[strategy], key) for _, plans in self.layers)

    def period(self, strategy: str) -> int:
        return max((plans[strategy].phases for _, plans in self.layers), default=0)

    @property
    def crossbar_saving(self) -> float:
        """Fully-unfolded crossbars / semi-folded crossbars (the network-level saving)."""
        return self.total("fully-unfolded", "crossbars") / self.total("semi-folded", "crossbars")

    @property
    def phase_saving(self) -> float:
        """Fully-folded phases / semi-folded phases, summed over layers."""
        return self.total("fully-folded", "phases") / self.total("semi-folded", "phases")

    @property
    def period_saving(self) -> float:
        """Fully-folded / semi-folded inter-image pipeline period (slowest layer)."""
        return self.period("fully-folded") / self.period("semi-folded")

    def to_dict(self) -> dict:
        totals = {s: {"crossbars": self.total(s, "crossbars"), "logical_crossbars": self.total(s, "logical_crossbars"),
                      "phases": self.total(s, "phases"), "period": self.period(s)} for s in STRATEGIES}
        return {"totals": totals, "crossbar_saving_vs_fully_unfolded": self.crossbar_saving,
                "phase_saving_vs_fully_folded": self.phase_saving, "period_saving_vs_fully_folded": self.period_saving}


def compare(shapes: list[tuple[str, LayerShape]], arr: ArraySpec) -> StrategyComparison:
    """Every strategy's best plan for every layer."""
    return StrategyComparison([(name, {s: search(s, shape, arr, layer=name) for s in STRATEGIES})
                               for name, shape in shapes])


def compare_netlist(netlist) -> StrategyComparison:
    target = target_from_dict(netlist.doc.target)
    return compare([(layer.name, shape_of_layer(layer)) for layer in netlist.layers], ArraySpec.of(target))


def model_shapes(model: torch.nn.Module, example_inputs) -> list[tuple[str, LayerShape]]:
    """The crossbar layers of a model with their shapes (traced; weights are not copied)."""
    gm = trace(model, check_inputs(example_inputs))
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_crossbar_module(mod := gm.get_submodule(node.target)):
            geo = geometry_of(mod, node.name)
            out.append((node.name, layer_shape(geo, tuple(node.args[0].meta["tensor_meta"].shape[1:]),
                                               tuple(node.meta["tensor_meta"].shape[1:]))))
    return out
