"""Pruning groups, crossbar counts, LGD/RPP and zerorize-recover (background §1.3-1.5, 1.8, 3.3-3.4)."""

from __future__ import annotations

import itertools
from math import ceil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from xbcompiler.prune import (
    LGDPruner,
    ZerorizeRecover,
    column_groups,
    crossbar_curve,
    crossbar_groups,
    kernel_groups,
    prune_lgd,
    prune_zerorize,
    relaxed_keep,
    tile_groups,
    to_free_next,
    top_s,
)
from xbcompiler.prune.flow import distillation_loss
from xbcompiler.prune.train import run_schedule

# --- groups --------------------------------------------------------------------------------------------


def test_column_groups_are_slabs_with_tails():
    gs = column_groups("w", (5, 7, 3, 3), kin=3, kout=2, n_w=4)
    assert gs.n_groups == 5 * 3 and gs.key_names == ("o", "a")
    assert gs.sizes().tolist() == [27, 27, 9] * 5
    assert gs.labels[2, 6, 1, 1] == 2 * 3 + 2
    assert tuple(gs.keys[2 * 3 + 2]) == (2, 2)
    keep = torch.ones(15, dtype=torch.bool)
    assert gs.crossbars(keep) == 4 * 3 * ceil(5 / 2)  # dense: n_w * G_in * G_out


def test_crossbar_groups_are_blocks():
    gs = crossbar_groups("w", (10, 7, 3, 3), kin=3, kout=4, n_w=2)
    assert gs.n_groups == 3 * 3
    assert gs.sizes().tolist() == [108, 108, 36, 108, 108, 36, 54, 54, 18]
    label = int(gs.labels[9, 4, 0, 0])
    assert tuple(gs.keys[label]) == (1, 2)
    assert gs.crossbars(torch.ones(9, dtype=torch.bool)) == 18


def test_grouped_layers_keep_groups_inside_conv_groups():
    gs = crossbar_groups("w", (8, 4, 3, 3), kin=2, kout=2, groups=2)  # C_in = 8, 2 conv groups
    assert gs.n_groups == 2 * 2 * 2
    col = column_groups("w", (8, 4, 3, 3), kin=2, kout=2, groups=2)
    keep = torch.ones(col.n_groups, dtype=torch.bool)
    assert col.crossbars(keep) == 2 * 2 * 2  # per conv group: 2 input groups x ceil(4 / 2)
    assert len(np.unique(col.cost.bins)) == 4


def test_kernel_and_tile_groups():
    kg = kernel_groups("w", (10, 7, 3, 3), cols_per_tile=4, rows=16)
    assert kg.n_groups == 7 * 3 and tuple(kg.keys[7 + 2]) == (2, 1)
    assert int(kg.labels[5, 2, 0, 0]) == 1 * 7 + 2
    keep = torch.ones(kg.n_groups, dtype=torch.bool)
    assert kg.crossbars(keep) == 3 * ceil(9 * 7 / 16)
    keep[:7] = False  # column tile 0 fully pruned
    keep[7:10] = False  # three channels of tile 1
    assert kg.crossbars(keep) == ceil(9 * 4 / 16) + ceil(9 * 7 / 16)
    tg = tile_groups("w", (10, 7, 3, 3), rows=16, cols_per_tile=4)
    assert tg.n_groups == ceil(63 / 16) * 3
    w = torch.randn(10, 7, 3, 3)
    rows = w.reshape(10, -1)
    label = int(tg.labels.reshape(10, -1)[6, 40])
    assert tuple(tg.keys[label]) == (40 // 16, 6 // 4)
    assert torch.equal(tg.labels.reshape(10, -1) >= 0, torch.ones_like(rows, dtype=torch.bool))


def test_norms_mask_and_apply():
    gs = column_groups("w", (3, 5, 2, 2), kin=2, kout=1)
    w = torch.randn(3, 5, 2, 2)
    norms = gs.norms(w)
    o, a = 1, 2  # the tail slab: one channel
    assert norms[o * 3 + a] == pytest.approx(float(w[1, 4].pow(2).mean().sqrt()))
    keep = top_s(norms, 4)
    pruned = gs.apply(w, keep)
    for g in range(gs.n_groups):
        entries = pruned[gs.labels == g]
        assert bool((entries == 0).all()) != bool(keep[g])


def test_top_s_breaks_ties_by_index():
    assert top_s(torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0]), 2).tolist() == [False, True, True, False, False]
    assert top_s(torch.tensor([0.0, 0.0, 0.0]), 2).tolist() == [True, True, False]


@settings(max_examples=40, deadline=None)
@given(c_out=st.integers(1, 12), c_in=st.integers(1, 12), kin=st.integers(1, 5), kout=st.integers(1, 5),
       n_w=st.integers(1, 3), grain=st.sampled_from(["column", "crossbar", "kernel", "tile"]),
       seed=st.integers(0, 1000))
def test_crossbar_count_is_monotone_in_sparsity(c_out, c_in, kin, kout, n_w, grain, seed):
    shape = (c_out, c_in, 3, 3)
    gs = {"column": lambda: column_groups("w", shape, kin=kin, kout=kout, n_w=n_w),
          "crossbar": lambda: crossbar_groups("w", shape, kin=kin, kout=kout, n_w=n_w),
          "kernel": lambda: kernel_groups("w", shape, cols_per_tile=kout, rows=9 * kin),
          "tile": lambda: tile_groups("w", shape, rows=9 * kin, cols_per_tile=kout)}[grain]()
    norms = gs.norms(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    curve = crossbar_curve(gs, norms)
    direct = [gs.crossbars(top_s(norms, s)) for s in range(gs.n_groups + 1)]
    assert curve.counts.tolist() == direct
    assert all(a <= b for a, b in itertools.pairwise(direct))
    assert direct[0] == 0
    ratios = np.linspace(0, 1, 21)
    counts = [curve.crossbars(r) for r in ratios]
    assert all(a >= b for a, b in itertools.pairwise(counts))
    # stepping by next_ratio frees a crossbar each time and never skips a cheaper ratio
    ratio = 0.0
    while (nxt := curve.next_ratio(ratio)) is not None:
        assert nxt > ratio and curve.crossbars(nxt) < curve.crossbars(ratio)
        s_prev, s_next = gs.n_keep(ratio), gs.n_keep(nxt)
        assert all(curve.counts[s] == curve.counts[s_prev] for s in range(s_next + 1, s_prev + 1))
        ratio = nxt
    assert curve.crossbars(ratio) == 0


def test_to_free_next_column_grain():
    gs = column_groups("w", (10, 4, 1, 1), kin=2, kout=4, n_w=1)  # 2 input groups, 10 slabs each
    keep = torch.ones(gs.n_groups, dtype=torch.bool)
    keep[gs.keys[:, 1] == 1] = torch.tensor([True] * 8 + [False] * 2)  # input group 1 keeps 8
    assert to_free_next(gs, keep).tolist() == [10 - 8, 8 - 4]
    assert gs.crossbars(keep) == ceil(10 / 4) + ceil(8 / 4)


# --- LGD / RPP -----------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def tiny_setup(seed=0):
    torch.manual_seed(seed)
    model = TinyNet()
    x, y = torch.randn(64, 3, 6, 6), torch.randint(0, 4, (64,))
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    group_sets = [column_groups("conv2.weight", model.conv2.weight.shape, kin=3, kout=4, n_w=2),
                  crossbar_groups("conv1.weight", model.conv1.weight.shape, kin=2, kout=4)]
    return model, loader, group_sets


def accuracy(loader):
    def evaluate(model):
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
        return 100.0 * hits / sum(len(y) for _, y in loader)
    return evaluate


@pytest.mark.parametrize("rpp", [True, False])
def test_prune_lgd_reaches_exact_sparsity_and_zeroes_weights(rpp):
    model, loader, group_sets = tiny_setup()
    sparsity = {"conv2.weight": 0.55, "conv1.weight": 0.5}
    result = prune_lgd(model, group_sets, sparsity, loader, relax_epochs=3, finetune_epochs=2, lr=0.05, tau=2,
                       rpp=rpp, seed=1, evaluate=accuracy(loader), progress=False)
    params = dict(model.named_parameters())
    for gs in group_sets:
        keep = result.keep[gs.param]
        assert int(keep.sum()) == ceil((1 - sparsity[gs.param]) * gs.n_groups)
        w = params[gs.param].detach()
        assert bool((w[~result.masks[gs.param]] == 0).all())
        assert torch.equal(result.masks[gs.param], gs.mask(keep))
    assert [h["phase"] for h in result.history] == ["prune"] * 3 + ["finetune"] * 2
    assert all(h["accuracy"] is not None for h in result.history)
    exact = 1 - sum(ceil((1 - sparsity[gs.param]) * gs.n_groups) for gs in group_sets) / sum(
        gs.n_groups for gs in group_sets)
    assert result.history[-1]["sparsity"] == pytest.approx(exact)


def test_iht_without_relaxation_equals_top_s():
    model, _, group_sets = tiny_setup()
    params = dict(model.named_parameters())
    expected = {gs.param: top_s(gs.norms(params[gs.param]), gs.n_keep(0.6)) for gs in group_sets}
    before = {name: p.detach().clone() for name, p in params.items()}
    pruner = LGDPruner(model, group_sets, {gs.param: 0.6 for gs in group_sets}, t_relax=0, rpp=False)
    assert pruner.frozen
    for gs in group_sets:
        assert torch.equal(pruner.keep()[gs.param], expected[gs.param])
        assert torch.equal(params[gs.param].detach(), gs.apply(before[gs.param], expected[gs.param]))


def test_iht_projection_is_top_s_at_every_step():
    model, loader, group_sets = tiny_setup()
    params = dict(model.named_parameters())
    pruner = LGDPruner(model, group_sets, {gs.param: 0.5 for gs in group_sets}, t_relax=10, tau=1, rpp=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader * 2:
        optimizer.zero_grad()
        with pruner.sparse():
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        pruner.step()
        for gs in group_sets:
            assert torch.equal(pruner.keep()[gs.param], top_s(gs.norms(params[gs.param]), gs.n_keep(0.5)))


def test_sparse_forward_straight_through_updates_pruned_groups():
    model, loader, group_sets = tiny_setup()
    w = model.conv2.weight
    pruner = LGDPruner(model, group_sets, {gs.param: 0.7 for gs in group_sets}, t_relax=100, tau=100)
    dense = w.detach().clone()
    pruned = ~pruner.keep()["conv2.weight"]
    mask = group_sets[0].mask(~pruned)
    x, y = loader[0]
    with pruner.sparse():
        assert bool((w[~mask] == 0).all())
        nn.functional.cross_entropy(model(x), y).backward()
    assert torch.equal(w.detach(), dense)  # dense shadow weights come back
    assert float(w.grad[~mask].abs().sum()) > 0  # gradient reaches the pruned entries


def test_relaxed_keep_bernoulli_statistics():
    norms = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    s, lam, trials = 2, 0.6, 4000
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(trials):
        keep = relaxed_keep(norms, s, lam, gen)
        assert keep[:2].all()
        counts += keep.float()
    theta = 3.0
    expected = torch.tensor([1.0, 1.0] + [lam * float(n) / theta for n in norms[2:]])
    sigma = (expected * (1 - expected) / trials).sqrt()
    assert torch.all((counts / trials - expected).abs() <= 4 * sigma + 1e-12)
    assert relaxed_keep(norms, s, 0.0, gen).tolist() == top_s(norms, s).tolist()
    # same seed, same draws
    a = [relaxed_keep(norms, s, lam, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(a[0], a[1])


def test_lambda_anneals_linearly_to_zero():
    model, _, group_sets = tiny_setup()
    pruner = LGDPruner(model, group_sets, {gs.param: 0.5 for gs in group_sets}, t_relax=10, lambda0=0.5)
    lams = []
    for _ in range(10):
        lams.append(pruner.lam())
        pruner.step()
    assert lams == pytest.approx([0.5 * (1 - t / 10) for t in range(10)])
    assert pruner.frozen and pruner.lam() == 0.0


def test_rpp_keeps_extra_groups_during_relaxation_and_is_reproducible():
    def run(seed):
        model, _, group_sets = tiny_setup()
        pruner = LGDPruner(model, group_sets, {gs.param: 0.8 for gs in group_sets}, t_relax=50, tau=1,
                           lambda0=1.0, seed=seed)
        pruner.step()
        return pruner.keep()["conv2.weight"]

    keep = run(3)
    assert int(keep.sum()) > ceil(0.2 * keep.numel())
    assert torch.equal(keep, run(3))


# --- zerorize-recover ----------------------------------------------------------------------------------


def test_zerorize_ramp_and_exact_final_sparsity():
    model, loader, group_sets = tiny_setup()
    sched = ZerorizeRecover(model, group_sets, {gs.param: 0.6 for gs in group_sets}, ramp_epochs=4)
    fractions = [sched.fraction(e, 0.6) for e in range(6)]
    assert fractions[0] == 0.0 and fractions[4] == fractions[5] == 0.6
    assert all(a < b for a, b in itertools.pairwise(fractions[:5]))
    assert fractions[1] == pytest.approx(0.6 * (1 - 0.75**3))
    result = prune_zerorize(model, group_sets, {gs.param: 0.6 for gs in group_sets}, loader, epochs=6,
                            ramp_epochs=4, lr=0.05, evaluate=accuracy(loader), progress=False)
    params = dict(model.named_parameters())
    for gs in group_sets:
        assert int(result.keep[gs.param].sum()) == gs.n_keep(0.6)
        assert bool((params[gs.param].detach()[~result.masks[gs.param]] == 0).all())
    assert [h["phase"] for h in result.history] == ["prune"] * 4 + ["finetune"] * 2


def test_zerorized_groups_can_recover():
    model, loader, group_sets = tiny_setup()
    sched = ZerorizeRecover(model, group_sets[:1], {"conv2.weight": 0.5}, ramp_epochs=3)
    sched.epoch_start(1)
    zeroed = ~sched.keep()["conv2.weight"]
    mask = group_sets[0].mask(~zeroed)
    assert bool((model.conv2.weight[~mask] == 0).all())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = loader[0]
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    sched.step()
    assert float(model.conv2.weight.detach()[~mask].abs().sum()) > 0


# --- training loop: best frozen epoch, cosine annealing, distillation ----------------------------------


def test_keep_best_restores_the_best_frozen_epoch():
    model, loader, group_sets = tiny_setup()
    scores, snapshots = iter([5.0, 9.0, 1.0, 2.0]), []

    def evaluate(m):  # epoch 1 (the first fine-tuning epoch here) scores best
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    result = prune_lgd(model, group_sets, {gs.param: 0.5 for gs in group_sets}, loader, relax_epochs=1,
                       finetune_epochs=3, lr=0.05, evaluate=evaluate, progress=False)
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[-1][k]) for k in state)
    params = dict(model.named_parameters())
    for gs in group_sets:  # the masks and the exact sparsity are unchanged by the restore
        assert bool((params[gs.param].detach()[~result.masks[gs.param]] == 0).all())


def test_keep_best_off_keeps_the_last_epoch():
    model, loader, group_sets = tiny_setup()
    scores, snapshots = iter([9.0, 1.0]), []

    def evaluate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    pruner = LGDPruner(model, group_sets, {gs.param: 0.5 for gs in group_sets}, t_relax=0)
    run_schedule(model, pruner, group_sets, loader, epochs=2, lr=0.05, evaluate=evaluate, progress=False,
                 keep_best=False)
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[-1][k]) for k in state)


def test_cosine_anneals_the_learning_rate_to_zero(monkeypatch):
    model, loader, group_sets = tiny_setup()
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    pruner = LGDPruner(model, group_sets, {gs.param: 0.5 for gs in group_sets}, t_relax=0)
    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    run_schedule(model, pruner, group_sets, loader, epochs=2, lr=0.1, progress=False)
    assert seen[0] == pytest.approx(0.1) and all(a > b for a, b in itertools.pairwise(seen))
    assert seen[-1] < 0.01


def test_distillation_loss_limits():
    torch.manual_seed(0)
    logits, teacher, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(distillation_loss(logits, labels, teacher, 0.0, 4.0), ce)
    assert float(distillation_loss(logits, labels, logits, 1.0, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, labels, teacher, 1.0, 4.0)) > 0.0
