"""``fold-batchnorm``: fold inference BatchNorm into the crossbar layer that feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import fx, nn

from xbcompiler.ir import annotations as ann
from xbcompiler.ir.patterns import BatchNormMatch, match_foldable_batchnorm
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
    A BatchNorm that follows anything else, or uses batch statistics, stays on the host.
    """

    name: ClassVar[str] = "fold-batchnorm"
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset({"traced"})
    establishes: ClassVar[frozenset[str]] = frozenset({"bn-folded"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
        folded = 0
        for bn in list(gm.graph.nodes):
            match = match_foldable_batchnorm(gm, bn)
            if match is None:
                continue
            self._fold(gm, match, bn)
            folded += 1
        gm.graph.eliminate_dead_code()
        gm.recompile()
        ctx.report[self.name] = {"folded": folded}
        return gm

    @staticmethod
    def _fold(gm: fx.GraphModule, m: BatchNormMatch, bn: fx.Node) -> None:
        mean, var, gamma, beta = (_attr(gm, a) for a in (m.mean, m.var, m.weight, m.bias))
        mod = gm.get_submodule(m.layer.target)
        with torch.no_grad():
            scale = torch.rsqrt(var.double() + m.eps)
            if gamma is not None:
                scale = scale * gamma.double()
            bias = mod.bias.double() if mod.bias is not None else torch.zeros_like(mean, dtype=torch.float64)
            new_bias = (bias - mean.double()) * scale + (beta.double() if beta is not None else 0.0)
            shape = (-1,) + (1,) * (mod.weight.dim() - 1)
            mod.weight.copy_((mod.weight.double() * scale.view(shape)).to(mod.weight.dtype))
            if mod.bias is None:
                mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
            mod.bias.copy_(new_bias.to(mod.bias.dtype))
        earlier = ann.get(bn, ann.Reference, None)  # a BatchNorm that stands for another node passes it on
        ann.set(m.layer, ann.Reference(earlier.node if earlier is not None else bn.name))
        bn.replace_all_uses_with(m.layer)
        gm.graph.erase_node(bn)
