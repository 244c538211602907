"""Channels pruning has emptied, folded into their 1x1 consumers and packed out of their crossbars
(docs/pruning.md, "Dead channels folded into their consumers")."""

from __future__ import annotations

import torch

import xbcompiler as xb
from tests.data.prune_models import gated_inverted_residual, inverted_residual
from xbcompiler.prune.dead_channels import fold_dead_channels

T64 = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})


def _emptied(dead_producer_only=(), dead_depthwise_only=()) -> torch.nn.Module:
    """The inverted-residual net with random BatchNorms and every even expansion channel pruned (producer
    and depthwise), plus channels emptied in the producer or the depthwise layer alone."""
    model = inverted_residual().eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in (model.block1, model.block2):
            for bn in (block[1], block[4], block[7]):
                bn.running_mean.copy_(torch.rand(bn.num_features, generator=gen) * 2 - 1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_(torch.rand(bn.num_features, generator=gen) * 2 - 1)
            block[0].weight[::2] = 0
            block[3].weight[::2] = 0
        model.block2[0].weight[list(dead_producer_only)] = 0
        model.block2[3].weight[list(dead_depthwise_only)] = 0
    return model


def test_folding_keeps_the_function_and_packs_the_dead_channels_last():
    model = _emptied(dead_producer_only=[3], dead_depthwise_only=[1])
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = model(x).detach()
    report = fold_dead_channels(model, x)
    assert [(r.producers, r.channels, r.dead) for r in report] == [(("block1.0",), 32, 16), (("block2.0",), 32, 16)]
    assert torch.allclose(model(x), before, atol=1e-5)
    other = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # inputs the pass never saw
    reference = _emptied(dead_producer_only=[3], dead_depthwise_only=[1])
    assert torch.allclose(model(other), reference(other), atol=1e-5)
    for block in (model.block1, model.block2):
        read = block[6].weight.flatten(1).ne(0).any(0)  # projection: input channels still read
        assert read[:16].all() and not read[16:].any()
        assert block[0].weight[16:].eq(0).all() and block[3].weight[16:].eq(0).all()
        assert block[6].bias is not None
    # a channel emptied in the producer alone (depthwise border effects) or in the depthwise layer alone
    # (the producer still varies) is not constant: it stays where the consumer reads it
    produced = model.block2[0].weight.flatten(1).ne(0).any(1)
    assert produced[:16].tolist().count(False) == 1


def test_a_model_with_nothing_emptied_is_left_alone():
    model = inverted_residual().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_dead_channels(model, torch.rand(4, 1, 8, 8)) == []
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_folded_channels_free_the_consumers_crossbars():
    """On 16-row crossbars the projection reads its 32 expansion channels in two input groups; the 16
    folded channels fill one of them, whose crossbars go."""
    target = xb.load_target("isaac-like", {"crossbar.rows": 16, "crossbar.cols": 64})
    x = torch.rand(1, 1, 8, 8)
    model = _emptied()
    before = xb.compile(model, x, target, "semi-folded-pruned")
    fold_dead_channels(model, torch.rand(16, 1, 8, 8))
    after = xb.compile(model, x, target, "semi-folded-pruned")
    assert after.summary["crossbars"] < before.summary["crossbars"]
    assert xb.verify(after, model, torch.rand(2, 1, 8, 8)).ok


def test_the_flow_reports_the_folded_spaces_and_can_skip_them():
    from xbcompiler.datasets import digits
    from xbcompiler.prune.flow import PRUNED_PIPELINES, PruneSettings, holdout, prune_classifier

    d = digits(0)
    train, val = holdout(d.x_train, d.y_train, 0.2, 0)
    target = xb.load_target("isaac-like", {"crossbar.rows": 16, "crossbar.cols": 64})
    counts = {}
    for fold in (True, False):
        model = inverted_residual().eval()
        s = PruneSettings(epochs=1, relax_epochs=0, sparsity=0.5, progress=False, fold_dead_channels=fold)
        outcome = prune_classifier(model, target, train, val, s)
        assert bool(outcome.dead_channels) is fold
        pruned = xb.compile(model, d.x_train[:1], target, PRUNED_PIPELINES["semi-folded"])
        assert pruned.summary["crossbars"] == outcome.crossbars  # the table counts what the netlist holds
        assert xb.verify(pruned, model, d.x_test[:4]).ok
        counts[fold] = outcome.crossbars
    # at one sparsity for every layer the projection has already dropped whole crossbars of its own, so
    # the folded rows free nothing more here (the search's allocations leave projections denser)
    assert counts[True] <= counts[False]


def test_a_gated_space_folds_only_the_channels_its_gate_lost_too():
    """Behind a squeeze-and-excitation gate the depthwise output and the gated product both belong to the
    space: a channel is constant only where expansion, depthwise layer and gate are all emptied; each
    consumer (the squeeze convolution and the projection) takes its own constant."""

    def emptied():
        model = gated_inverted_residual().eval()
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for bn in (model.expand[1], model.depthwise[1]):
                bn.running_mean.copy_(torch.rand(bn.num_features, generator=gen) * 2 - 1)
                bn.bias.copy_(torch.rand(bn.num_features, generator=gen) * 2 - 1)
            model.expand[0].weight[:12] = 0
            model.depthwise[0].weight[:12] = 0
            model.excite.weight[4:16] = 0  # the gate is constant on channels 4-15 only
        return model

    model = emptied()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    report = fold_dead_channels(model, x)
    assert [(set(r.producers), r.channels, r.dead) for r in report] == [({"expand.0", "excite"}, 32, 8)]
    other = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model(other), emptied()(other), atol=1e-5)
    assert not model.project[0].weight.flatten(1).ne(0).any(0)[24:].any()
    assert not model.squeeze.weight.flatten(1).ne(0).any(0)[24:].any()


def test_a_space_is_packed_only_when_packing_frees_crossbars():
    """Four dead channels fill no input group of the projection (two groups of 16 on 16-row crossbars),
    whose slabs ``W[o, I_a]`` are pruned alternately (outputs 0-7 read group 0, outputs 8-15 group 1):
    packing would mix both groups' rows and revive the pruned slabs, so with ``cost`` the channels are
    folded in place; without it they move and the projection takes more crossbars."""
    from xbcompiler.prune.plan_groups import crossbars_read_off, plan_groups

    target = xb.load_target("isaac-like", {"crossbar.rows": 16, "crossbar.cols": 64})
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def emptied():
        model = _emptied()
        with torch.no_grad():
            model.block2[0].weight[:] = torch.rand_like(model.block2[0].weight) + 0.1  # undo the even channels
            model.block2[3].weight[:] = torch.rand_like(model.block2[3].weight) + 0.1
            model.block2[0].weight[:4] = 0
            model.block2[3].weight[:4] = 0
            project = model.block2[6].weight
            project[:8, 16:] = 0
            project[8:, :16] = 0
        return model

    model, groups = emptied(), plan_groups(emptied(), x[:1], target)
    dense = crossbars_read_off(model, groups)
    report = fold_dead_channels(model, x, cost=lambda m: crossbars_read_off(m, groups))
    packed = {r.producers: r.packed for r in report}
    assert packed[("block2.0",)] is False and packed[("block1.0",)] is True
    assert crossbars_read_off(model, groups) < dense  # block1's packing still frees its group
    assert torch.allclose(model(x), emptied()(x), atol=1e-5)
    assert model.block2[6].weight[:, :4].eq(0).all()  # folded where they stand
    blind = emptied()
    fold_dead_channels(blind, x)
    assert crossbars_read_off(blind, groups) > crossbars_read_off(model, groups)
    pruned = [xb.compile(m, x[:1], target, "semi-folded-pruned").summary["crossbars"] for m in (model, blind)]
    assert pruned[0] < pruned[1]
