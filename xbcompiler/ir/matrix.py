"""Logical weight matrices (im2col form) and the graph-stage module that computes through them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..diagnostics import CompileError


@dataclass(frozen=True)
class Geometry:
    """Convolution geometry in 2-D form (Conv1d has ``kernel[0] == 1``; Linear is 1x1 with no spatial dims)."""

    kind: str  # "conv1d" | "conv2d" | "linear"
    in_channels: int
    out_channels: int
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def rows_per_group(self) -> int:
        """K = C_in / groups * kh * kw."""
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def cols_per_group(self) -> int:
        return self.out_channels // self.groups


@dataclass(frozen=True, eq=False)
class LogicalMatrix:
    """One weight-stationary op as im2col matrices: ``weight[g]`` is ``[K, N/groups]``, rows ``(c, dy, dx)``.

    ``name`` is the fx node, ``source`` the module path, ``reference`` the node of the original
    model whose value this layer's output equals (the BatchNorm after a folded conv).
    """

    name: str
    source: str
    kind: str  # "conv1d" | "conv2d" | "linear" | "matmul"
    geometry: Geometry
    weight: np.ndarray  # float32 [groups, K, N/groups]
    bias: np.ndarray | None  # float32 [N]
    input_shape: tuple[int, ...]  # without the batch dimension
    output_shape: tuple[int, ...]
    reference: str
    quant: object | None = None  # xbcompiler.quant.scheme.LayerQuant once quantised: weight holds Wq, bias None

    @property
    def rows(self) -> int:
        return self.weight.shape[1]

    @property
    def cols(self) -> int:
        return self.geometry.out_channels

    @property
    def cycles(self) -> int:
        """Crossbar reads per image: one per output pixel (conv) or per input vector (linear)."""
        if self.geometry.kind == "linear":
            return int(np.prod(self.output_shape[:-1], dtype=np.int64)) if len(self.output_shape) > 1 else 1
        return int(np.prod(self.output_shape[1:], dtype=np.int64))


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) and len(v) == 2 else (int(np.ravel(v)[0]),) * 2


def _resolve_padding(mod: nn.Module, node_name: str) -> tuple[int, int]:
    pad = mod.padding
    if pad == "valid":
        return (0, 0)
    if pad == "same":
        total = [d * (k - 1) for d, k in zip(mod.dilation, mod.kernel_size)]
        if any(t % 2 for t in total):
            raise CompileError("XB105", f"padding='same' with an even kernel is asymmetric in '{node_name}'",
                               hint="pad explicitly with F.pad and use padding=0")
        return tuple(t // 2 for t in total) if len(total) == 2 else (0, total[0] // 2)
    return (0, int(pad[0])) if isinstance(mod, nn.Conv1d) else _pair(pad)


def geometry_of(mod: nn.Module, node_name: str) -> Geometry:
    """The 2-D geometry of a Conv1d/Conv2d/Linear module."""
    if isinstance(mod, nn.Linear):
        return Geometry("linear", mod.in_features, mod.out_features)
    if isinstance(mod, nn.Conv1d):
        return Geometry("conv1d", mod.in_channels, mod.out_channels, mod.groups, (1, mod.kernel_size[0]),
                        (1, mod.stride[0]), _resolve_padding(mod, node_name), (1, mod.dilation[0]))
    return Geometry("conv2d", mod.in_channels, mod.out_channels, mod.groups, _pair(mod.kernel_size),
                    _pair(mod.stride), _resolve_padding(mod, node_name), _pair(mod.dilation))


def im2col_weight(mod: nn.Module, geo: Geometry) -> np.ndarray:
    """``[groups, K, N/groups]`` float32 matrices of a module's weight, rows ordered ``(c, dy, dx)``."""
    w = mod.weight.detach().to(torch.float32).cpu()
    if geo.kind == "linear":
        return w.t().contiguous().numpy()[None]
    n_g = geo.cols_per_group
    w = w.reshape(geo.groups, n_g, geo.rows_per_group)
    return w.transpose(1, 2).contiguous().numpy()


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (the compiler's one home of the formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_via_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geo: Geometry) -> torch.Tensor:
    """Compute the layer as unfold + per-group matmul: the exact im2col form the crossbars hold."""
    if geo.kind == "linear":
        y = x @ weight[0]
        return y + bias if bias is not None else y
    x4 = x.unsqueeze(2) if geo.kind == "conv1d" else x
    b, _, h, w = x4.shape
    cols = F.unfold(x4, geo.kernel, dilation=geo.dilation, padding=geo.padding, stride=geo.stride)
    ho = conv_output_size(h, geo.kernel[0], geo.stride[0], geo.padding[0], geo.dilation[0])
    wo = conv_output_size(w, geo.kernel[1], geo.stride[1], geo.padding[1], geo.dilation[1])
    cols = cols.view(b, geo.groups, geo.rows_per_group, ho * wo)
    y = torch.einsum("bgkl,gkn->bgnl", cols, weight).reshape(b, geo.out_channels, ho, wo)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.squeeze(2) if geo.kind == "conv1d" else y


class Im2colLayer(nn.Module):
    """Graph-stage stand-in for a crossbar layer: runs through its im2col matrices (numerically checkable)."""

    def __init__(self, matrix: LogicalMatrix):
        super().__init__()
        self.matrix = matrix
        self.register_buffer("weight", torch.from_numpy(matrix.weight.copy()))
        self.register_buffer("bias", None if matrix.bias is None else torch.from_numpy(matrix.bias.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_via_im2col(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                               self.matrix.geometry)
