"""Graph patterns shared by passes and reports (one definition of each match)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch.nn.functional as F
from torch import fx, nn

from ..frontend.trace import is_crossbar_module

_BN_SIGNATURE = inspect.signature(F.batch_norm)


@dataclass(frozen=True)
class BatchNormMatch:
    """A foldable ``batch_norm(layer(x))``: the layer node and the bound BatchNorm arguments (attr nodes)."""

    layer: fx.Node
    mean: fx.Node
    var: fx.Node
    weight: fx.Node | None
    bias: fx.Node | None
    eps: float


def _attr_or_none(value) -> bool:
    return value is None or (isinstance(value, fx.Node) and value.op == "get_attr")


def match_foldable_batchnorm(gm: fx.GraphModule, bn: fx.Node) -> BatchNormMatch | None:
    """The match if ``bn`` is an inference BatchNorm that folds into the crossbar layer feeding it.

    Guards: running statistics present and constant, ``training=False``; the layer is a crossbar
    module called once whose output has no other user; a Linear's output is 2-D (BatchNorm1d over a
    sequence normalises another dimension).
    """
    if bn.op != "call_function" or bn.target is not F.batch_norm:
        return None
    try:
        bound = _BN_SIGNATURE.bind(*bn.args, **bn.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    a = bound.arguments
    if a["training"] is not False or a["running_mean"] is None or a["running_var"] is None:
        return None
    if not all(_attr_or_none(a[k]) for k in ("running_mean", "running_var", "weight", "bias")):
        return None
    layer = a["input"]
    if not (isinstance(layer, fx.Node) and layer.op == "call_module" and len(layer.users) == 1):
        return None
    mod = gm.get_submodule(layer.target)
    calls = sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == layer.target)
    if calls != 1 or not is_crossbar_module(mod):
        return None
    meta = layer.meta.get("tensor_meta")
    if isinstance(mod, nn.Linear) and (meta is None or len(meta.shape) != 2):
        return None
    return BatchNormMatch(layer, a["running_mean"], a["running_var"], a["weight"], a["bias"], float(a["eps"]))
