"""Ideal mode, fast: a verified layer runs as one dense convolution (or GEMM) over its stored matrix.

The loader has proven that the placement records put every weight of the matrix exactly ``copies``
times and nothing else (docs/netlist.md), so what the crossbars compute, up to the order of float
additions, is the layer's matrix applied to its input: that is what runs here, whatever the mapping
strategy. ``literal=True`` executes the crossbars themselves (:mod:`.literal`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..netlist import Netlist
from ..netlist.types import Layer
from .datapath import conv_weight


class DenseLayer:
    """One float layer as ``conv2d`` / ``conv1d`` / ``linear`` with the matrix of its netlist entry."""

    def __init__(self, netlist: Netlist, layer: Layer, device: torch.device):
        self.layer = layer
        matrix = netlist.weight(layer)
        bias = netlist.array(layer, "bias")
        self.bias = None if bias is None else torch.tensor(bias, device=device)
        g = layer.geometry
        if g.kind == "linear":
            self.weight = torch.tensor(matrix[0].T, device=device).contiguous()  # [N, F]
        else:
            w = conv_weight(layer, matrix)
            self.weight = torch.tensor(w[:, :, 0] if g.kind == "conv1d" else w, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g, w = self.layer.geometry, self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if g.kind == "linear":
            return F.linear(x, w, b)
        if g.kind == "conv1d":
            return F.conv1d(x, w, b, g.stride[1], g.padding[1], g.dilation[1], self.layer.groups)
        return F.conv2d(x, w, b, tuple(g.stride), tuple(g.padding), tuple(g.dilation), self.layer.groups)
