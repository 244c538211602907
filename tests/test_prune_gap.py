"""Grow-and-prune (issue 16): the cycles, exact sparsity, from-scratch, and ``--method gap``."""

from __future__ import annotations

import json

import numpy as np
import torch

import xbcompiler as xb
from tests.test_prune_admm import MODELS, T64, tiny_problem
from xbcompiler.cli import main
from xbcompiler.prune.gap import GapSchedule, prune_gap, reinitialise
from xbcompiler.prune.groups import crossbar_groups
from xbcompiler.prune.train import run_schedule


def deeper_problem():
    """Four linear layers, so four parts of one layer each."""
    model, loader, _ = tiny_problem()
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    sets = [crossbar_groups(f"{i}.weight", tuple(model[i].weight.shape), kin=4, kout=4) for i in (0, 2, 4, 6)]
    return model, loader, sets


def test_each_part_grows_dense_and_is_pruned_back():
    model, loader, sets = deeper_problem()
    sparsity = {gs.param: 0.5 for gs in sets}
    sched = GapSchedule(model, sets, sparsity, relax_epochs=4, parts=4)
    assert sched.parts == [[0], [1], [2], [3]]
    params = dict(model.named_parameters())
    assert all(int(gs.norms(params[gs.param]).gt(0).sum()) == gs.n_keep(0.5) for gs in sets)  # all start pruned
    result = run_schedule(model, sched, sets, loader, epochs=6, lr=0.05, progress=False)
    assert [h.get("grown") for h in result.history] == [0, 1, 2, 3, None, None]
    assert [h["phase"] for h in result.history] == ["gap"] * 4 + ["finetune"] * 2
    assert result.history[0]["sparsity"] < result.history[-1]["sparsity"]  # a grown part counts as dense
    assert [(c.cycle, c.part, c.params) for c in sched.cycles] == [(i, i, (sets[i].param,)) for i in range(4)]
    for cycle, gs in zip(sched.cycles, sets):
        assert cycle.nonzero[gs.param] > gs.n_keep(0.5)  # it grew: more groups than the target were nonzero
    for gs in sets:
        keep = result.keep[gs.param]
        assert int(keep.sum()) == gs.n_keep(0.5) and torch.equal(result.masks[gs.param], gs.mask(keep))
        assert not params[gs.param].detach()[~result.masks[gs.param]].any()


def test_prune_back_keeps_the_largest_groups_of_the_grown_part():
    """Groups that grew larger than the kept ones during a cycle replace them; the other parts stay masked."""
    model, _, sets = deeper_problem()
    sched = GapSchedule(model, sets, {gs.param: 0.5 for gs in sets}, relax_epochs=3, parts=4)
    w0, w1 = model[0].weight, model[2].weight
    pruned = ~sched.keep()[sets[0].param]
    sched.epoch_start(0)  # part 0 grows
    assert sched.keep()[sets[0].param].all() and sched.metrics() == {"grown": 0}
    with torch.no_grad():
        w0.add_(10.0 * sets[0].mask(pruned).to(w0))  # the pruned groups "grow" past the kept ones
        w1.add_(1.0)  # part 1 is masked: the step puts it back
    sched.step()
    assert int(w0.detach().ne(0).sum()) == w0.numel() and not w1.detach()[~sets[1].mask(sched.keep()[sets[1].param])].any()
    sched.epoch_start(1)  # part 0 is pruned back, part 1 grows
    keep = sched.keep()[sets[0].param]
    assert torch.equal(keep, pruned) and sched.cycles[0].regrown == {sets[0].param: int(pruned.sum())}
    assert sched.cycles[0].nonzero == {sets[0].param: sets[0].n_groups}
    assert not w0.detach()[~sets[0].mask(keep)].any() and sched.metrics() == {"grown": 1}


def test_fewer_layers_than_parts_and_more_cycles_than_parts():
    model, loader, sets = tiny_problem()
    result = prune_gap(model, sets, {gs.param: 0.75 for gs in sets}, loader, relax_epochs=5, finetune_epochs=1,
                       lr=0.02, parts=4, progress=False)
    assert [h.get("grown") for h in result.history] == [0, 1, 0, 1, 0, None]  # two parts, cycled
    params = dict(model.named_parameters())
    for gs in sets:
        assert int(result.keep[gs.param].sum()) == gs.n_keep(0.75)
        assert not params[gs.param].detach()[~result.masks[gs.param]].any()


def test_from_scratch_reinitialises_the_pruned_layers_seeded():
    model, _, sets = tiny_problem()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reinitialise(model, sets, seed=3)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(not torch.equal(before[n], after[n]) for n in before)  # weights and biases of both layers
    state = torch.random.get_rng_state()
    reinitialise(model, sets, seed=3)
    assert all(torch.equal(after[n], p) for n, p in model.named_parameters())  # seeded
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is untouched
    a, b = tiny_problem(), tiny_problem()
    prune_gap(a[0], a[2], {gs.param: 0.5 for gs in a[2]}, a[1], relax_epochs=0, finetune_epochs=0, lr=0.02,
              progress=False, from_scratch=True, seed=3)
    prune_gap(b[0], b[2], {gs.param: 0.5 for gs in b[2]}, b[1], relax_epochs=0, finetune_epochs=0, lr=0.02,
              progress=False)
    assert torch.equal(a[0][2].bias, after["2.bias"]) and not torch.equal(b[0][2].bias, after["2.bias"])


def test_xbc_prune_method_gap_from_scratch_writes_a_verified_netlist(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--sparsity", "0.5", "--method", "gap", "--from-scratch",
                   "--relax-epochs", "2", "--epochs", "1", "-o", str(out), "--json", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"] and summary["settings"]["method"] == "gap" and summary["settings"]["from_scratch"]
    assert summary["pruned_crossbars"] == xb.load_netlist(out).summary["crossbars"] < summary["dense_crossbars"]
    pruned = [r for r in summary["layers"] if r["kept"] < r["groups"]]
    assert pruned and all(r["kept"] == int(np.ceil(0.5 * r["groups"] - 1e-9)) for r in pruned)


def test_xbc_prune_refuses_from_scratch_without_gap(tmp_path, capsys):
    out = tmp_path / "x"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--sparsity", "0.5", "--method", "admm", "--from-scratch",
                   "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "XB003" in err and "--from-scratch" in err and "Traceback" not in err
    assert not out.exists()
