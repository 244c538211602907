"""``lower-im2col``: replace every crossbar layer by its im2col matrices (exact, numerically checked)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from xbcompiler.diagnostics import CompileError, Location, source_of
from xbcompiler.frontend.trace import is_crossbar_module
from xbcompiler.ir import annotations as ann
from xbcompiler.ir.matrix import Im2colLayer, LogicalMatrix, geometry_of, im2col_weight
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class LowerIm2colPass(Pass):
    """Each Conv1d/Conv2d/Linear becomes an :class:`Im2colLayer` holding ``[groups, K, N/groups]`` matrices."""

    check: bool = True
    """Run each lowered layer and its original on one seeded input and require agreement."""
    rtol: float = 1e-5
    """Relative tolerance (max |difference| / max |reference|) of that check."""

    name: ClassVar[str] = "lower-im2col"
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset({"traced"})
    establishes: ClassVar[frozenset[str]] = frozenset({"im2col"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
        gen = torch.Generator().manual_seed(ctx.seed)
        for node in list(gm.graph.nodes):
            if node.op != "call_module" or not is_crossbar_module(gm.get_submodule(node.target)):
                continue
            mod = gm.get_submodule(node.target)
            matrix = self._matrix(node, mod)
            layer = Im2colLayer(matrix)
            if self.check:
                self._check(node, mod, layer, gen)
            path = f"xb_im2col_{node.name}"
            gm.add_submodule(path, layer)
            node.target = path
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm

    @staticmethod
    def _matrix(node: fx.Node, mod) -> LogicalMatrix:
        geo = geometry_of(mod, node.name)
        in_shape = tuple(node.args[0].meta["tensor_meta"].shape[1:])
        out_shape = tuple(node.meta["tensor_meta"].shape[1:])
        bias = None if mod.bias is None else mod.bias.detach().to(torch.float32).cpu().numpy().copy()
        kind = ann.get(node, ann.LayerKind, None)
        reference = ann.get(node, ann.Reference, None)
        return LogicalMatrix(name=node.name, source=ann.get(node, ann.Source).module,
                             kind=kind.kind if kind is not None else geo.kind,
                             geometry=geo, weight=np.ascontiguousarray(im2col_weight(mod, geo)), bias=bias,
                             input_shape=in_shape, output_shape=out_shape,
                             reference=reference.node if reference is not None else node.name)

    @staticmethod
    def _check_shape(m: LogicalMatrix) -> tuple[int, ...]:
        """The layer's input shape with spatial sizes cut to a few windows (borders and strides included)."""
        g = m.geometry
        if g.kind == "linear":
            return m.input_shape
        spatial = [min(n, d * (k - 1) + 1 + 3 * s) for n, k, s, d in
                   zip(m.input_shape[1:], g.kernel[-len(m.input_shape[1:]):], g.stride[-len(m.input_shape[1:]):],
                       g.dilation[-len(m.input_shape[1:]):])]
        return (m.input_shape[0], *spatial)

    def _check(self, node: fx.Node, mod, layer: Im2colLayer, gen: torch.Generator) -> None:
        # in float64: a float32 sum that nearly cancels (a one-output head) can differ by more than rtol
        # from the same sum in another order, and that is no reason to refuse the model
        x = torch.randn((1, *self._check_shape(layer.matrix)), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            ref, got = copy.deepcopy(mod).double()(x), layer(x)
        err = float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30))
        if err > self.rtol:
            raise CompileError("XB201", f"im2col form of '{node.name}' differs from the layer (relative error {err:.2e})",
                               location=Location(node=node.name, source=source_of(node)))
