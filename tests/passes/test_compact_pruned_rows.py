"""``compact-pruned-rows``: kernel-group and tile pruning on the fully-folded mapping (CRIMP, background §3.3).

Row compaction gives the crossbar count the kernel/tile groups predict, the netlist carries the
static input gathers and the pruned adder tree, and the emulator reproduces the pruned model in ideal
and integer modes.
"""

from __future__ import annotations

import pytest
import torch

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.prune.flow import PRUNED_PIPELINES
from xbcompiler.prune.plan_groups import plan_groups

T64 = xb.load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
PIPELINE = PRUNED_PIPELINES["fully-folded"]


@pytest.mark.parametrize("grain", ["kernel", "tile"])
def test_compaction_counts_and_verifies(grain):
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    layers = plan_groups(model, x, T64, pipeline="fully-folded", grain=grain)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(1)
    expected = 0
    with torch.no_grad():
        for g in layers:
            gs = g.group_set
            keep = gs.project(torch.rand(gs.n_groups, generator=gen), gs.n_keep(0.5))
            params[g.param].mul_(gs.mask(keep))
            expected += gs.crossbars(keep)
    compiled = xb.compile(model, x, T64, PIPELINE)
    assert compiled.summary["crossbars"] == expected < sum(g.dense_crossbars for g in layers)
    assert xb.verify(compiled, model, x).ok
    quantised = xb.compile(model, x, T64, PIPELINE, calibration=torch.randn(8, *x.shape[1:]))
    report = xb.verify(quantised, model, x)
    assert report.ok and sum(c.mismatches for c in report.layers) == 0

    layer = compiled.netlist.layer("layers_2_conv2")
    weight = params["layers.2.conv2.weight"].detach().reshape(64, -1)  # [C_out, K], rows (c, dy, dx)
    xbars = compiled.netlist.layer_crossbars(layer)
    for xbar in xbars:
        rows = [r for r in xbar.row_inputs if r >= 0]
        cols = [c for c in xbar.column_channels if c >= 0]
        assert len(rows) <= 64 and rows == sorted(rows)  # the static gather
        assert (weight[cols][:, rows] != 0).any(0).all()  # only rows with a weight are driven
    tiles = {tuple(xbar.column_channels) for xbar in xbars}
    for cols in tiles:  # the adder tree: one partial sum per remaining crossbar of the column tile
        n = sum(tuple(xbar.column_channels) == cols for xbar in xbars)
        assert all(layer.fanin[c] == n for c in cols)
