"""The front end's operator tables: which run on crossbars, which on the host, which are removed.

The host allow-list itself is :data:`xbcompiler.hostops.HOST_OPS`, shared with the emulator.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..hostops import GETATTR_ALLOWED, HOST_OPS, HostOp  # noqa: F401  (re-exported)

_BY_IDENTITY: dict[int, str] = {}
for _op in HOST_OPS.values():
    _BY_IDENTITY.setdefault(id(_op.fn), _op.name)

#: Calls removed in inference (their output is their first input).
REMOVED_FUNCTIONS = {id(F.dropout): "dropout", id(F.dropout1d): "dropout", id(F.dropout2d): "dropout",
                     id(torch.nn.functional.alpha_dropout): "dropout"}
REMOVED_METHODS = frozenset({"detach"})

#: Module types executed on crossbars (weight-stationary).
CROSSBAR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)

#: Functional weight-stationary calls: qualified name by identity.
CROSSBAR_FUNCTIONS = {id(F.conv1d): "conv1d", id(F.conv2d): "conv2d", id(F.linear): "linear",
                      id(torch.matmul): "matmul", id(operator.matmul): "matmul"}


def host_name(target) -> str | None:
    """Qualified allow-list name of an fx ``call_function`` target, or None."""
    return _BY_IDENTITY.get(id(target))


def method_name(method: str) -> str | None:
    """Qualified allow-list name of an fx ``call_method`` target, or None."""
    name = f"torch.Tensor.{method}"
    return name if name in HOST_OPS else None


def node_name(node) -> str | None:
    """Qualified allow-list name of an fx ``call_method`` / ``call_function`` node, or None."""
    if node.op == "call_method":
        return method_name(node.target)
    if node.op == "call_function":
        return host_name(node.target)
    return None


def _bn(mod: nn.BatchNorm1d, p: str):
    return F.batch_norm, ("x", f"{p}.running_mean", f"{p}.running_var", f"{p}.weight" if mod.affine else None,
                          f"{p}.bias" if mod.affine else None, False, 0.0, mod.eps), {}


#: Host modules rewritten to their functional form: type -> (function, args, kwargs) builder.
#: In the args, "x" is the module's input and "<path>.<attr>" strings are its parameters/buffers.
MODULE_TO_FUNCTION = {
    nn.ReLU: lambda m, p: (F.relu, ("x",), {}),
    nn.ReLU6: lambda m, p: (F.relu6, ("x",), {}),
    nn.LeakyReLU: lambda m, p: (F.leaky_relu, ("x", m.negative_slope), {}),
    nn.GELU: lambda m, p: (F.gelu, ("x",), {"approximate": m.approximate}),
    nn.SiLU: lambda m, p: (F.silu, ("x",), {}),
    nn.Hardswish: lambda m, p: (F.hardswish, ("x",), {}),
    nn.Hardsigmoid: lambda m, p: (F.hardsigmoid, ("x",), {}),
    nn.Sigmoid: lambda m, p: (torch.sigmoid, ("x",), {}),
    nn.Tanh: lambda m, p: (torch.tanh, ("x",), {}),
    nn.ELU: lambda m, p: (F.elu, ("x", m.alpha), {}),
    nn.Hardtanh: lambda m, p: (F.hardtanh, ("x", m.min_val, m.max_val), {}),
    nn.Softmax: lambda m, p: (F.softmax, ("x",), {"dim": m.dim}),
    nn.LogSoftmax: lambda m, p: (F.log_softmax, ("x",), {"dim": m.dim}),
    nn.BatchNorm1d: _bn,
    nn.BatchNorm2d: _bn,
    nn.LayerNorm: lambda m, p: (F.layer_norm, ("x", tuple(m.normalized_shape),
                                               f"{p}.weight" if m.elementwise_affine else None,
                                               f"{p}.bias" if m.elementwise_affine and m.bias is not None
                                               else None, m.eps), {}),
    nn.GroupNorm: lambda m, p: (F.group_norm, ("x", m.num_groups, f"{p}.weight" if m.affine else None,
                                               f"{p}.bias" if m.affine else None, m.eps), {}),
    nn.MaxPool1d: lambda m, p: (F.max_pool1d, ("x", m.kernel_size, m.stride, m.padding, m.dilation,
                                               m.ceil_mode), {}),
    nn.MaxPool2d: lambda m, p: (F.max_pool2d, ("x", m.kernel_size, m.stride, m.padding, m.dilation,
                                               m.ceil_mode), {}),
    nn.AvgPool1d: lambda m, p: (F.avg_pool1d, ("x", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                               m.count_include_pad), {}),
    nn.AvgPool2d: lambda m, p: (F.avg_pool2d, ("x", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                               m.count_include_pad, m.divisor_override), {}),
    nn.AdaptiveAvgPool1d: lambda m, p: (F.adaptive_avg_pool1d, ("x", m.output_size), {}),
    nn.AdaptiveAvgPool2d: lambda m, p: (F.adaptive_avg_pool2d, ("x", m.output_size), {}),
    nn.AdaptiveMaxPool1d: lambda m, p: (F.adaptive_max_pool1d, ("x", m.output_size), {}),
    nn.AdaptiveMaxPool2d: lambda m, p: (F.adaptive_max_pool2d, ("x", m.output_size), {}),
    nn.Flatten: lambda m, p: (torch.flatten, ("x", m.start_dim, m.end_dim), {}),
}

#: Module types removed in inference.
REMOVED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
