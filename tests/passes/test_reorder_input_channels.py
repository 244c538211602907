"""``reorder-input-channels``: one function-preserving permutation per channel space (background §1.6).

Residual additions share one order, concatenations permute per segment, depthwise layers pass the
permutation through, grouped layers permute only within their groups, flatten expands a channel to
its features; outputs are unchanged, every permutation is a bijection, every solve reports status,
objective, bound and gap, and a failing solver falls back to the heuristic with XB230.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbcompiler as xb
from passes.reorder_input_channels import ReorderInputChannelsPass
from tests.models import MODELS
from xbcompiler.diagnostics import XBWarning
from xbcompiler.frontend.trace import trace
from xbcompiler.pipeline import NumericCheck, PassContext, PassManager, VerifyEach
from xbcompiler.prune import reorder_solve
from xbcompiler.prune.channels import channel_spaces
from xbcompiler.prune.flow import PRUNED_PIPELINES
from xbcompiler.prune.reorder_pass import reorder_model

T64 = xb.load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})


class Mixed(nn.Module):
    """Residual add, depthwise, grouped, concat, flatten and mean in one small net on 3x8x8."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c3 = nn.Conv2d(16, 6, 1)
        self.g = nn.Conv2d(16, 32, 3, padding=1, groups=2)
        self.c4 = nn.Conv2d(38, 16, 3, padding=1)
        self.c5 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.c1(x)))
        z = self.c2(y) + y
        d = self.dw(z)
        h = torch.cat([self.c3(F.relu(d)), F.relu(self.g(d))], 1)
        k = self.c4(h)
        u = F.relu(self.c5(k))
        return self.fc(torch.flatten(F.max_pool2d(k, 2), 1)) + self.fc2(u.mean((2, 3)))


def mixed():
    torch.manual_seed(0)
    model = Mixed()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
    return model.eval(), torch.randn(2, 3, 8, 8)


def run_pass(model, x, **options):
    gm = trace(model, (x,))
    ctx = PassContext(target=T64, example_inputs=(x,), check_inputs=(x[:1],), properties={"traced", "shapes"},
                      verify_ir=lambda ir: ir.graph.lint(), run_ir=lambda ir, inp: ir(*inp))
    gm = PassManager([ReorderInputChannelsPass(**options)], [VerifyEach(), NumericCheck()]).run(gm, ctx, stage="graph")
    return gm, ctx.report["reorder-input-channels"], ctx


def check_report(report):
    solved = [s for s in report["spaces"].values() if "objective" in s]
    assert solved
    for s in solved:
        assert sorted(s["perm"]) == list(range(s["channels"]))  # a bijection
        assert s["status"] in ("optimal", "feasible", "fallback")
        assert s["identity_objective"] - 1e-9 <= s["objective"] <= s["upper_bound"] + 1e-9
        assert 0.0 <= s["gap"] <= 1.0
    assert report["objective"] >= report["identity_objective"]
    return solved


def test_mixed_graph_spaces():
    model, x = mixed()
    cs = channel_spaces(trace(model, (x,)))
    by_producer = {p: cs.find(i) for i in range(len(cs.parent)) for p in cs.space(i).producers}
    assert by_producer["c1"] == by_producer["c2"]  # the residual add merges them
    merged = cs.space(by_producer["c1"])
    assert ("dw", 0) in merged.channelwise and ("bn1.weight", 0) in merged.channelwise  # pass-through
    assert merged.block == 8  # the grouped layer reads 8 channels per group
    assert cs.space(by_producer["g"]).pinned  # grouped outputs keep their order
    concat = next(c for c in cs.consumers if c.module == "c4")
    assert [(s.size, s.expand) for s in concat.segments] == [(6, 1), (32, 1)]
    fc = next(c for c in cs.consumers if c.module == "fc")
    assert [(s.size, s.expand) for s in fc.segments] == [(16, 16)]
    assert cs.space(by_producer["fc"]).pinned == cs.space(by_producer["fc2"]).pinned  # outputs added


@pytest.mark.parametrize("solver", ["heuristic", "ortools"])
def test_mixed_graph_keeps_its_outputs(solver):
    model, x = mixed()
    with torch.no_grad():
        ref = model(x)
    gm, report, _ = run_pass(model, x, solver=solver, time_limit_s=2, sparsity=0.6)
    with torch.no_grad():
        assert torch.allclose(gm(x), ref, atol=1e-5)
    solved = check_report(report)
    merged = report["spaces"]["c1,c2"]
    assert merged in solved and merged["consumers"] == ["g"]
    perm = np.asarray(merged["perm"])
    assert (perm // 8 == np.arange(16) // 8).all()  # within the grouped layer's groups
    assert report["spaces"]["c4"]["consumers"] == ["c5"] and report["permuted"] > 0


@pytest.mark.parametrize("name", ["resnet_digits", "densenet_small", "mobilenetv2_small"])
def test_zoo_models_keep_their_outputs(name):
    case = MODELS[name]
    model, x = case.build(), case.example_input()
    with torch.no_grad():
        ref = model(x)
    gm, report, _ = run_pass(model, x, solver="heuristic", time_limit_s=1)
    with torch.no_grad():
        assert torch.allclose(gm(x), ref, atol=1e-5 * float(ref.abs().max()))
    assert report["permuted"] > 0
    check_report(report)


def test_reorder_inside_the_pipeline_keeps_the_outputs():
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    pipeline = ("fold-batchnorm,reorder-input-channels{time-limit-s=2,seed=1},lower-im2col,lower-to-xbar,"
                "map-semi-folded,recombine-pruned-columns,place-tiles")
    compiled = xb.compile(model, x, T64, pipeline)
    report = compiled.report["reorder-input-channels"]
    assert report["permuted"] > 0 and report["objective"] > report["identity_objective"]
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)  # layers compute permuted channels


def test_reordered_model_verifies_in_ideal_and_integer_modes():
    """The library path: reorder the model itself, then compile; every layer matches the reordered model."""
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    with torch.no_grad():
        ref = model(x)
    report = reorder_model(model, x, T64, time_limit_s=2, seed=1)
    assert report["permuted"] > 0
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-5)
    pipeline = PRUNED_PIPELINES["semi-folded"]
    assert xb.verify(xb.compile(model, x, T64, pipeline), model, x).ok
    quantised = xb.compile(model, x, T64, pipeline, calibration=torch.randn(8, *x.shape[1:]))
    result = xb.verify(quantised, model, x)
    assert result.ok and sum(c.mismatches for c in result.layers) == 0


def test_solver_failure_falls_back_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no solver today")

    monkeypatch.setattr(reorder_solve, "solve", broken)
    case = MODELS["vgg_digits"]
    model, x = case.build(), case.example_input()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", XBWarning)
        _, report, ctx = run_pass(model, x, solver="ortools", time_limit_s=1)
    solved = check_report(report)
    assert all(s["status"] == "fallback" for s in solved)
    assert any("XB230" in str(w.message) for w in caught) and ctx.warnings


def test_the_search_only_improves_kept_importance():
    case = MODELS["vgg_digits"]
    model, x = case.build(), case.example_input()
    _, report, _ = run_pass(model, x, solver="ortools", time_limit_s=2, sparsity=0.7, grain="crossbar")
    for s in check_report(report):
        assert s["objective"] >= s["identity_objective"]
