"""Pruning groups derived from the mapping plan (docs/pruning.md, "Groups from the mapping plan")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.prune import column_groups, crossbar_curve
from xbcompiler.prune.plan_groups import plan_groups

T64 = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})


@pytest.fixture(scope="module")
def resnet():
    case = MODELS["resnet_digits"]
    return case.build(), case.example_input()


def _target(spec):
    return xb.load_target(*spec) if isinstance(spec, tuple) else xb.load_target(spec)


@pytest.mark.parametrize("grain,pipeline", [("column", "semi-folded"), ("crossbar", "semi-folded"),
                                            ("kernel", "fully-folded"), ("tile", "fully-folded")])
def test_groups_cover_the_plan(resnet, grain, pipeline):
    model, x = resnet
    layers = plan_groups(model, x, _target(T64), pipeline=pipeline, grain=grain)
    params = dict(model.named_parameters())
    assert [g.layer for g in layers][:2] == ["stem_0", "layers_0_conv1"]
    for g in layers:
        gs = g.group_set
        assert gs.param == g.param and tuple(gs.labels.shape) == tuple(params[g.param].shape)
        assert gs.crossbars(torch.ones(gs.n_groups, dtype=torch.bool)) == g.plan.crossbars  # dense count
        assert gs.crossbars(torch.zeros(gs.n_groups, dtype=torch.bool)) == 0


def test_groups_change_with_the_target(resnet):
    model, x = resnet
    small = {g.layer: g for g in plan_groups(model, x, _target(T64))}
    large = {g.layer: g for g in plan_groups(model, x, _target("isaac-like"))}
    conv = "layers_2_conv2"
    assert (small[conv].plan.kin, small[conv].plan.kout) == (7, 8)
    assert (large[conv].plan.kin, large[conv].plan.kout) == (14, 16)
    assert small[conv].group_set.n_groups == 64 * 10 and large[conv].group_set.n_groups == 64 * 5
    assert not torch.equal(small[conv].group_set.labels, large[conv].group_set.labels)


def test_grain_must_match_the_strategy(resnet):
    model, x = resnet
    with pytest.raises(ValueError, match="fully-folded"):
        plan_groups(model, x, _target(T64), pipeline="semi-folded", grain="kernel")


def test_crossbar_count_is_monotone_in_sparsity(resnet):
    model, x = resnet
    params = dict(model.named_parameters())
    for grain in ("column", "crossbar"):
        for g in plan_groups(model, x, _target(T64), grain=grain):
            gs = g.group_set
            ratios = np.linspace(0, 1, 21)
            counts = []
            for r in ratios:
                keep = gs.project(gs.norms(params[g.param]), gs.n_keep(float(r)))
                assert int(keep.sum()) == gs.n_keep(float(r))  # exact sparsity
                counts.append(gs.crossbars(keep))
            assert counts == sorted(counts, reverse=True), (g.layer, grain)
            curve = crossbar_curve(gs, gs.norms(params[g.param]))
            assert [curve.crossbars(float(r)) for r in ratios] == counts


def test_aligned_projection_fills_whole_crossbars():
    gen = torch.Generator().manual_seed(0)
    shape = (16, 12, 3, 3)
    plain = column_groups("w", shape, kin=4, kout=4, n_w=2)
    aligned = column_groups("w", shape, kin=4, kout=4, n_w=2, aligned=True)
    for _ in range(20):
        scores = torch.rand(plain.n_groups, generator=gen)
        for s in range(plain.n_groups + 1):
            keep = aligned.project(scores, s)
            assert int(keep.sum()) == s
            assert aligned.crossbars(keep) == 2 * -(-s // 4)  # at most one partly filled crossbar
            assert aligned.crossbars(keep) <= plain.crossbars(plain.project(scores, s))
        # the whole-crossbar projection keeps the most energy any choice of that many crossbars keeps
        energy = scores.double() ** 2
        by_bin = [np.sort(energy[plain.cost.bins == b].numpy())[::-1] for b in range(plain.cost.n_bins)]
        chunks = sorted((c[i:i + 4].sum() for c in by_bin for i in range(0, len(c), 4)), reverse=True)
        keep = aligned.project(scores, 8)
        assert float(energy[keep].sum()) == pytest.approx(sum(chunks[:2]))


def depthwise_net() -> torch.nn.Module:
    """Pointwise, a depthwise 3x3 whose 16 groups pack 3 to a 64x64 crossbar, pointwise."""
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
                         nn.Conv2d(16, 8, 1)).eval()


@pytest.mark.parametrize("grain", ["column", "crossbar"])
def test_packed_conv_groups_are_pruned_whole(grain):
    """A layer whose conv groups share crossbars is pruned by whole conv groups: ``ceil(kept / P)`` crossbars."""
    model, x = depthwise_net(), torch.randn(1, 3, 4, 4)
    layers = {g.layer: g for g in plan_groups(model, x, _target(T64), grain=grain)}
    dw = layers["_2"]
    gs, per = dw.group_set, dw.plan.groups_per_crossbar
    assert per > 1 and gs.key_names == ("g",) and gs.n_groups == 16
    assert gs.labels[:, 0, 0, 0].tolist() == list(range(16))  # output channel o is conv group o
    gen = torch.Generator().manual_seed(1)
    for s in range(17):
        keep = gs.project(torch.rand(16, generator=gen), s)
        assert gs.crossbars(keep) == dw.plan.n_w * -(-s // per)
