"""Input-channel reorder of a whole graph: one problem per channel space, solved, applied (background §1.6).

For every channel space that is free to move (:mod:`.channels`), the problem is built from its main
consumers: the crossbar layers that read the whole space, grouped by their plan's ``Kin`` and conv
groups; the group with the most crossbars wins, and when ungrouped its layers' importance rows
(:func:`.reorder.kernel_energy`, each layer scaled to total 1) are stacked with one shared budget.
Column grain keeps ``ceil((1 - sparsity) * slabs)`` slabs ``(o, a)``; crossbar grain sums each layer's
rows over its output groups of ``Kout`` and keeps that many blocks ``(a, b)``.
"""

from __future__ import annotations

import time
from math import ceil

import numpy as np
from torch import fx, nn

from ..diagnostics import warn
from ..frontend.trace import check_inputs, trace
from ..ir.matrix import geometry_of
from ..mapping.plan import ArraySpec
from ..mapping.search import search
from ..mapping.shape import layer_shape
from .channels import ChannelSpaces, Segment, apply_permutations, channel_spaces
from .reorder import (
    ReorderProblem,
    ReorderResult,
    assignment_value,
    build_problem,
    groups_of,
    heuristic,
    kernel_energy,
    perm_of,
    upper_bound,
)

#: Warning code of a solve that fell back to the heuristic (shared with :mod:`.reorder_solve`).
FALLBACK_CODE = "XB230"


def layer_plan(gm: fx.GraphModule, node: fx.Node, target, strategy: str):
    """The mapping plan the target gives one crossbar module of the graph (default slice-width search)."""
    mod = gm.get_submodule(node.target)
    shape = layer_shape(geometry_of(mod, node.name), tuple(node.args[0].meta["tensor_meta"].shape[1:]),
                        tuple(node.meta["tensor_meta"].shape[1:]))
    return search(strategy, shape, ArraySpec.of(target), layer=node.name)


def space_problem(gm: fx.GraphModule, cs: ChannelSpaces, root: int, plans: dict, *, sparsity: float,
                  grain: str) -> tuple[ReorderProblem | None, list[str], str]:
    """(problem, consumer names, reason when there is none) of one space."""
    space = cs.space(root)
    if space.pinned:
        return None, [], f"kept: {space.pinned[0]}"
    whole = (Segment(root, space.size),)
    readers = [c for c in cs.consumers_of(root)
               if tuple(Segment(cs.find(s.space), s.size, s.expand) for s in c.segments) == whole
               and plans.get(c.node) is not None]
    if not readers:
        return None, [], "kept: no crossbar layer reads the whole space"
    buckets: dict[tuple, list] = {}
    for c in readers:
        mod = gm.get_submodule(c.module)
        key = (plans[c.node].kin, getattr(mod, "groups", 1))
        buckets.setdefault(key, []).append(c)
    (kin, groups), chosen = max(buckets.items(), key=lambda kv: sum(plans[c.node].crossbars for c in kv[1]))
    if groups > 1:
        chosen = chosen[:1]
    if space.block < space.size and (groups == 1 or space.size // groups != space.block):
        return None, [], "kept: grouped layers allow only permutations within their groups"
    rows, budget = [], 0
    for c in chosen:
        w = gm.get_submodule(c.module).weight
        imp = kernel_energy(w)
        imp = imp / max(imp.sum(), 1e-300)
        g_in = ceil(imp.shape[1] / kin)
        if grain == "crossbar":
            kout, cog = plans[c.node].kout, imp.shape[0] // groups
            b = (np.arange(imp.shape[0]) // cog) * ceil(cog / kout) + (np.arange(imp.shape[0]) % cog) // kout
            agg = np.zeros((b[-1] + 1, imp.shape[1]))
            np.add.at(agg, b, imp)
            imp = agg
        rows.append(imp)
        budget += ceil((1.0 - sparsity) * len(imp) * g_in - 1e-9)
    problem = build_problem(np.vstack(rows), kin=kin, budget=budget, groups=groups)
    return problem, [c.node for c in chosen], ""


def solve_heuristic(problem: ReorderProblem, *, seed: int, time_limit_s: float) -> ReorderResult:
    """The fast path as a :class:`ReorderResult` (bound from :func:`upper_bound`)."""
    start = time.perf_counter()
    identity = assignment_value(problem, groups_of(problem, np.arange(len(problem.slots))))
    g = heuristic(problem, seed=seed, deadline=start + time_limit_s)
    value = assignment_value(problem, g)
    bound = max(upper_bound(problem), value)
    status = "optimal" if bound - value <= 1e-12 * max(bound, 1e-300) else "feasible"
    return ReorderResult(perm_of(problem, g), value, bound, status, "heuristic" if value > identity else "identity",
                         identity, value, time.perf_counter() - start)


def solve_space(problem: ReorderProblem, *, solver: str, seed: int, time_limit_s: float,
                warnings: list | None = None) -> ReorderResult:
    """``solver`` = ``heuristic`` or ``ortools``; an OR-Tools failure falls back to the heuristic (XB230)."""
    if solver == "heuristic":
        return solve_heuristic(problem, seed=seed, time_limit_s=time_limit_s)
    try:
        from .reorder_solve import solve

        return solve(problem, time_limit_s=time_limit_s, seed=seed)
    except Exception as exc:  # noqa: BLE001 - any solver failure falls back, never crashes
        message = f"input-channel reorder: OR-Tools failed ({type(exc).__name__}: {exc}); using the heuristic"
        warn(FALLBACK_CODE, message)
        if warnings is not None:
            warnings.append(message)
        result = solve_heuristic(problem, seed=seed, time_limit_s=time_limit_s)
        return ReorderResult(result.perm, result.objective, result.upper_bound, "fallback", result.method,
                             result.identity_objective, result.heuristic_objective, result.seconds)


def reorder_graph(gm: fx.GraphModule, target, *, time_limit_s: float = 10.0, seed: int = 0,
                  solver: str = "ortools", sparsity: float = 0.5, grain: str = "column",
                  strategy: str = "semi-folded", warnings: list | None = None, apply_to: nn.Module | None = None,
                  ) -> dict:
    """Reorder the channel spaces of ``gm`` (in place, or of ``apply_to``, a module with the same paths,
    e.g. the model ``gm`` was traced from); returns the report (per space, and totals)."""
    cs = channel_spaces(gm)
    plans = {n.name: layer_plan(gm, n, target, strategy) for n in gm.graph.nodes
             if n.op == "call_module" and n.name in {c.node for c in cs.consumers}}
    perms, spaces = {}, {}
    for root in cs.roots():
        space = cs.space(root)
        label = ",".join(sorted(space.producers)) or f"space{root}"
        problem, consumers, reason = space_problem(gm, cs, root, plans, sparsity=sparsity, grain=grain)
        if problem is None:
            if space.producers:
                spaces[label] = {"channels": space.size, "status": reason}
            continue
        result = solve_space(problem, solver=solver, seed=seed, time_limit_s=time_limit_s, warnings=warnings)
        changed = not np.array_equal(result.perm, np.arange(space.size))
        if changed:
            perms[root] = np.asarray(result.perm)
        spaces[label] = {"channels": space.size, "consumers": consumers, "status": result.status,
                         "method": result.method, "objective": result.objective, "upper_bound": result.upper_bound,
                         "gap": result.gap, "identity_objective": result.identity_objective,
                         "seconds": round(result.seconds, 3), "permuted": changed,
                         "perm": [int(i) for i in result.perm]}
    apply_permutations(gm if apply_to is None else apply_to, cs, perms)
    solved = [s for s in spaces.values() if "objective" in s]
    return {"spaces": spaces, "permuted": len(perms),
            "objective": sum(s["objective"] for s in solved),
            "identity_objective": sum(s["identity_objective"] for s in solved),
            "upper_bound": sum(s["upper_bound"] for s in solved)}


def reorder_model(model: nn.Module, example_inputs, target, **options) -> dict:
    """Reorder ``model``'s channels in place (before pruning); ``options`` as :func:`reorder_graph`."""
    gm = trace(model, check_inputs(example_inputs))
    return reorder_graph(gm, target, apply_to=model, **options)
