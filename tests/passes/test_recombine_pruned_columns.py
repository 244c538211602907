"""``recombine-pruned-columns``: surviving output channels re-packed per input group (background §1.3, 1.8).

The crossbar count equals the column-grain group count of the plan, the program verifier accepts the
layout, the netlist carries the column tables and the fan-in, and the emulator reproduces the pruned
model in ideal and integer modes; a tampered table is refused (XB350). A layer whose conv groups share
crossbars (depthwise) drops its all-zero groups and re-packs the rest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import xbcompiler as xb
from passes.recombine_pruned_columns import RecombinePrunedColumnsPass
from tests.models import MODELS
from tests.passes.harness import check_golden, make_context
from xbcompiler.diagnostics import CompileError
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.printer import print_ir
from xbcompiler.pipeline import PassManager, VerifyEach, resolve_pipeline
from xbcompiler.prune.flow import PRUNED_PIPELINES
from xbcompiler.prune.plan_groups import plan_groups

T64 = xb.load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
PIPELINE = PRUNED_PIPELINES["semi-folded"]


def prune_random(model: nn.Module, x, sparsity: float, seed: int = 0, grain: str = "column") -> int:
    """Zero random groups of every layer in place; returns the crossbars the group sets predict."""
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    total = 0
    with torch.no_grad():
        for g in plan_groups(model, x, T64, grain=grain):
            gs = g.group_set
            keep = gs.project(torch.rand(gs.n_groups, generator=gen), gs.n_keep(sparsity))
            params[g.param].mul_(gs.mask(keep))
            total += gs.crossbars(keep)
    return total


@pytest.fixture(scope="module")
def pruned_resnet():
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    expected = prune_random(model, x, 0.6)
    return model, x, expected, xb.compile(model, x, T64, PIPELINE)


def test_crossbars_equal_the_group_count(pruned_resnet):
    _, x, expected, compiled = pruned_resnet
    dense = xb.compile(MODELS["resnet_digits"].build(), x, T64, "semi-folded")
    assert compiled.summary["crossbars"] == expected < dense.summary["crossbars"]
    report = compiled.report["recombine-pruned-columns"]
    assert report["crossbars_before"] == dense.summary["crossbars"] and report["crossbars"] == expected
    assert set(report["layers"]) == {layer.name for layer in compiled.netlist.layers}


def test_pruned_netlist_verifies_in_ideal_and_integer_modes(pruned_resnet, tmp_path):
    model, x, _, compiled = pruned_resnet
    compiled.save(tmp_path)
    assert xb.verify(tmp_path, model, x).ok
    quantised = xb.compile(model, x, T64, PIPELINE, calibration=torch.randn(16, *x.shape[1:]))
    report = xb.verify(quantised, model, x)
    assert report.ok and sum(c.mismatches for c in report.layers) == 0


def test_column_tables_and_fanin(pruned_resnet):
    model, _, _, compiled = pruned_resnet
    layer = compiled.netlist.layer("layers_2_conv2")
    weight = dict(model.named_parameters())["layers.2.conv2.weight"].detach()
    kin, kout = layer.kin, layer.kout
    alive = np.stack([(weight[:, a:a + kin] != 0).flatten(1).any(1).numpy() for a in range(0, 64, kin)])
    assert layer.fanin == alive.sum(0).tolist()
    assert layer.partial_sum_fanin == max(layer.fanin)
    xbars = compiled.netlist.layer_crossbars(layer)
    for x in xbars:
        channels = [c for c in x.column_channels if c >= 0]
        assert 0 < len(channels) <= kout and channels == sorted(channels)
        a = x.blocks[0].channels[0] // kin
        assert all(alive[a, c] for c in channels)
    # each input group's survivors, slice 0, are exactly the channels of its crossbars
    for a in range(alive.shape[0]):
        held = [c for x in xbars for c in x.column_channels
                if c >= 0 and x.blocks[0].slice == 0 and x.blocks[0].channels[0] == a * kin]
        assert held == np.flatnonzero(alive[a]).tolist()


def test_tampered_column_table_is_refused(pruned_resnet, tmp_path):
    _, _, _, compiled = pruned_resnet
    compiled.save(tmp_path / "n")
    doc = json.loads((tmp_path / "n" / "netlist.json").read_text())
    layer = compiled.netlist.layer("layers_2_conv2")
    x = doc["crossbars"][layer.first_crossbar]
    x["column_channels"] = x["column_channels"][::-1]
    (tmp_path / "n" / "netlist.json").write_text(json.dumps(doc))
    with pytest.raises(CompileError) as err:
        xb.load_netlist(tmp_path / "n")
    assert err.value.code == "XB350"


def test_dense_model_is_left_alone():
    case = MODELS["vgg_digits"]
    model, x = case.build(), case.example_input()
    with_pass = xb.compile(model, x, T64, PIPELINE)
    without = xb.compile(model, x, T64, "semi-folded")
    assert with_pass.summary["crossbars"] == without.summary["crossbars"]
    assert with_pass.report["recombine-pruned-columns"]["layers"] == {}
    assert not any(layer.fanin is not None for layer in with_pass.netlist.layers)


def test_whole_input_group_pruned_and_crossbar_grain():
    """Crossbar-grain blocks are a special case; an input group with no survivor takes no crossbar."""
    case = MODELS["vgg_digits"]
    model, x = case.build(), case.example_input()
    expected = prune_random(model, x, 0.5, seed=3, grain="crossbar")
    with torch.no_grad():
        dict(model.named_parameters())["features.17.weight"][:, :7] = 0  # input group 0 of the last conv
    compiled = xb.compile(model, x, T64, PIPELINE)
    layer = compiled.netlist.layer("features_17")
    xbars = compiled.netlist.layer_crossbars(layer)
    assert not any(b.channels[0] == 0 for xbar in xbars for b in xbar.blocks)
    assert compiled.summary["crossbars"] <= expected
    assert xb.verify(compiled, model, x).ok


def test_golden_dump():
    """Our printer's dump of a tiny pruned conv before and after the pass."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight[[0, 2, 3], :2] = 0  # slabs (o, a=0) of outputs 0, 2, 3
        model[0].weight[5, 2:] = 0  # slab (5, a=1)
    x = torch.randn(1, 4, 4, 4)
    tiny = xb.load_target("tiny")
    ctx = make_context((x,), tiny)  # verify-each runs the built-in verifier against 'tiny'
    prefix = [p for p in resolve_pipeline("fold-batchnorm,lower-im2col,lower-to-xbar,map-semi-folded")]
    program = PassManager(prefix, [VerifyEach()]).run(trace(model, (x,)), ctx, stage="graph")
    after = PassManager([RecombinePrunedColumnsPass()], [VerifyEach()]).run(program, ctx, stage="xbar")
    text = ("# conv 4->6 on 'tiny' (kin=1, kout=2): outputs 0, 2, 3 lose input channels 0-1, output 5 loses 2-3\n"
            "--- before\n"
            + print_ir(program) + "\n--- after\n" + print_ir(after) + "\n")
    check_golden("pruned-recombine-pruned-columns", text)  # XB_UPDATE_GOLDEN=1 (re)writes it, nothing else does
    assert len(after.layer_crossbars("_0")) < len(program.layer_crossbars("_0"))


def test_packed_conv_groups_leave_their_crossbars():
    """All-zero groups of a depthwise layer (groups packed block-diagonally) take no crossbar; the
    survivors re-pack, and a group with only some zero weights keeps its whole block."""
    from tests.test_prune_plan_groups import depthwise_net

    model, x = depthwise_net(), torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    dense = xb.compile(model, x, T64, "semi-folded")
    per = dense.netlist.layer("_2").groups_per_crossbar
    dead = [0, 3, 4, 5, 9, 10, 15]
    with torch.no_grad():
        model[2].weight[dead] = 0
        model[2].weight[1, 0, 0] = 0  # group 1 keeps its block
    compiled = xb.compile(model, x, T64, PIPELINE)
    layer = compiled.netlist.layer("_2")
    held = [b.group for xbar in compiled.netlist.layer_crossbars(layer) for b in xbar.blocks]
    assert held == [g for g in range(16) if g not in dead]
    before = compiled.report["recombine-pruned-columns"]["layers"]["_2"]
    assert before["crossbars"] == -(-9 // per) < before["crossbars_before"] == -(-16 // per)
    assert before["pruned_weights"] == len(dead) * 9
    assert compiled.summary["crossbars"] < dense.summary["crossbars"]
    assert xb.verify(compiled, model, x).ok
    quantised = xb.compile(model, x, T64, PIPELINE, calibration=torch.randn(16, *x.shape[1:]))
    report = xb.verify(quantised, model, x)
    assert report.ok and report.exact
    integer = xb.emulate(quantised, x, mode="integer")
    assert integer.abs().max() > 0
    assert torch.equal(xb.emulate(xb.program(quantised, seed=3), x), integer)  # an ideal device agrees
