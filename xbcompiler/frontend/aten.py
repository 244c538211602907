"""The export front end's operator table: how each ATen operator enters the canonical graph.

``torch.export`` gives a graph of ATen operators. Each one accepted is listed in :data:`ATEN_OPS`
with what it becomes: a crossbar layer (through the functional form the fx front end already turns
into ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``), a host operator of :data:`xbcompiler.hostops.HOST_OPS`
with its arguments rearranged into that operator's signature, or nothing (removed in inference, or
graph bookkeeping). docs/operators.md lists this table; a test keeps the two equal.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from ..hostops import HOST_OPS


@dataclass(frozen=True)
class Emit:
    """The canonical call an ATen node becomes: a callable (``call_function``) or a method name."""

    target: object
    args: tuple
    kwargs: dict
    first_only: bool = False  # the ATen op returns (output, indices); the host op returns the output


#: ``convert(args, kwargs, node) -> Emit``: args are the ATen node's, ``node`` the ATen node (for shapes).
Convert = Callable[[tuple, dict, fx.Node], Emit]


@dataclass(frozen=True)
class AtenRule:
    """One accepted ATen operator (an overload packet ``aten.relu`` or one overload ``aten.add.Tensor``)."""

    op: str
    placement: str  # "crossbar" | "host" | "removed" | "graph" (bookkeeping the export adds, dropped)
    becomes: str  # what the docs show: a HOST_OPS name, a layer kind, or why it is removed
    convert: Convert | None = None


def _call(name: str, args: tuple, kwargs: dict | None = None, first_only: bool = False) -> Emit:
    """An Emit of the HOST_OPS entry ``name`` (``torch.Tensor.m`` is a method call)."""
    kwargs = kwargs or {}
    if name.startswith("torch.Tensor."):
        return Emit(name.removeprefix("torch.Tensor."), args, kwargs, first_only)
    return Emit(HOST_OPS[name].fn, args, kwargs, first_only)


def _arg(args: tuple, kwargs: dict, i: int, key: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


def _ndim(value) -> int:
    val = value.meta.get("val") if isinstance(value, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else 0


class Refused(Exception):
    """An accepted ATen op used with arguments the canonical graph cannot express."""


_RULES: list[AtenRule] = []


def _host(ops: str, name: str, adapt: Callable | None = None, first_only: bool = False) -> None:
    """Each of ``ops`` becomes host op ``name``, its arguments rearranged by ``adapt(args, kwargs, node)``."""
    def convert(args, kwargs, node):
        a, k = adapt(args, kwargs, node) if adapt else (args, kwargs)
        return _call(name, tuple(a), dict(k), first_only)
    for op in ops.split():
        _RULES.append(AtenRule(op, "host", name, convert))


def _reads_indices(node: fx.Node) -> bool:
    """Whether any node reads item 1 (the indices) of the ``(values, indices)`` an ATen op returns."""
    return any(user.target is operator.getitem and user.args[1] == 1 and user.users for user in node.users)


def _indexed(ops: str, values: str, pair: str, adapt: Callable | None = None, pair_kwargs: dict | None = None) -> None:
    """Ops returning ``(values, indices)``: host op ``values`` (it returns the values alone) when nothing
    reads the indices, else ``pair`` (with ``pair_kwargs``), which returns both."""
    def convert(args, kwargs, node):
        a, k = adapt(args, kwargs, node) if adapt else (args, kwargs)
        if _reads_indices(node):
            return _call(pair, tuple(a), {**k, **(pair_kwargs or {})})
        return _call(values, tuple(a), dict(k), first_only=True)
    for op in ops.split():
        _RULES.append(AtenRule(op, "host", values, convert))


def _xbar(op: str, becomes: str, convert: Convert) -> None:
    _RULES.append(AtenRule(op, "crossbar", becomes, convert))


def _removed(ops: str, why: str) -> None:
    for op in ops.split():
        _RULES.append(AtenRule(op, "removed", why))


def _graph(ops: str) -> None:
    for op in ops.split():
        _RULES.append(AtenRule(op, "graph", "export's shape assertions: dropped"))


def _only(n: int):
    """Keep the first ``n`` positional arguments (the rest are defaults the host op has too)."""
    return lambda args, kwargs, node: (args[:n], {})


def _scaled(key: str):
    """``add``/``sub`` with ``alpha``: the operator form only when alpha is 1."""
    def adapt(args, kwargs, node):
        alpha = _arg(args, kwargs, 2, "alpha", 1)
        if alpha != 1:
            raise Refused(f"{key} with alpha={alpha}")
        return args[:2], {}
    return adapt


def _reversed_sub(args, kwargs, node):
    """``rsub(a, b) == b - a``."""
    (a, b), _ = _scaled("rsub")(args, kwargs, node)
    return (b, a), {}


def _index(dim: int, item, ndim: int) -> tuple:
    """A ``getitem`` index selecting ``item`` along ``dim``."""
    if dim < 0:
        return (Ellipsis, item) + (slice(None),) * (-dim - 1)
    return (slice(None),) * dim + (item,)


def _slice(args, kwargs, node):
    dim, start, end, step = (_arg(args, kwargs, i, k, d) for i, k, d in
                             ((1, "dim", 0), (2, "start", None), (3, "end", None), (4, "step", 1)))
    start = None if start == 0 else start
    end = None if isinstance(end, int) and end >= sys.maxsize else end
    return (args[0], _index(dim, slice(start, end, None if step == 1 else step), _ndim(args[0]))), {}


def _select(args, kwargs, node):
    return (args[0], _index(args[1], args[2], _ndim(args[0]))), {}


def _dims_keepdim(default_dims=None):
    def adapt(args, kwargs, node):
        if _arg(args, kwargs, 3, "dtype") is not None:
            raise Refused("reduction with a dtype")
        dims = _arg(args, kwargs, 1, "dim", default_dims)
        keep = _arg(args, kwargs, 2, "keepdim", False)
        if dims is None:
            return (args[0],), {}
        return (args[0], dims, keep) if keep else (args[0], dims), {}
    return adapt


def _softmax(args, kwargs, node):
    dtype = _arg(args, kwargs, 2, "dtype")
    if dtype not in (None, False, True):  # aten._softmax's third argument is half_to_float
        return (args[0], args[1]), {"dtype": dtype}
    return (args[0], args[1]), {}


def _batch_norm(args, kwargs, node):
    x, w, b, mean, var, training, _momentum, eps = (_arg(args, kwargs, i, k) for i, k in enumerate(
        ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")))
    if training or mean is None:
        raise Refused("batch_norm with batch statistics (training mode or no running statistics)")
    return (x, mean, var, w, b, False, 0.0, eps), {}


def _layer_norm(args, kwargs, node):
    x, shape, w, b, eps = (_arg(args, kwargs, i, k, d) for i, k, d in
                           ((0, "input", None), (1, "normalized_shape", None), (2, "weight", None),
                            (3, "bias", None), (4, "eps", 1e-5)))
    return (x, tuple(shape), w, b, eps), {}


def _group_norm(args, kwargs, node):
    x, groups, w, b, eps = (_arg(args, kwargs, i, k, d) for i, k, d in
                            ((0, "input", None), (1, "num_groups", None), (2, "weight", None), (3, "bias", None),
                             (4, "eps", 1e-5)))
    return (x, groups, w, b, eps), {}


def _instance_norm(args, kwargs, node):
    x, w, b, mean, var, use_input_stats, _momentum, eps = (_arg(args, kwargs, i, k, d) for i, k, d in (
        (0, "input", None), (1, "weight", None), (2, "bias", None), (3, "running_mean", None),
        (4, "running_var", None), (5, "use_input_stats", True), (6, "momentum", 0.1), (7, "eps", 1e-5)))
    if not use_input_stats and mean is None:
        raise Refused("instance_norm without input statistics or running statistics")
    return (x, mean, var, w, b, use_input_stats, 0.0, eps), {}


def _spread(args, kwargs, node):
    """``aten.var``/``aten.std`` in any overload as ``torch.var(x, dim, correction=c, keepdim=k)``."""
    overload = node.target._overloadname
    if overload == "correction":
        dim, keep = _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False)
        correction = kwargs.get("correction")
        correction = 1 if correction is None else correction
    else:
        unbiased_at = 1 if overload == "default" else 2
        dim = None if overload == "default" else _arg(args, kwargs, 1, "dim")
        correction = 1 if _arg(args, kwargs, unbiased_at, "unbiased", True) else 0
        keep = False if overload == "default" else _arg(args, kwargs, 3, "keepdim", False)
    return (args[0],), {"dim": dim, "correction": correction, "keepdim": keep}


def _elu(args, kwargs, node):
    if _arg(args, kwargs, 2, "scale", 1) != 1 or _arg(args, kwargs, 3, "input_scale", 1) != 1:
        raise Refused("elu with scale (selu/celu)")
    return (args[0], _arg(args, kwargs, 1, "alpha", 1.0)), {}


def _like(args, kwargs, node):
    dtype = kwargs.get("dtype")
    return (args[0],), ({"dtype": dtype} if dtype is not None else {})


def _cast(args, kwargs, node):
    """``x.to(dtype)``, ``x.float()``, ``x.type_as(y)`` (any device or layout given is the host's) as
    ``cast(x, dtype=...)``; no dtype, or the one ``x`` has, leaves ``cast(x)``, which returns ``x``."""
    x = args[0]
    if node.target is torch.ops.aten.type_as.default:
        dtype = args[1].meta["val"].dtype
    else:
        dtype = kwargs.get("dtype", args[1] if len(args) > 1 and isinstance(args[1], torch.dtype) else None)
    same = isinstance(x, fx.Node) and getattr(x.meta.get("val"), "dtype", None) == dtype
    return (x,), ({"dtype": dtype} if dtype is not None and not same else {})


def _filled(args, kwargs, node):
    """``aten.zeros(size, dtype=..., device=...)`` as ``torch.zeros(size)`` (sizes may be host values)."""
    dtype = kwargs.get("dtype")
    return (list(args[0]),), ({"dtype": dtype} if dtype is not None else {})


def _interpolate(mode: str, has_align: bool):
    """``upsample_<mode>.vec(x, size, [align_corners,] scales)`` as ``F.interpolate``."""
    def adapt(args, kwargs, node):
        x, size = args[0], _arg(args, kwargs, 1, "output_size")
        align = _arg(args, kwargs, 2, "align_corners") if has_align else None
        scales = _arg(args, kwargs, 3 if has_align else 2, "scale_factors")
        if scales is not None and not isinstance(scales, (list, tuple)):  # the .default overloads
            raise Refused(f"upsample_{mode} with per-dimension scale arguments")
        kw = {"size": tuple(size) if size is not None and scales is None else None,
              "scale_factor": tuple(scales) if scales is not None else None, "mode": mode}
        if has_align:
            kw["align_corners"] = align
        return (x,), kw
    return adapt


def _pad(args, kwargs, node):
    mode = _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 3, "value")
    return (args[0], list(args[1]), mode, value), {}


def _sdpa(args, kwargs, node):
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    values = {k: _arg(args, kwargs, i, k) for i, k in enumerate(names)}
    kw = {k: v for k, v in values.items() if k in ("scale", "enable_gqa") and v not in (None, False)}
    return (values["query"], values["key"], values["value"], values["attn_mask"],
            values["dropout_p"] or 0.0, bool(values["is_causal"])), kw


# ------------------------------------------------------------------------------------ crossbar layers


def _conv(args, kwargs, node):
    """``aten.conv1d``/``conv2d`` (and the ``padding`` string overloads) as ``F.conv1d``/``F.conv2d``."""
    x, w, b, stride, padding, dilation, groups = (_arg(args, kwargs, i, k, d) for i, k, d in
                                                  ((0, "input", None), (1, "weight", None), (2, "bias", None),
                                                   (3, "stride", 1), (4, "padding", 0), (5, "dilation", 1),
                                                   (6, "groups", 1)))
    fn = {3: F.conv1d, 4: F.conv2d}.get(_ndim(w))
    if fn is None:
        raise Refused(f"{_ndim(w) - 2}-D convolution")
    return Emit(fn, (x, w, b, stride, padding, dilation, groups), {})


def _convolution(args, kwargs, node):
    """``aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)``."""
    if args[6]:
        raise Refused("transposed convolution")
    return _conv((*args[:6], args[8]), {}, node)


def _linear(args, kwargs, node):
    return Emit(F.linear, (args[0], args[1], _arg(args, kwargs, 2, "bias")), {})


def _transposed_operand(value) -> fx.Node | None:
    """``p`` when ``value`` is ``aten.t(p)`` / ``permute(p, [1, 0])`` / ``transpose(p, 0, 1)``."""
    if not isinstance(value, fx.Node) or value.op != "call_function":
        return None
    packet = str(getattr(value.target, "overloadpacket", ""))
    if packet == "aten.t" or (packet == "aten.permute" and list(value.args[1]) == [1, 0]) or \
            (packet == "aten.transpose" and sorted(value.args[1:3]) in ([0, 1], [-2, -1]) and _ndim(value) == 2):
        return value.args[0]
    return None


def _addmm(args, kwargs, node):
    """``addmm(b, x, t(W))`` (the decomposed ``F.linear``) as ``F.linear(x, W, b)``."""
    if _arg(args, kwargs, 3, "beta", 1) != 1 or _arg(args, kwargs, 4, "alpha", 1) != 1:
        raise Refused("addmm with beta or alpha")
    weight = _transposed_operand(args[2])
    if weight is None:
        raise Refused("addmm whose second matrix is not a transposed parameter")
    return Emit(F.linear, (args[1], weight, args[0]), {})


def _matmul(args, kwargs, node):
    return Emit(torch.matmul, (args[0], args[1]), {})


# ------------------------------------------------------------------------------------------ the table

_xbar("aten.conv1d", "nn.Conv1d (weight a parameter)", lambda a, k, n: _conv(a, k, n))
_xbar("aten.conv2d", "nn.Conv2d (weight a parameter)", lambda a, k, n: _conv(a, k, n))
_xbar("aten.convolution", "nn.Conv1d / nn.Conv2d (not transposed)", _convolution)
_xbar("aten.linear", "nn.Linear (weight a parameter)", _linear)
_xbar("aten.addmm", "nn.Linear (addmm(b, x, t(W)) with W a parameter)", _addmm)
_xbar("aten.matmul", "nn.Linear when one operand is a 2-D parameter, else host torch.matmul", _matmul)
_xbar("aten.mm", "nn.Linear when one operand is a 2-D parameter, else host torch.matmul", _matmul)

_host("aten.relu", "torch.nn.functional.relu")
_host("aten.relu6", "torch.nn.functional.relu6")
_host("aten.hardtanh", "torch.nn.functional.hardtanh", _only(3))
_host("aten.leaky_relu", "torch.nn.functional.leaky_relu", _only(2))
_host("aten.prelu", "torch.nn.functional.prelu", _only(2))
_host("aten.gelu", "torch.nn.functional.gelu")
_host("aten.silu", "torch.nn.functional.silu")
_host("aten.hardswish", "torch.nn.functional.hardswish")
_host("aten.hardsigmoid", "torch.nn.functional.hardsigmoid")
_host("aten.mish", "torch.nn.functional.mish")
_host("aten.elu", "torch.nn.functional.elu", _elu)
_host("aten.sigmoid", "torch.sigmoid")
_host("aten.tanh", "torch.tanh")
_host("aten.softmax aten._softmax", "torch.nn.functional.softmax", _softmax)
_host("aten.log_softmax aten._log_softmax", "torch.nn.functional.log_softmax", _softmax)
_host("aten.clamp", "torch.clamp")
_host("aten.clip", "torch.clip")
_host("aten.clamp_min", "torch.clamp", lambda a, k, n: ((a[0],), {"min": a[1]}))
_host("aten.clamp_max", "torch.clamp", lambda a, k, n: ((a[0],), {"max": a[1]}))

_host("aten.batch_norm", "torch.nn.functional.batch_norm", _batch_norm)
_host("aten.layer_norm", "torch.nn.functional.layer_norm", _layer_norm)
_host("aten.group_norm", "torch.nn.functional.group_norm", _group_norm)
_host("aten.instance_norm", "torch.nn.functional.instance_norm", _instance_norm)

_host("aten.max_pool1d", "torch.nn.functional.max_pool1d")
_host("aten.max_pool2d", "torch.nn.functional.max_pool2d")
_indexed("aten.max_pool2d_with_indices", "torch.nn.functional.max_pool2d", "torch.nn.functional.max_pool2d",
         pair_kwargs={"return_indices": True})
_host("aten.avg_pool1d", "torch.nn.functional.avg_pool1d")
_host("aten.avg_pool2d", "torch.nn.functional.avg_pool2d")
_host("aten.adaptive_avg_pool1d", "torch.nn.functional.adaptive_avg_pool1d")
_host("aten.adaptive_avg_pool2d aten._adaptive_avg_pool2d", "torch.nn.functional.adaptive_avg_pool2d")
_host("aten.max_unpool2d", "xbcompiler.hostops.max_unpool2d", lambda a, k, n: ((a[0], a[1], tuple(a[2])), {}))
_indexed("aten.adaptive_max_pool1d", "torch.nn.functional.adaptive_max_pool1d",
         "torch.nn.functional.adaptive_max_pool1d", pair_kwargs={"return_indices": True})
_indexed("aten.adaptive_max_pool2d", "torch.nn.functional.adaptive_max_pool2d",
         "torch.nn.functional.adaptive_max_pool2d", pair_kwargs={"return_indices": True})

_host("aten.add.Tensor aten.add.Scalar", "operator.add", _scaled("add"))
_host("aten.sub.Tensor aten.sub.Scalar", "operator.sub", _scaled("sub"))
_host("aten.rsub.Tensor aten.rsub.Scalar", "operator.sub", _reversed_sub)
_host("aten.mul.Tensor aten.mul.Scalar", "operator.mul")
_host("aten.div.Tensor aten.div.Scalar", "operator.truediv")
_host("aten.floor_divide", "operator.floordiv")
_host("aten.remainder", "operator.mod")
_host("aten.pow", "operator.pow")
_host("aten.neg", "operator.neg")
_host("aten.sqrt", "torch.sqrt")
_host("aten.exp", "torch.exp")
_host("aten.abs", "torch.abs")
_host("aten.maximum", "torch.maximum")
_host("aten.minimum", "torch.minimum")
_host("aten.bmm", "torch.bmm")
_host("aten.einsum", "torch.einsum", lambda a, k, n: ((a[0], list(a[1])), {}))
_host("aten.scaled_dot_product_attention", "torch.nn.functional.scaled_dot_product_attention", _sdpa)

_host("aten.mean.dim", "torch.mean", _dims_keepdim())
_host("aten.mean.default", "torch.mean", _only(1))
_host("aten.sum.dim_IntList", "torch.sum", _dims_keepdim())
_host("aten.sum.default", "torch.sum", _only(1))
_host("aten.var", "torch.var", _spread)
_host("aten.std", "torch.std", _spread)
_indexed("aten.max.dim", "torch.amax", "torch.max", _dims_keepdim())
_indexed("aten.min.dim", "torch.amin", "torch.min", _dims_keepdim())
_host("aten.max.default", "torch.amax", _only(1))
_host("aten.min.default", "torch.amin", _only(1))
for _extreme in ("amax", "amin"):
    _host(f"aten.{_extreme}", f"torch.{_extreme}",
          lambda a, k, n: ((a[0], _arg(a, k, 1, "dim", []), _arg(a, k, 2, "keepdim", False)), {}))

_host("aten.view aten._unsafe_view", "torch.Tensor.view", _only(2))
_host("aten.reshape", "torch.reshape", _only(2))
_host("aten.flatten.using_ints", "torch.flatten")
_host("aten.unflatten.int", "torch.unflatten", lambda a, k, n: ((a[0], a[1], tuple(a[2])), {}))
_host("aten.permute", "torch.permute", _only(2))
_host("aten.transpose.int", "torch.transpose")
_host("aten.t", "torch.permute", lambda a, k, n: ((a[0], list(range(_ndim(a[0]) - 1, -1, -1))), {}))
_host("aten.contiguous", "torch.Tensor.contiguous", _only(1))
_host("aten.unsqueeze", "torch.unsqueeze")
_host("aten.squeeze", "torch.squeeze")
_host("aten.expand", "torch.Tensor.expand", _only(2))
_host("aten.expand_as", "torch.Tensor.expand_as")
_host("aten.repeat", "torch.Tensor.repeat")
_host("aten.index_select", "torch.index_select")
_host("aten.cat aten.concat", "torch.cat", lambda a, k, n: ((list(a[0]), _arg(a, k, 1, "dim", 0)), {}))
_host("aten.stack", "torch.stack", lambda a, k, n: ((list(a[0]), _arg(a, k, 1, "dim", 0)), {}))
_host("aten.chunk", "torch.chunk")
_host("aten.split.Tensor aten.split_with_sizes", "torch.split",
      lambda a, k, n: ((a[0], a[1], _arg(a, k, 2, "dim", 0)), {}))
_host("aten.unbind.int", "torch.unbind")
_host("aten.pad", "torch.nn.functional.pad", _pad)
_host("aten.constant_pad_nd", "torch.nn.functional.pad",
      lambda a, k, n: ((a[0], list(a[1]), "constant", _arg(a, k, 2, "value", 0)), {}))
_host("aten.zeros_like", "torch.zeros_like", _like)
_host("aten.zeros.default", "torch.zeros", _filled)
_host("aten.to.dtype aten.to.dtype_layout aten._to_copy aten.type_as", "xbcompiler.hostops.cast", _cast)
_host("aten.ones_like", "torch.ones_like", _like)
_host("aten.slice.Tensor", "operator.getitem", _slice)
_host("aten.select.int", "operator.getitem", _select)
_host("aten.sym_size.int", "torch.Tensor.size")
_host("aten.pixel_shuffle", "torch.nn.functional.pixel_shuffle")
_host("aten.pixel_unshuffle", "torch.nn.functional.pixel_unshuffle")
_host("aten.upsample_nearest1d.vec aten.upsample_nearest2d.vec", "torch.nn.functional.interpolate",
      _interpolate("nearest", False))
_host("aten.upsample_linear1d.vec", "torch.nn.functional.interpolate", _interpolate("linear", True))
_host("aten.upsample_bilinear2d.vec", "torch.nn.functional.interpolate", _interpolate("bilinear", True))
_host("aten.masked_fill", "torch.masked_fill")
_host("aten.where.self aten.where.ScalarSelf aten.where.ScalarOther aten.where.Scalar", "torch.where")
for _cmp in ("gt", "lt", "ge", "le", "eq", "ne"):
    _host(f"aten.{_cmp}", f"torch.{_cmp}")
_host("aten.logical_not", "torch.logical_not")
_host("aten.logical_and", "torch.logical_and")
_host("aten.logical_or", "torch.logical_or")

_removed("aten.dropout aten.feature_dropout aten.alpha_dropout aten.feature_alpha_dropout",
         "dropout: identity in inference")
_removed("aten.detach aten.alias aten.clone aten.lift_fresh_copy", "no effect in inference")
_graph("aten._assert_scalar aten._assert_tensor_metadata aten.sym_constrain_range "
       "aten.sym_constrain_range_for_size aten._assert_async")

#: Accepted ATen operators by name (an overload packet, or one overload).
ATEN_OPS: dict[str, AtenRule] = {r.op: r for r in _RULES}

#: Python operators the exported graph uses on symbolic sizes (``b * c``): kept as they are.
SYMBOLIC_OPERATORS = (operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
                      operator.mod, operator.neg, operator.getitem)


def rule_for(target) -> AtenRule | None:
    """The rule of an ATen op overload (by overload first, then by its packet), or None."""
    name = str(target)
    if name in ATEN_OPS:
        return ATEN_OPS[name]
    packet = str(getattr(target, "overloadpacket", ""))
    return ATEN_OPS.get(packet)


def short_name(target) -> str:
    """``aten.sort.default`` -> ``sort`` (for messages and the hint table)."""
    name = str(getattr(target, "overloadpacket", target))
    return name.rsplit(".", 1)[-1].lstrip("_")
