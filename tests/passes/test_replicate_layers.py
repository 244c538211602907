"""``replicate-layers`` run alone through the PassManager (verify-each and numeric-check on).

The CP-SAT model and the greedy fallback both reach the optimal period (checked against brute force);
the netlist carries the replicas, every replica gets its own tile slot, the solver status, objective,
bound and gap are reported and recorded in the netlist provenance, and the emulated result is unchanged.
"""

from __future__ import annotations

import itertools
import sys
from math import ceil
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from passes.map_semi_folded import MapSemiFoldedPass
from passes.replicate_layers import ReplicateLayersPass
from tests.models import MODELS
from tests.passes.harness import before_pass, run_passes
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.mapping.replication import ReplicationProblem, greedy
from xbcompiler.mapping.replication_solver import solve
from xbcompiler.pipeline import PassManager, resolve_pipeline

# --- replicate-layers -----------------------------------------------------------------------------------


def brute_force(problem: ReplicationProblem) -> int:
    ranges = [range(1, p + 1) for p in problem.phases]
    return min(problem.period(rs) for rs in itertools.product(*ranges) if problem.cost(rs) <= problem.budget)


@pytest.mark.parametrize("seed", range(12))
def test_cp_sat_and_greedy_reach_the_brute_force_period(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 4, (1,), generator=g))
    phases = tuple(int(v) for v in torch.randint(1, 9, (n,), generator=g))
    crossbars = tuple(int(v) for v in torch.randint(1, 6, (n,), generator=g))
    problem = ReplicationProblem(tuple(f"l{i}" for i in range(n)), phases, crossbars,
                                 int(torch.randint(0, 30, (1,), generator=g)))
    best = brute_force(problem)
    found = solve(problem, time_limit_s=5.0, seed=0, workers=1)
    assert found.status == "OPTIMAL" and found.period == best == found.objective == found.bound
    assert found.gap == 0.0 and problem.cost(found.replicas) <= problem.budget
    fallback = greedy(problem)
    assert fallback.period == best and problem.cost(fallback.replicas) <= problem.budget
    # the replicas are the cheapest for the period: one fewer on any layer raises it
    for i, r in enumerate(found.replicas):
        assert r == ceil(phases[i] / best)


def replicated(model, inputs, target="isaac-like", **options):
    program, ctx = before_pass("map-fully-folded", model, inputs, target)
    mapped = run_passes([MapSemiFoldedPass()], program, ctx)
    return mapped, run_passes([ReplicateLayersPass(**options)], mapped, ctx), ctx


def three_layers() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    return model, (torch.randn(2, 3, 12, 12),)


def test_pass_minimises_the_period_within_the_default_budget():
    model, inputs = three_layers()
    before, after, ctx = replicated(model, inputs)
    report = ctx.report["replicate-layers"]
    used = sum(p.crossbars for p in before.plans.values())
    assert report["budget"] == ctx.target.crossbars_per_chip - used  # the chip's free crossbars
    assert report["method"] == "cp-sat" and report["status"] == "OPTIMAL" and report["gap"] == 0.0
    assert report["period_before"] == 12 and report["period"] == report["objective"] == report["bound"] == 1
    for name, plan in after.plans.items():
        assert plan.replicas == plan.phases and plan.period == 1
        assert before.plans[name].replicas == 1
    assert report["extra_crossbars"] == sum((p.replicas - 1) * p.crossbars for p in after.plans.values())
    assert not after.placed and "replicated" in ctx.properties


@pytest.mark.parametrize("budget", [0, 5, 40])
def test_a_small_budget_replicates_the_bottleneck_first(budget):
    model, inputs = three_layers()
    before, after, ctx = replicated(model, inputs, budget=budget, time_limit_s=5.0)
    problem = ReplicationProblem(tuple(before.plans), tuple(p.phases for p in before.plans.values()),
                                 tuple(p.crossbars for p in before.plans.values()), budget)
    assert ctx.report["replicate-layers"]["period"] == brute_force(problem)
    assert sum((p.replicas - 1) * p.crossbars for p in after.plans.values()) <= budget
    if budget == 0:
        assert all(p.replicas == 1 for p in after.plans.values())


def test_greedy_method_and_solver_fallback(monkeypatch):
    model, inputs = three_layers()
    _, greedy_after, ctx = replicated(model, inputs, method="greedy", budget=40)
    assert ctx.report["replicate-layers"]["method"] == "greedy"
    import xbcompiler.mapping.replication_solver as solver

    monkeypatch.setattr(solver, "solve", lambda *a, **k: None)
    with pytest.warns(XBWarning, match="XB321"):
        _, fallback, ctx = replicated(model, inputs, budget=40)
    assert ctx.report["replicate-layers"]["method"] == "greedy" and any("greedy" in w for w in ctx.warnings)
    assert {k: p.replicas for k, p in fallback.plans.items()} == {k: p.replicas for k, p in greedy_after.plans.items()}


def test_replicated_netlist_places_every_copy_and_still_equals_torch():
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    compiled = xb.compile(model, (x,), "isaac-like", "fold-batchnorm,lower-im2col,lower-to-xbar,map-semi-folded,"
                                                   "replicate-layers{budget=400},place-tiles{method=min-traffic}")
    netlist = compiled.netlist
    layers, summary = netlist.layers, netlist.summary
    assert summary["crossbars_with_replicas"] == sum(layer.crossbars * layer.replicas for layer in layers)
    assert summary["crossbars_with_replicas"] - summary["crossbars"] <= 400
    assert summary["pipeline_period"] == max(-(-layer.phases // layer.replicas) for layer in layers)
    assert summary["pipeline_period"] < max(layer.phases for layer in layers)
    sites = [(x.tile, x.slot) for x in netlist.crossbars]
    sites += [(t, s) for x in netlist.crossbars for t, s, _ in x.replica_sites]
    assert len(sites) == len(set(sites)) == summary["crossbars_with_replicas"]
    per_tile = compiled.target.hierarchy.crossbars_per_tile
    assert all(s < per_tile for _, s in sites)
    provenance = netlist.doc.provenance
    assert provenance["replicate-layers"]["status"] == "OPTIMAL"
    assert {"objective", "bound", "gap", "method"} <= set(provenance["replicate-layers"])
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel < 1e-5


def test_replication_is_not_in_the_default_pipeline():
    for name in ("default", "semi-folded", "fully-unfolded", "fully-folded"):
        assert "replicate-layers" not in [p.name for p in resolve_pipeline(name)]
    with pytest.raises(CompileError) as err:  # it needs a mapped program
        PassManager([ReplicateLayersPass()]).check({"xbar"}, "xbar")
    assert err.value.code == "XB603"
