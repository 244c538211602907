"""Depthwise layers tied to their producer (docs/pruning.md, "Depthwise layers tied to their producer")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xbcompiler as xb
from tests.data.prune_models import gated_inverted_residual, inverted_residual
from xbcompiler.prune.groups import Follow, column_groups, conv_group_groups, tie_keep
from xbcompiler.prune.lgd import LGDPruner
from xbcompiler.prune.plan_groups import plan_groups
from xbcompiler.prune.ties import tie_depthwise

T64 = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})


def _net() -> nn.Module:
    return inverted_residual().eval()


def _groups(model, **options):
    return plan_groups(model, torch.randn(1, 1, 8, 8), xb.load_target(*T64), **options)


def test_follow_keeps_a_channel_while_any_leader_group_on_it_is_kept():
    leader = column_groups("a", (6, 10, 1, 1), kin=4, kout=2)  # 3 input groups per output channel
    follower = conv_group_groups("b", (6, 1, 3, 3), groups=6, per_crossbar=3)
    follow = Follow("a", leader.keys[:, 0], follower.keys[:, 0])
    keep = torch.zeros(leader.n_groups, dtype=torch.bool)
    keep[[0, 1 * 3 + 2, 5 * 3 + 1]] = True  # channel 0 (slab a=0), channel 1 (a=2), channel 5 (a=1)
    assert follow.keep(keep).tolist() == [True, True, False, False, False, True]
    tied = follower.__class__(**{**follower.__dict__, "follows": follow})
    out = tie_keep([leader, tied], [keep, torch.ones(6, dtype=torch.bool)])
    assert out[0] is keep and out[1].tolist() == [True, True, False, False, False, True]
    alone = tie_keep([tied], [torch.ones(6, dtype=torch.bool)])  # the leader is not in this run: untouched
    assert alone[0].all()


def test_tie_depthwise_ties_depthwise_layers_to_their_single_producer():
    model = _net()
    groups = {g.layer: g for g in tie_depthwise(model, torch.randn(1, 1, 8, 8), _groups(model))}
    tied = {name: g.group_set.follows.leader for name, g in groups.items() if g.group_set.follows is not None}
    assert tied == {"block1_3": "block1.0.weight", "block2_3": "block2.0.weight"}
    # the depthwise layer on the residual sum has two producers (stem and block1's projection): untied
    assert "on_sum" in groups and groups["on_sum"].group_set.follows is None


def test_tie_depthwise_leaves_crossbar_grain_and_untraceable_models_alone():
    model = _net()
    crossbar = _groups(model, grain="crossbar")
    assert all(g.group_set.follows is None for g in tie_depthwise(model, torch.randn(1, 1, 8, 8), crossbar))

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.inner = _net()

        def forward(self, x):
            return self.inner(x) if x.sum() > 0 else -self.inner(x)

    groups = _groups(model)
    assert tie_depthwise(Branchy(), torch.randn(1, 1, 8, 8), groups) == groups


def test_a_tied_depthwise_layer_is_masked_channel_for_channel_with_its_producer():
    model = _net()
    groups = {g.layer: g for g in tie_depthwise(model, torch.randn(1, 1, 8, 8), _groups(model))}
    lead, dw = groups["block1_0"].group_set, groups["block1_3"].group_set
    pruner = LGDPruner(model, [lead, dw], {lead.param: 0.5, dw.param: 0.0}, t_relax=0)
    keep = pruner.keep()
    alive = np.zeros(32, dtype=bool)
    alive[lead.keys[keep[lead.param].numpy(), 0]] = True
    assert 0 < alive.sum() < 32 and keep[dw.param].numpy().tolist() == alive.tolist()
    weight = dict(model.named_parameters())[dw.param].detach()
    assert (weight[~torch.from_numpy(alive)] == 0).all() and (weight[torch.from_numpy(alive)] != 0).any()


def test_a_gate_on_the_depthwise_output_does_not_untie_it():
    """A squeeze-and-excitation gate multiplying the depthwise output joins its 1x1 convolution to the
    space (two producers), but the depthwise layer's input still has one: tied."""
    from xbcompiler.prune.channels import model_spaces

    model, x = gated_inverted_residual().eval(), torch.randn(1, 1, 8, 8)
    cs = model_spaces(model, x)
    space = next(cs.space(r) for r in cs.roots() if "expand.0" in cs.space(r).producers)
    assert sorted(space.producers) == ["excite", "expand.0"]
    assert cs.depthwise_inputs == {"depthwise.0": ("expand.0",)}
    groups = {g.layer: g for g in tie_depthwise(model, x, _groups(model))}
    assert groups["depthwise_0"].group_set.follows.leader == "expand.0.weight"


def _pruned(tie: bool, factory=inverted_residual, **settings):
    from xbcompiler.datasets import Split, digits, train_classifier
    from xbcompiler.prune.flow import PruneSettings, holdout, prune_classifier

    d = digits(0)
    train, val = holdout(d.x_train, d.y_train, 0.2, 0)
    model = train_classifier(factory().train(), Split(*train, d.x_test, d.y_test), epochs=2)
    s = PruneSettings(epochs=1, relax_epochs=1, progress=False, tie_depthwise=tie, **settings)
    outcome = prune_classifier(model, xb.load_target(*T64), train, val, s)
    return model, outcome, d


@pytest.mark.parametrize("tie", [True, False])
def test_pruning_with_ties_keeps_the_followers_channels_and_verifies(tie):
    from xbcompiler.prune.flow import PRUNED_PIPELINES

    model, outcome, d = _pruned(tie, sparsity=0.5)
    rows = {r.layer: r for r in outcome.layers}
    params = dict(model.named_parameters())
    lead, dw = params["block2.0.weight"].detach(), params["block2.3.weight"].detach()
    alive = lead.flatten(1).ne(0).any(1)
    assert 0 < int(alive.sum()) < 32
    if tie:  # the depthwise channels are exactly the producer's surviving channels
        assert rows["block2_3"].follows == "block2_0" and rows["block2_3"].kept == int(alive.sum())
        assert torch.equal(dw.flatten(1).ne(0).any(1), alive)
    else:  # pruned at its own sparsity, on its own channels
        assert rows["block2_3"].follows is None and rows["block2_3"].kept == 16
    assert rows["on_sum"].follows is None
    pipeline = PRUNED_PIPELINES["semi-folded"]
    example = d.x_train[:1]
    pruned = xb.compile(model, example, xb.load_target(*T64), pipeline)
    assert pruned.summary["crossbars"] == outcome.crossbars
    assert xb.verify(pruned, model, d.x_test[:4]).ok
    quantised = xb.compile(model, example, xb.load_target(*T64), pipeline, calibration=d.x_train[:64])
    assert xb.verify(quantised, model, d.x_test[:4]).exact


def test_a_gated_depthwise_layer_prunes_with_its_expansion_and_verifies():
    from xbcompiler.prune.flow import PRUNED_PIPELINES

    model, outcome, d = _pruned(True, gated_inverted_residual, sparsity=0.5)
    rows = {r.layer: r for r in outcome.layers}
    params = dict(model.named_parameters())
    alive = params["expand.0.weight"].detach().flatten(1).ne(0).any(1)
    assert rows["depthwise_0"].follows == "expand_0" and 0 < int(alive.sum()) < 32
    assert torch.equal(params["depthwise.0.weight"].detach().flatten(1).ne(0).any(1), alive)
    gated = [dc for dc in outcome.dead_channels if "expand.0" in dc.producers]
    assert all(set(dc.producers) == {"expand.0", "excite"} for dc in gated)  # folded only where the gate is dead too
    example = d.x_train[:1]
    pipeline = PRUNED_PIPELINES["semi-folded"]
    quantised = xb.compile(model, example, xb.load_target(*T64), pipeline, calibration=d.x_train[:64])
    assert quantised.summary["crossbars"] == outcome.crossbars
    assert xb.verify(quantised, model, d.x_test[:4]).exact


def test_the_search_prices_a_leader_with_its_followers():
    _, outcome, _ = _pruned(True, max_drop=3.0, ratios=(0.5,))
    k = outcome.knapsack
    searched = {layer.layer: layer for layer in k.layers}
    assert "block1_3" not in searched and "block2_3" not in searched and "on_sum" in searched
    rows = {r.layer: r for r in outcome.layers}
    for leader, follower in (("block1_0", "block1_3"), ("block2_0", "block2_3")):
        assert searched[leader].dense_crossbars == rows[leader].crossbars_dense + rows[follower].crossbars_dense
    pruned = [layer for layer, r in k.final.allocation.ratios if r > 0]
    for leader, follower in (("block1_0", "block1_3"), ("block2_0", "block2_3")):
        assert (rows[follower].kept < rows[follower].groups) == (leader in pruned and rows[leader].kept
                                                                 < rows[leader].groups)


@pytest.mark.parametrize("flag", [[], ["--no-tie-depthwise"], ["--no-fold-dead-channels"]])
def test_xbc_prune_reports_ties_and_folded_channels(tmp_path, flag):
    import json
    from pathlib import Path

    from xbcompiler.cli import main

    models = Path(__file__).resolve().parent / "data" / "prune_models.py"
    out = tmp_path / "x"
    status = main(["prune", f"{models}:inverted_residual", "--target", "isaac-like", "--set", "crossbar.rows=64",
                   "--set", "crossbar.cols=64", "--train-epochs", "1", "--epochs", "1", "--relax-epochs", "1",
                   "--sparsity", "0.5", "-o", str(out), "--quiet", *flag])
    summary = json.loads((out / "prune.json").read_text())
    assert status == 0 and summary["verify_ok"] and summary["verify_integer_exact"]
    untied, unfolded = "--no-tie-depthwise" in flag, "--no-fold-dead-channels" in flag
    assert summary["settings"]["tie_depthwise"] is not untied
    assert summary["settings"]["fold_dead_channels"] is not unfolded
    follows = {r["layer"]: r["follows"] for r in summary["layers"] if r["follows"]}
    assert follows == ({} if untied else {"block1_3": "block1_0", "block2_3": "block2_0"})
    assert (summary["dead_channels"] == []) is unfolded
    assert all(set(d) == {"producers", "channels", "dead", "packed"} and d["dead"] > 0
               for d in summary["dead_channels"])


def test_every_depthwise_layer_of_pytorchcv_mobilenetv2_follows_its_expansion():
    """The architecture the ties were made for (docs/pruning.md): 17 depthwise layers, each tied to the 1x1
    expansion convolution of its block."""
    from examples.pytorchcv_models import mobilenetv2

    model = mobilenetv2().eval()
    x = torch.randn(1, 3, 32, 32)
    groups = tie_depthwise(model, x, plan_groups(model, x, xb.load_target("isaac-like")))
    tied = {g.param: g.group_set.follows.leader for g in groups if g.group_set.follows is not None}
    assert len(tied) == 17
    assert all(f.endswith("conv2.conv.weight") and leader == f.replace("conv2", "conv1") for f, leader in tied.items())


@pytest.mark.parametrize("factory", ["mobilenetv3", "mnasnet_small"])
def test_depthwise_layers_gated_by_squeeze_and_excitation_are_tied_too(factory):
    """MobileNetV3 and MnasNet multiply depthwise outputs by squeeze-and-excitation gates: every depthwise
    layer still follows the one convolution that feeds it."""
    if factory == "mobilenetv3":
        from examples.pytorchcv_models import mobilenetv3 as build
    else:
        from pytorchcv.models.mnasnet import mnasnet_small

        def build():
            net = mnasnet_small(pretrained=False, in_size=(32, 32), num_classes=10)
            net.features.final_pool = nn.AdaptiveAvgPool2d(1)
            return net

    model = build().eval()
    x = torch.randn(1, 3, 32, 32)
    groups = tie_depthwise(model, x, plan_groups(model, x, xb.load_target("isaac-like")))
    depthwise = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
                 and m.groups > 1 and m.groups == m.in_channels == m.out_channels}
    tied = {g.param: g.group_set.follows.leader for g in groups if g.group_set.follows is not None}
    assert set(tied) == depthwise and len(depthwise) >= 11
    assert not set(tied.values()) & depthwise
