"""Operator coverage: every node of the traced model, where it runs and why."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

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


def coverage(gm: fx.GraphModule) -> list[CoverageRow]:
    """One row per node of a front-end graph (as :func:`trace` returns it), plus the removed ones."""
    rows = []
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
            rows.append(CoverageRow(node.name, f"{node.target} ({kind})", "crossbar", "weight-stationary"))
        elif _folds(gm, node):
            rows.append(CoverageRow(node.name, "batch_norm", "folded", "folded into the preceding crossbar layer"))
        else:
            name = ops.node_name(node)
            category = ops.HOST_OPS[name].category if name in ops.HOST_OPS else "?"
            rows.append(CoverageRow(node.name, name or str(node.target), "host", f"allow-listed {category} op"))
    for removed in ann.get(gm, ann.Removed).nodes:
        rows.append(CoverageRow(removed.name, removed.target, "removed", removed.reason))
    return rows


def _folds(gm: fx.GraphModule, node: fx.Node) -> bool:
    return match_foldable_batchnorm(gm, node) is not None
