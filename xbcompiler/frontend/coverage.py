"""Operator coverage: every node of the traced model, where it runs and why."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from torch import fx, nn

from ..ir import annotations as ann
from ..ir.patterns import match_foldable_batchnorm
from . import ops
from .trace import is_crossbar_module


@dataclass(frozen=True)
class CoverageRow:
    node: str
    op: str
    placement: str  # "crossbar" | "host" | "folded" | "removed" | "input" | "output" | "constant"
    why: str
    macs: int = 0  # multiply-accumulates per sample (crossbar layers and host products; 0 elsewhere)
    operator: str = ""  # what the MAC table groups by: the layer kind (Conv2d, Linear, matmul) or host op name


@dataclass(frozen=True)
class MacShare:
    """Multiply-accumulates per sample of one operator, on crossbars and on the host."""

    operator: str
    crossbar: int
    host: int


def mac_shares(rows: list[CoverageRow]) -> list[MacShare]:
    """MACs per operator (only operators that do any), crossbar-heavy first."""
    by_op: dict[str, list[int]] = {}
    for r in rows:
        if r.macs:
            entry = by_op.setdefault(r.operator, [0, 0])
            entry[r.placement != "crossbar"] += r.macs
    return sorted((MacShare(op, x, h) for op, (x, h) in by_op.items()), key=lambda m: (-m.crossbar - m.host, m.operator))


def crossbar_share(rows: list[CoverageRow]) -> float:
    """The fraction of all MACs that run on crossbars (1.0 for a model without any)."""
    shares = mac_shares(rows)
    total = sum(m.crossbar + m.host for m in shares)
    return sum(m.crossbar for m in shares) / total if total else 1.0


def coverage(gm: fx.GraphModule) -> list[CoverageRow]:
    """One row per node of a front-end graph (as :func:`trace` returns it), plus the removed ones."""
    rows = []
    batch = _batch(gm)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            rows.append(CoverageRow(node.name, "input", "input", "model input"))
        elif node.op == "output":
            rows.append(CoverageRow(node.name, "output", "output", "model output"))
        elif node.op == "get_attr" and node.users and all(_folds(gm, u) for u in node.users):
            rows.append(CoverageRow(node.name, node.target, "folded", "BatchNorm statistic folded into a crossbar layer"))
        elif node.op == "get_attr":
            rows.append(CoverageRow(node.name, node.target, "constant", "parameter or buffer used on the host"))
        elif node.op == "call_module" and is_crossbar_module(gm.get_submodule(node.target)):
            kind = ann.get(node, ann.LayerKind, None)
            kind = kind.kind if kind is not None else type(gm.get_submodule(node.target)).__name__
            mod = gm.get_submodule(node.target)
            rows.append(CoverageRow(node.name, f"{node.target} ({kind})", "crossbar", "weight-stationary",
                                    _layer_macs(node, mod) // batch, kind))
        elif _folds(gm, node):
            rows.append(CoverageRow(node.name, "batch_norm", "folded", "folded into the preceding crossbar layer"))
        else:
            name = ops.node_name(node)
            category = ops.HOST_OPS[name].category if name in ops.HOST_OPS else "?"
            rows.append(CoverageRow(node.name, name or str(node.target), "host", f"allow-listed {category} op",
                                    _host_macs(node, name) // batch, name or str(node.target)))
    for removed in ann.get(gm, ann.Removed).nodes:
        rows.append(CoverageRow(removed.name, removed.target, "removed", removed.reason))
    return rows


def _folds(gm: fx.GraphModule, node: fx.Node) -> bool:
    return match_foldable_batchnorm(gm, node) is not None


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def _batch(gm: fx.GraphModule) -> int:
    """The example batch size (the first input's leading dimension), to count MACs per sample."""
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = _shape(node)
            return max(1, shape[0]) if shape else 1
    return 1


def _layer_macs(node: fx.Node, mod: nn.Module) -> int:
    """``outputs x K``: every output value of a conv or linear is a dot product over its K inputs."""
    out = _shape(node)
    if out is None:
        return 0
    if isinstance(mod, nn.Linear):
        k = mod.in_features
    else:
        k = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
    return math.prod(out) * k


_PRODUCTS = {"operator.matmul", "torch.matmul", "torch.Tensor.matmul", "torch.bmm"}


def _host_macs(node: fx.Node, name: str | None) -> int:
    """MACs of the activation-by-activation products on the host (matmul, bmm, einsum, attention)."""
    if name in _PRODUCTS:
        a, out = _shape(node.args[0]), _shape(node)
        return math.prod(out) * a[-1] if a and out else 0
    if name == "torch.einsum":
        return _einsum_macs(node)
    if name == "torch.nn.functional.scaled_dot_product_attention":
        q, k, v = (_shape(a) for a in node.args[:3])
        if not (q and k and v):
            return 0
        # scores q @ k^T: [.., L, S] over E; output scores @ v: [.., L, Ev] over S
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
    return 0


def _einsum_macs(node: fx.Node) -> int:
    """``prod(size of every index)``: one multiply-accumulate per point of the joint index space."""
    equation, operands = node.args[0], node.args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    terms = re.sub(r"\s", "", equation).split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, operand in zip(terms, operands):
        shape = _shape(operand)
        if shape is None or "." in term:
            return 0
        sizes.update(zip(term, shape))
    return math.prod(sizes.values()) if len(operands) > 1 else 0
