"""Block pruning by reweighted group-L1 (issue 16): the penalty, exact sparsity, and ``--method group-l1``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import xbcompiler as xb
from tests.test_prune_admm import MODELS, T64, tiny_problem
from xbcompiler.cli import main
from xbcompiler.prune.admm import GroupConstraint
from xbcompiler.prune.group_l1 import GroupL1Schedule, prune_group_l1
from xbcompiler.prune.groups import crossbar_groups, tile_groups

ROOT = Path(__file__).resolve().parents[1]


def test_penalty_gradient_is_the_reweighted_group_l1_gradient():
    """The gradient added after backward equals autograd's of ``lambda / |G| sum_g alpha_g ||W_g||``."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 2))
    gs = tile_groups("0.weight", (5, 3, 2, 2), rows=5, cols_per_tile=2)  # unequal tiles: 5 / 2 rows, 2 / 1 cols
    sched = GroupL1Schedule(model, [gs], {"0.weight": 0.5}, relax_epochs=4, lam=0.3)
    sched.epoch_start(1)
    assert sched.strength == pytest.approx(0.3 * 2 / 4)  # ramped
    w = model[0].weight
    norms = sched.group_norms()[0]
    assert torch.allclose(sched.alpha[0], 1.0 / (norms + 0.1 * norms.mean()) / gs.n_groups)
    w.grad = torch.zeros_like(w)
    with torch.enable_grad(), sched.sparse():
        pass
    ref = w.detach().clone().double().requires_grad_(True)
    energy = torch.zeros(gs.n_groups, dtype=torch.float64).index_add(0, gs.labels.reshape(-1), ref.reshape(-1) ** 2)
    (sched.strength * (sched.alpha[0] * energy.sqrt()).sum()).backward()
    assert torch.allclose(w.grad.double(), ref.grad, atol=1e-6)


def test_group_l1_shrinks_groups_then_prunes_exactly():
    model, loader, sets = tiny_problem()
    result = prune_group_l1(model, sets, {gs.param: 0.5 for gs in sets}, loader, relax_epochs=3, finetune_epochs=2,
                            lr=0.02, lam=0.05, progress=False)
    assert [h["phase"] for h in result.history] == ["group-l1"] * 3 + ["finetune"] * 2
    assert [h["lambda"] for h in result.history[:3]] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05], abs=1e-6)
    params = dict(model.named_parameters())
    for gs in sets:
        keep = result.keep[gs.param]
        assert int(keep.sum()) == gs.n_keep(0.5) and torch.equal(result.masks[gs.param], gs.mask(keep))
        assert not params[gs.param].detach()[~result.masks[gs.param]].any()  # masks held through fine-tuning


def test_penalty_leaves_the_pruned_groups_smaller_than_plain_training():
    """The energy outside the top-s groups (what the hard projection removes) shrinks under the penalty."""
    lost = []
    for lam in (0.0, 0.1):
        model, loader, sets = tiny_problem()
        sched = GroupL1Schedule(model, sets, {gs.param: 0.5 for gs in sets}, relax_epochs=3, lam=lam)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        for epoch in range(3):  # the relaxed phase only (no projection at the end)
            sched.epoch_start(epoch)
            for x, y in loader:
                optimizer.zero_grad()
                with sched.sparse():
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                sched.step()
        c = GroupConstraint(sets, 0.5)
        w = {n: p.detach() for n, p in model.named_parameters()}
        lost.append(sum(float(((c.project(gs.param, w[gs.param]) - w[gs.param]) ** 2).sum()) for gs in sets))
    assert lost[1] < 0.5 * lost[0]


def test_crossbar_blocks_keep_whole_crossbars():
    """Crossbar-grain blocks: the kept blocks are whole crossbars, so crossbars fall with the blocks."""
    model, loader, _ = tiny_problem()
    sets = [crossbar_groups("0.weight", (16, 12), kin=4, kout=4)]
    result = prune_group_l1(model, sets, {"0.weight": 0.75}, loader, relax_epochs=1, finetune_epochs=1, lr=0.02,
                            progress=False)
    assert sets[0].crossbars(result.keep["0.weight"]) == sets[0].n_keep(0.75) == 3


def test_xbc_prune_method_group_l1_writes_a_verified_netlist(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--train-epochs", "2", "--sparsity", "0.5", "--grain",
                   "crossbar", "--method", "group-l1", "--relax-epochs", "2", "--epochs", "1", "-o", str(out), "--json",
                   "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"] and summary["settings"]["method"] == "group-l1"
    assert summary["pruned_crossbars"] == xb.load_netlist(out).summary["crossbars"] < summary["dense_crossbars"]
    pruned = [r for r in summary["layers"] if r["kept"] < r["groups"]]
    assert pruned and all(r["kept"] == int(np.ceil(0.5 * r["groups"] - 1e-9)) for r in pruned)
