"""The ADMM trainer (issue 16): the exact group projection, the schedule, and ``--method admm``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import xbcompiler as xb
from xbcompiler.cli import main
from xbcompiler.prune.admm import AdmmSchedule, GroupConstraint, prune_admm, train_admm
from xbcompiler.prune.groups import column_groups, crossbar_curve, crossbar_groups

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "data" / "prune_models.py"
T64 = ["--target", "isaac-like", "--set", "crossbar.rows=64", "--set", "crossbar.cols=64"]

values = st.integers(-3, 3).map(float)  # small integers: exact energies, ties and zeros happen


@st.composite
def blocks(draw):
    """A small weight, its crossbar-grain groups (tails make the groups unequal) and a kept count."""
    c_out, c_in = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kin, kout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = draw(st.sampled_from([(), (1,), (2,)]))
    shape = (c_out, c_in, *kernel)
    flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    gs = crossbar_groups("w", shape, kin=kin, kout=kout)
    s = draw(st.integers(0, gs.n_groups))
    return torch.tensor(flat, dtype=torch.float64).reshape(shape), gs, s


def cost(w: torch.Tensor, gs, subset) -> float:
    keep = torch.zeros(gs.n_groups, dtype=torch.bool)
    keep[list(subset)] = True
    return float(((gs.apply(w, keep) - w) ** 2).sum())


@settings(max_examples=150, deadline=None)
@given(blocks())
def test_group_projection_is_the_nearest_point_with_s_groups(case):
    w, gs, s = case
    c = GroupConstraint([gs], 1.0 - s / gs.n_groups if gs.n_groups else 0.0)
    assert c.s["w"] == s
    before = w.clone()
    p = c.project("w", w)
    assert torch.equal(w, before)  # w untouched
    kept = c.keep("w")
    assert int(kept.sum()) == s and torch.equal(p, gs.apply(w, kept))
    best = min(cost(w, gs, sub) for sub in itertools.combinations(range(gs.n_groups), s))
    assert float(((p - w) ** 2).sum()) == pytest.approx(best, abs=1e-9)
    assert torch.equal(c.project("w", p), p)  # idempotent


def test_size_normalised_norms_would_not_be_the_projection():
    """Groups of 4 and 1 entries: per-entry norm prefers the small one, the distance the big one."""
    gs = crossbar_groups("w", (1, 5), kin=4, kout=1)  # groups: columns 0-3 and column 4
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.5]])
    assert int(gs.project(gs.norms(w), 1).nonzero()) == 1  # the normalised ranking keeps the tail
    assert GroupConstraint([gs], 0.5).keep_of("w", w).tolist() == [True, False]  # energy 4 > 2.25


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 4), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2 ** 31))
def test_aligned_projection_is_nearest_with_its_crossbars(c_out, c_in, kout, seed):
    """Aligned column groups: when the kept groups fill their crossbars, no subset of as many groups on
    as few crossbars is nearer (brute force over every subset)."""
    gs = column_groups("w", (c_out, c_in, 2), kin=2, kout=kout, aligned=True)  # a tail input group: 2 or 4 entries
    assume(gs.n_groups <= 12)
    w = torch.randn(c_out, c_in, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = GroupConstraint([gs], 0.0)
    n = gs.n_groups
    subsets = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1  # every keep vector, [2^n, n]
    energy = (gs.norms(w) ** 2 * gs.sizes().double()).numpy()  # ||W_g||^2
    lost = ((1 - subsets) * energy).sum(1)
    alive = subsets @ np.eye(gs.cost.n_bins, dtype=np.int64)[gs.cost.bins]
    xbars = gs.cost.per_bin(alive).sum(1)
    curve = crossbar_curve(gs, c.scores("w", w)).counts
    for s in range(n + 1):
        if s < n and curve[s + 1] == curve[s]:
            continue  # the last crossbar is not full
        c.s["w"] = s
        p = c.project("w", w)
        k = gs.crossbars(c.keep("w"))
        best = lost[(subsets.sum(1) <= s) & (xbars <= k)].min()
        assert float(((p - w) ** 2).sum()) == pytest.approx(best, abs=1e-9)


def tiny_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 12, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.manual_seed(seed)
    for m in model:
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 512, 16)]  # 32 steps an epoch
    sets = [crossbar_groups("0.weight", (16, 12), kin=3, kout=4), column_groups("2.weight", (2, 16), kin=4, kout=2)]
    return model, loader, sets


def test_admm_drives_w_towards_z_and_ends_exactly_sparse():
    model, loader, sets = tiny_problem()
    params = dict(model.named_parameters())
    constraint = GroupConstraint(sets, 0.5)
    result, schedule = train_admm(model, {gs.param: params[gs.param] for gs in sets}, constraint, loader,
                                  admm_epochs=6, finetune_epochs=2, lr=0.02, rho=1.0, rho_growth=1.3, progress=False,
                                  group_sets=sets, evaluate=lambda m: 0.0)
    residual = [h["residual"] for h in result.history if h["phase"] == "admm"]
    assert len(residual) == 6 and residual[-1] < 0.5 * residual[0] and residual[-1] < min(residual[:2])
    assert [h["phase"] for h in result.history] == ["admm"] * 6 + ["finetune"] * 2
    assert set(schedule.accuracy) == {"admm", "projected"}
    for gs in sets:
        keep = result.keep[gs.param]
        assert int(keep.sum()) == gs.n_keep(0.5)
        assert torch.equal(result.masks[gs.param], gs.mask(keep))
        assert not params[gs.param].detach()[~result.masks[gs.param]].any()  # masks held through fine-tuning
    assert all(h["sparsity"] == pytest.approx(result.history[-1]["sparsity"]) for h in result.history)


def test_admm_schedule_penalty_gradient_and_updates():
    p = torch.nn.Parameter(torch.tensor([[3.0, 0.1, -2.0, 0.2]]))
    gs = crossbar_groups("w", (1, 4), kin=1, kout=1)
    sched = AdmmSchedule({"w": p}, GroupConstraint([gs], 0.5), admm_epochs=2, rho=1.0, rho_growth=2.0)
    assert sched.z["w"].tolist() == [[3.0, 0.0, -2.0, 0.0]] and not sched.u["w"].any()
    p.grad = torch.zeros_like(p)
    with torch.enable_grad(), sched.sparse():
        pass
    assert torch.allclose(p.grad, p.detach() - sched.z["w"])  # rho (W - Z + U)
    sched.epoch_start(0)
    assert sched.rho == 1.0  # Z, U were set at construction
    sched.epoch_start(1)
    assert sched.rho == 2.0 and torch.allclose(sched.u["w"], p.detach() - sched.z["w"])
    sched.epoch_start(2)
    assert sched.frozen and p.detach().tolist() == [[3.0, 0.0, -2.0, 0.0]]
    with torch.no_grad():
        p.add_(1.0)
    sched.step()
    assert p.detach().tolist() == [[4.0, 0.0, -1.0, 0.0]]


def test_prune_admm_without_admm_epochs_projects_at_once():
    model, loader, sets = tiny_problem(1)
    result = prune_admm(model, sets, {gs.param: 0.75 for gs in sets}, loader, relax_epochs=0, finetune_epochs=1,
                        lr=0.05, progress=False)
    assert [h["phase"] for h in result.history] == ["finetune"]
    assert all(int(result.keep[gs.param].sum()) == gs.n_keep(0.75) for gs in sets)


def test_xbc_prune_method_admm_writes_a_verified_netlist(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--train-epochs", "2", "--sparsity", "0.5",
                   "--method", "admm", "--relax-epochs", "2", "--epochs", "1", "-o", str(out), "--json", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"] and summary["settings"]["method"] == "admm"
    assert summary["pruned_crossbars"] == xb.load_netlist(out).summary["crossbars"] < summary["dense_crossbars"]
    pruned = [r for r in summary["layers"] if r["kept"] < r["groups"]]
    assert pruned and all(r["kept"] == int(np.ceil(0.5 * r["groups"] - 1e-9)) for r in pruned)
