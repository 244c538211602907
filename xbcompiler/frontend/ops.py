"""The front end's operator tables: which run on crossbars, which on the host, which are removed.

The host allow-list itself is :data:`xbcompiler.hostops.HOST_OPS`, shared with the emulator.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

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


def _instance_norm(mod: nn.InstanceNorm2d, p: str):
    """Per-sample statistics, or (``track_running_stats``, in eval mode) the running ones."""
    stats = mod.track_running_stats
    return F.instance_norm, ("x", f"{p}.running_mean" if stats else None, f"{p}.running_var" if stats else None,
                             f"{p}.weight" if mod.affine else None, f"{p}.bias" if mod.affine else None,
                             not stats, 0.0, mod.eps), {}


def _indices(mod: nn.Module) -> dict:
    """A max pool built with ``return_indices=True`` returns ``(values, indices)``, so must its function."""
    return {"return_indices": True} if mod.return_indices else {}


def _upsample(mod: nn.Upsample, p: str):
    return F.interpolate, ("x",), {"size": mod.size, "scale_factor": mod.scale_factor, "mode": mod.mode,
                                   "align_corners": mod.align_corners,
                                   "recompute_scale_factor": mod.recompute_scale_factor}


#: Host modules rewritten to their functional form: type -> (function, args, kwargs) builder.
#: In the args, "x" is the module's input and "<path>.<attr>" strings are its parameters/buffers.
MODULE_TO_FUNCTION = {
    nn.ReLU: lambda m, p: (F.relu, ("x",), {}),
    nn.ReLU6: lambda m, p: (F.relu6, ("x",), {}),
    nn.LeakyReLU: lambda m, p: (F.leaky_relu, ("x", m.negative_slope), {}),
    nn.PReLU: lambda m, p: (F.prelu, ("x", f"{p}.weight"), {}),
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
    nn.InstanceNorm1d: _instance_norm,
    nn.InstanceNorm2d: _instance_norm,
    nn.MaxPool1d: lambda m, p: (F.max_pool1d, ("x", m.kernel_size, m.stride, m.padding, m.dilation,
                                               m.ceil_mode), _indices(m)),
    nn.MaxPool2d: lambda m, p: (F.max_pool2d, ("x", m.kernel_size, m.stride, m.padding, m.dilation,
                                               m.ceil_mode), _indices(m)),
    nn.AvgPool1d: lambda m, p: (F.avg_pool1d, ("x", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                               m.count_include_pad), {}),
    nn.AvgPool2d: lambda m, p: (F.avg_pool2d, ("x", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                               m.count_include_pad, m.divisor_override), {}),
    nn.AdaptiveAvgPool1d: lambda m, p: (F.adaptive_avg_pool1d, ("x", m.output_size), {}),
    nn.AdaptiveAvgPool2d: lambda m, p: (F.adaptive_avg_pool2d, ("x", m.output_size), {}),
    nn.AdaptiveMaxPool1d: lambda m, p: (F.adaptive_max_pool1d, ("x", m.output_size), _indices(m)),
    nn.AdaptiveMaxPool2d: lambda m, p: (F.adaptive_max_pool2d, ("x", m.output_size), _indices(m)),
    nn.Flatten: lambda m, p: (torch.flatten, ("x", m.start_dim, m.end_dim), {}),
    nn.Unflatten: lambda m, p: (torch.unflatten, ("x", m.dim, tuple(m.unflattened_size)), {}),
    nn.Mish: lambda m, p: (F.mish, ("x",), {}),
    nn.PixelShuffle: lambda m, p: (F.pixel_shuffle, ("x", m.upscale_factor), {}),
    nn.PixelUnshuffle: lambda m, p: (F.pixel_unshuffle, ("x", m.downscale_factor), {}),
    nn.Upsample: _upsample,
    nn.UpsamplingNearest2d: _upsample,
    nn.UpsamplingBilinear2d: _upsample,
}

#: Module types removed in inference.
REMOVED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


@dataclass(frozen=True)
class Alternative:
    """An operator or module neither front end accepts, and what to write instead."""

    names: tuple[str, ...]  # ATen short names and torch.nn module type names it is refused as
    shown: str  # how docs/operators.md names it
    instead: str


#: What to write instead of what is refused (docs/operators.md, "Not supported and what to use instead").
ALTERNATIVES: tuple[Alternative, ...] = (
    Alternative(("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv3d"),
                "`F.conv_transpose1d/2d/3d`, `F.conv3d`",
                "use the module (nn.ConvTranspose1d/2d/3d, nn.Conv3d) holding the weight as its parameter: "
                "the front end rewrites it onto crossbars (docs/mapping.md, 'Transposed and 3-D convolutions')"),
    Alternative(("embedding", "Embedding"), "`nn.Embedding`",
                "a one-hot input times an nn.Linear(bias=False): the table sits on crossbars"),
    Alternative(("cumsum",), "`torch.cumsum`",
                "x @ self.tri with tri a lower-triangular nn.Parameter: a crossbar product"),
    Alternative(("sort", "topk", "argsort", "argmax", "argmin"), "`torch.sort`, `topk`, `argsort`, `argmax`",
                "data-dependent selection: do it on the compiled model's output, outside the netlist"),
    Alternative(("fft_fft", "fft_rfft", "stft", "fft"), "`torch.fft.*`, `torch.stft`",
                "compute spectral features before the model"),
    Alternative(("var_mean", "std_mean"), "`torch.var_mean`, `torch.std_mean`",
                "torch.var / torch.std and torch.mean, each on its own"),
    Alternative(("gather", "scatter", "index", "index_put"), "`torch.gather`, `scatter`, tensor indexing",
                "slicing, torch.index_select with a constant index, or torch.where"),
    Alternative(("upsample_bicubic2d",), "`F.interpolate(mode='bicubic')`", "mode 'bilinear' or 'nearest'"),
    Alternative(("max_pool2d_with_indices", "max_unpool2d", "MaxUnpool2d"),
                "`F.max_pool2d(return_indices=True)`, `nn.MaxUnpool2d` under `--frontend fx`",
                "compile with --frontend export (the default 'auto' tries it first)"),
    Alternative(("TransformerDecoderLayer", "TransformerDecoder", "Transformer"),
                "`nn.TransformerDecoder(Layer)`, `nn.Transformer` under `--frontend fx`",
                "compile with --frontend export (the default 'auto' tries it first)"),
)

_BY_NAME = {name.lower(): a.instead for a in ALTERNATIVES for name in a.names}
_DEFAULT_HINT = "see `xbc compile --coverage` and docs/operators.md for the allow-list and what to use instead"


def hint_for(*names: str) -> str:
    """The hint of a refusal: what to use instead of the first of ``names`` (op or module type) listed."""
    for name in names:
        text = _BY_NAME.get(name.lower().lstrip("_")) if name else None
        if text:
            return text
    return _DEFAULT_HINT


def known_unsupported(name: str) -> bool:
    """Whether ``name`` (an op or module type) is listed in :data:`ALTERNATIVES`."""
    return name.lower().lstrip("_") in _BY_NAME
