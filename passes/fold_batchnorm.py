"""``fold-batchnorm``: fold inference BatchNorm into the crossbar layer that feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from xbcompiler.frontend.trace import is_crossbar_module
from xbcompiler.pipeline import Pass, PassContext


def _attr(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if node is None:
        return None
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class FoldBatchNormPass(Pass):
    """Fold ``batch_norm(layer(x))`` into the layer when the layer's output has no other user.

    Identity: ``gamma * (W x + b - mu) / sqrt(var + eps) + beta == W' x + b'`` with
    ``W' = W * gamma / sqrt(var + eps)`` per output channel and ``b' = beta + gamma (b - mu) / sqrt(var + eps)``.
    A BatchNorm that follows anything else stays on the host.
    """

    name: ClassVar[str] = "fold-batchnorm"
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset({"traced"})
    establishes: ClassVar[frozenset[str]] = frozenset({"bn-folded"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
        calls = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        folded = 0
        for bn in list(gm.graph.nodes):
            layer = self._foldable(gm, bn, calls)
            if layer is None:
                continue
            self._fold(gm, layer, bn)
            folded += 1
        gm.graph.eliminate_dead_code()
        gm.recompile()
        ctx.report[self.name] = {"folded": folded}
        return gm

    @staticmethod
    def _foldable(gm: fx.GraphModule, bn: fx.Node, calls: dict) -> fx.Node | None:
        if bn.op != "call_function" or bn.target is not F.batch_norm:
            return None
        layer = bn.args[0]
        if not (isinstance(layer, fx.Node) and layer.op == "call_module" and len(layer.users) == 1
                and calls[layer.target] == 1 and is_crossbar_module(gm.get_submodule(layer.target))):
            return None
        mod = gm.get_submodule(layer.target)
        shape = layer.meta.get("tensor_meta").shape if "tensor_meta" in layer.meta else None
        if isinstance(mod, nn.Linear) and (shape is None or len(shape) != 2):
            return None  # BatchNorm1d over a sequence is not per output feature
        return layer

    @staticmethod
    def _fold(gm: fx.GraphModule, layer: fx.Node, bn: fx.Node) -> None:
        args = list(bn.args) + [None] * (8 - len(bn.args))
        mean, var, gamma, beta = (_attr(gm, a) for a in args[1:5])
        eps = bn.kwargs.get("eps", args[7] if args[7] is not None else 1e-5)
        mod = gm.get_submodule(layer.target)
        with torch.no_grad():
            scale = torch.rsqrt(var.double() + eps)
            if gamma is not None:
                scale = scale * gamma.double()
            bias = mod.bias.double() if mod.bias is not None else torch.zeros_like(mean, dtype=torch.float64)
            new_bias = (bias - mean.double()) * scale + (beta.double() if beta is not None else 0.0)
            shape = (-1,) + (1,) * (mod.weight.dim() - 1)
            mod.weight.copy_((mod.weight.double() * scale.view(shape)).to(mod.weight.dtype))
            if mod.bias is None:
                mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
            mod.bias.copy_(new_bias.to(mod.bias.dtype))
        layer.meta["xb.reference"] = bn.meta.get("xb.reference", bn.name)
        bn.replace_all_uses_with(layer)
        gm.graph.erase_node(bn)
