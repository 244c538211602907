"""The allow-list of host operators: the only code a netlist's ``host`` nodes can name.

Host operators are named by their qualified Python name (``torch.nn.functional.relu``,
``torch.Tensor.view``, ``operator.add``); the netlist stores that name and the emulator looks it up
in :data:`HOST_OPS` only. This module sits below the front end and the emulator, which both read it.
"""

from __future__ import annotations

import builtins
import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def requantize(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """``x`` rounded half up onto the grid ``2**exponent``: an arithmetic right shift with rounding.

    The quantiser inserts it before a residual add or a concatenation on the operand with the smaller
    exponent, so that all operands share one exponent (background §3.2). Exact in float: every value is a
    small integer times a power of two. Its netlist name is ``xbcompiler.quant.ops.requantize``.
    """
    return torch.floor(x * 2.0 ** -exponent + 0.5) * 2.0 ** exponent


def max_unpool2d(x: torch.Tensor, indices: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """``nn.MaxUnpool2d``'s output: each value of ``x`` at its flat ``indices`` in an ``output_size`` plane,
    zeros elsewhere (``torch.ops.aten.max_unpool2d``). Its netlist name is
    ``xbcompiler.hostops.max_unpool2d``."""
    return torch.ops.aten.max_unpool2d(x, indices, list(output_size))


def cast(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` in ``dtype`` (None: ``x`` itself): ``x.to(dtype)`` with no device, the one conversion a netlist
    can name. Its netlist name is ``xbcompiler.hostops.cast``."""
    return x if dtype is None else x.to(dtype=dtype)


@dataclass(frozen=True)
class HostOp:
    """An allow-listed host operator: qualified name, callable, category shown in coverage."""

    name: str
    fn: object
    category: str


def _table() -> dict[str, HostOp]:
    entries: list[tuple[str, object, str]] = []

    def add(category: str, module, prefix: str, names: str) -> None:
        for n in names.split():
            entries.append((f"{prefix}.{n}", getattr(module, n), category))

    add("activation", F, "torch.nn.functional",
        "relu relu6 leaky_relu prelu gelu silu hardswish hardsigmoid sigmoid tanh softmax log_softmax hardtanh elu mish")
    add("activation", torch, "torch", "relu sigmoid tanh softmax clamp clip")
    add("normalisation", F, "torch.nn.functional", "batch_norm layer_norm group_norm instance_norm")
    add("pooling", F, "torch.nn.functional",
        "max_pool1d max_pool2d avg_pool1d avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d "
        "adaptive_max_pool1d adaptive_max_pool2d")
    add("arithmetic", operator, "operator", "add sub mul truediv floordiv pow neg matmul mod")
    add("arithmetic", torch, "torch", "add sub mul div pow neg matmul bmm sqrt exp abs maximum minimum")
    add("reduction", torch, "torch", "mean sum amax amin max min var std")
    add("shape", torch, "torch",
        "cat concat stack chunk split flatten reshape permute transpose unsqueeze squeeze zeros zeros_like "
        "ones_like index_select")
    add("shape", F, "torch.nn.functional", "pad")
    add("shape", operator, "operator", "getitem")
    add("shape", builtins, "builtins", "getattr")
    add("arithmetic", math, "math", "sqrt")
    add("product", torch, "torch", "einsum")
    add("product", F, "torch.nn.functional", "scaled_dot_product_attention")
    add("resampling", F, "torch.nn.functional", "interpolate pixel_shuffle pixel_unshuffle")
    add("shape", torch, "torch", "unbind unflatten")
    add("selection", torch, "torch", "where masked_fill gt lt ge le eq ne logical_not logical_and logical_or")
    add("selection", operator, "operator", "gt lt ge le invert")
    entries.append(("xbcompiler.quant.ops.requantize", requantize, "quantisation"))
    entries.append(("xbcompiler.hostops.max_unpool2d", max_unpool2d, "pooling"))
    entries.append(("xbcompiler.hostops.cast", cast, "shape"))
    add("method", torch.Tensor, "torch.Tensor",
        "view reshape permute transpose contiguous flatten size dim unsqueeze squeeze mean sum chunk split "
        "expand expand_as relu sigmoid tanh softmax clamp add sub mul div pow matmul neg exp sqrt abs "
        "repeat index_select amax amin max min var std unbind unflatten masked_fill")
    return {name: HostOp(name, fn, category) for name, fn, category in entries}


#: Allow-listed host operators by qualified name.
HOST_OPS: dict[str, HostOp] = _table()

#: Attribute names ``builtins.getattr`` may read on the host: shapes, and the fields of the
#: ``(values, indices)`` that ``torch.max(x, dim)`` and ``torch.min(x, dim)`` return.
GETATTR_ALLOWED = frozenset({"shape", "ndim", "values", "indices"})

