"""``reorder-input-channels``: cluster important input channels into few crossbar groups (background §1.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import fx

from xbcompiler.diagnostics import CompileError, Location
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.prune.reorder_pass import reorder_graph


@dataclass(frozen=True)
class ReorderInputChannelsPass(Pass):
    """Permute channels so that each crossbar layer's important input channels share input groups.

    One permutation per channel space (tensors that must share a channel order: residual additions
    merge spaces, concatenations permute per segment, depthwise layers pass it through; see
    docs/pruning.md). It maximises the kept importance of the space's main consumer(s) (background §1.6) with
    the groups of the target's mapping plan, and is applied to the producers' output channels
    (weights, bias, BatchNorm) and the consumers' input channels, so the graph computes the same
    function (checked on the context's inputs). Every solve's status, objective, upper bound and gap
    go into the report; a solve that fails falls back to the best heuristic permutation (XB230).
    """

    time_limit_s: float = 10.0
    """Time limit of each space's solve, in seconds."""
    seed: int | None = None
    """Seed of the clustering and the solver's kicks; none: the compile seed."""
    solver: Literal["heuristic", "ortools"] = "ortools"
    """``heuristic``: balanced clustering + local search; ``ortools``: then the exact alternation
    (min-cost flow) and, for small layers, the MIP (``reorder_solve.solve``)."""
    sparsity: float = 0.5
    """Group sparsity the kept budget assumes: ``ceil((1 - sparsity) * groups)`` slabs (or blocks) kept."""
    grain: Literal["column", "crossbar"] = "column"
    """Kept unit of the objective: slabs ``(o, a)`` or blocks ``(a, b)``."""
    strategy: Literal["semi-folded", "fully-unfolded", "fully-folded"] = "semi-folded"
    """Mapping whose plan (``Kin``, ``Kout``) defines the input groups."""
    check: bool = True
    """Run the graph before and after on the context's check inputs and require equal outputs."""
    rtol: float = 1e-4
    """Relative tolerance of that check."""

    name: ClassVar[str] = "reorder-input-channels"
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset({"traced"})
    establishes: ClassVar[frozenset[str]] = frozenset({"reordered"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
        inputs = ctx.check_inputs or ctx.example_inputs
        before = _run(gm, inputs) if self.check and inputs else None
        report = reorder_graph(gm, ctx.target, time_limit_s=self.time_limit_s,
                               seed=ctx.seed if self.seed is None else self.seed, solver=self.solver,
                               sparsity=self.sparsity, grain=self.grain, strategy=self.strategy,
                               warnings=ctx.warnings)
        ctx.report[self.name] = report
        if before is not None:
            after = _run(gm, inputs)
            err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(after, before))
            if err > self.rtol:
                raise CompileError("XB201", f"reordered graph differs from the original (relative error {err:.2e})",
                                   location=Location(node=next(iter(report["spaces"]), None)))
        return gm


def _run(gm: fx.GraphModule, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = gm(*inputs)
    flat = out if isinstance(out, (tuple, list)) else [out]
    return [t.detach().double() for t in flat if isinstance(t, torch.Tensor)]
