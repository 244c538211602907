"""Knapsack pruning search: the allocation (CP-SAT, DP, brute force), the back-off, the flow and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbcompiler.cli import main
from xbcompiler.prune import allocate_solver
from xbcompiler.prune.allocate import (
    Choice,
    LayerSensitivity,
    allocation_problem,
    monotone_drops,
    solve_brute_force,
    solve_dp,
)
from xbcompiler.prune.allocate_solver import allocate
from xbcompiler.prune.knapsack import KnapsackCallbacks, knapsack_search

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "data" / "prune_models.py"
T64 = ["--target", "isaac-like", "--set", "crossbar.rows=64", "--set", "crossbar.cols=64"]


@st.composite
def instances(draw):
    """Up to 4 layers of up to 4 choices (ratio 0 first), drops in points, a budget."""
    layers = []
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 4))
        freed = sorted(draw(st.lists(st.integers(1, 30), min_size=n - 1, max_size=n - 1)))
        drops = draw(st.lists(st.floats(-0.5, 3.0, allow_nan=False), min_size=n - 1, max_size=n - 1))
        choices = [Choice(0.0, 0, 0.0)] + [Choice(0.1 * (k + 1), f, d, 90.0) for k, (f, d) in
                                           enumerate(zip(freed, drops))]
        layers.append(LayerSensitivity(f"l{i}", 40, tuple(choices)))
    return layers, draw(st.floats(0.0, 4.0, allow_nan=False)), draw(st.none() | st.integers(0, 60))


@settings(max_examples=60, deadline=None)
@given(instances())
def test_cp_sat_and_dp_match_brute_force(instance):
    layers, budget, cap = instance
    problem = allocation_problem(layers, budget, max_freed=cap)
    best = solve_brute_force(problem)
    dp = solve_dp(problem)
    assert problem.feasible(dp) and problem.objective(dp) == problem.objective(best)
    pick, status, freed, bound = allocate_solver.solve(problem, time_limit_s=5.0)
    assert status == "OPTIMAL" and problem.feasible(pick) and problem.objective(pick) == problem.objective(best)
    assert freed == problem.freed(best) and bound >= freed
    result = allocate(layers, budget, max_freed=cap)
    assert result.freed == problem.freed(best) and result.method == "cp-sat" and result.gap == 0.0
    assert result.drop <= budget + 1e-9  # the measured drops (negatives as 0) fit the budget
    assert cap is None or result.freed <= cap


def _layers():
    a = LayerSensitivity("a", 10, (Choice(0.0, 0, 0.0), Choice(0.5, 4, 0.2, 90), Choice(0.8, 7, 0.6, 89)))
    b = LayerSensitivity("b", 10, (Choice(0.0, 0, 0.0), Choice(0.5, 3, 0.1, 90), Choice(0.8, 6, 0.3, 90)))
    return [a, b]


def test_allocation_spends_the_budget_where_it_frees_most():
    result = allocate(_layers(), 0.5)
    assert dict(result.ratios) == {"a": 0.5, "b": 0.8} and result.freed == 10
    assert result.drop == pytest.approx(0.5) and result.status == "OPTIMAL" and result.fallback_reason is None
    assert allocate(_layers(), 0.0).pruned() == {}  # no budget: nothing pruned
    assert allocate(_layers(), 0.5, max_freed=9).freed == 7  # strictly fewer: a 0.5, b 0.5


def test_ties_go_to_the_smaller_drop():
    layer = LayerSensitivity("a", 10, (Choice(0.0, 0, 0.0), Choice(0.5, 4, 0.4, 90), Choice(0.6, 4, 0.1, 90)))
    assert dict(allocate([layer], 1.0).ratios) == {"a": 0.6}


@pytest.mark.parametrize("failure", ["none", "import"])
def test_falls_back_to_the_exact_dp(monkeypatch, failure):
    if failure == "none":
        monkeypatch.setattr(allocate_solver, "solve", lambda *a, **k: None)
    else:
        def missing(*args, **kwargs):
            raise ImportError("No module named 'ortools'")

        monkeypatch.setattr(allocate_solver, "solve", missing)
    result = allocate(_layers(), 0.5)
    assert result.method == "dp" and result.fallback_reason and result.freed == 10
    assert dict(result.ratios) == {"a": 0.5, "b": 0.8} and result.gap == 0.0


def test_monotone_drops_take_the_running_maximum():
    out = monotone_drops([Choice(0.75, 9, 0.2), Choice(0.25, 3, 0.5), Choice(0.5, 6, -0.1)])
    assert [c.ratio for c in out] == [0.25, 0.5, 0.75] and [c.drop for c in out] == [0.5, 0.5, 0.5]


class Toy:
    """Two layers; every crossbar freed costs ``cost`` points in the joint run, and 50 points past ``limit``."""

    def __init__(self, joint_cost: float, limit: int = 100):
        self.joint_cost, self.limit = joint_cost, limit
        self.joints: list[dict] = []
        self.saves = 0
        self.restored: list[str] = []

    def callbacks(self):
        return KnapsackCallbacks(crossbars=lambda layer, r: 10 - round(10 * r), ratios=lambda layer: [0.2, 0.5, 0.8],
                                 sensitivity=lambda layer, r: 90.0 - r, reference=lambda: 90.0,
                                 judge_reference=lambda: 91.0, joint=self.joint, save=self.save,
                                 restore=self.restored.append)

    def joint(self, ratios):
        self.joints.append(ratios)
        freed = sum(round(10 * r) for r in ratios.values())
        return 91.0 - self.joint_cost * freed - 50.0 * (freed > self.limit)

    def save(self):
        self.saves += 1
        return "dense" if self.saves == 1 else f"after try {len(self.joints) - 1}"


def test_search_within_budget_runs_once_without_growing():
    toy = Toy(joint_cost=0.0)
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=1.0, grow_factor=1.0,
                             progress=False)
    assert len(result.attempts) == 1 and result.budget_met and toy.restored == []
    (ratios,) = toy.joints  # drops = ratios here: 0.5 + 0.5 or 0.8 + 0.2, both free 10 of 16 possible
    assert sum(ratios.values()) == pytest.approx(1.0) and len(ratios) == 2
    assert result.final.allocation.freed == 10 and result.judge_reference == 91.0
    assert [c.ratio for c in result.layers[0].choices] == [0.0, 0.2, 0.5, 0.8]
    assert [c.freed for c in result.layers[0].choices] == [0, 2, 5, 8]


def test_search_grows_once_when_half_the_budget_is_unused_and_keeps_a_grow_judged_no_worse():
    toy = Toy(joint_cost=0.0)
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=1.0, progress=False)
    assert [a.kind for a in result.attempts] == ["first", "grow"] and result.standing == 1
    assert [a.allocation.budget for a in result.attempts] == [1.0, 2.0]
    assert result.attempts[1].allocation.freed > result.attempts[0].allocation.freed
    assert result.final is result.attempts[1] and result.budget_met and result.not_kept == [result.attempts[0]]
    assert toy.restored == ["dense"]  # the grow starts from the dense model, and stands
    assert "try 1 (grow, stands)" in result.table()


@pytest.mark.parametrize("toy", [Toy(joint_cost=0.0, limit=10), Toy(joint_cost=0.02)],
                         ids=["over the budget", "within it, worse than the first"])
def test_search_undoes_a_grow_judged_worse_than_the_first_try(toy, capsys):
    """The first try frees 10 and loses 0 (0.2); the grow frees more and loses 50 points (0.32 of 1: within
    the budget, half of it still unused, but worse than the try it grew from)."""
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=1.0, progress=True)
    assert [a.kind for a in result.attempts] == ["first", "grow"]
    first, grow = (a.loss for a in result.attempts)
    assert grow > first
    assert f"grow undone (loss {grow:.3g} over the first try's {first:.3g}): back to try 0" in capsys.readouterr().err
    assert result.standing == 0 and result.final.allocation.freed == 10 and result.budget_met
    assert toy.restored == ["dense", "after try 0"]  # the first try's state comes back
    assert result.not_kept == [result.attempts[1]] and "try 0 (first, stands)" in result.table()
    chosen = dict(result.final.allocation.ratios)
    assert [p.ratio for p in result.as_search().visited if p.accepted] == [r for r in chosen.values() if r > 0]


def test_search_says_when_a_grow_would_free_nothing_more(capsys):
    toy = Toy(joint_cost=0.0)  # with a budget of 5 every layer already sits at its largest ratio
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=1.0, budget=5.0, progress=True)
    assert [a.kind for a in result.attempts] == ["first"] and result.final.allocation.freed == 16
    assert "no grow: a budget of 10 points frees no more crossbars" in capsys.readouterr().err


@pytest.mark.parametrize("cost,factor", [(0.06, 2.0), (0.0, 1.0)])
def test_search_does_not_grow_with_less_than_half_the_budget_unused_or_growing_off(cost, factor):
    toy = Toy(joint_cost=cost)  # 10 freed -> loss 0.6 of 1.0: within, but less than half unused
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=1.0, grow_factor=factor,
                             progress=False)
    assert [a.kind for a in result.attempts] == ["first"] and result.budget_met and toy.restored == []


def test_search_refuses_a_grow_factor_below_one():
    with pytest.raises(ValueError, match="grow_factor"):
        knapsack_search(["a"], Toy(0.0).callbacks(), baseline=92.0, max_drop=1.0, grow_factor=0.5, progress=False)


def test_search_backs_off_with_fewer_crossbars_until_within_budget():
    toy = Toy(joint_cost=0.1)  # 10 freed -> loss 1.0 > 0.6; 7 -> 0.7; 4 -> 0.4
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=0.6, backoff_tries=3,
                             progress=False)
    freed = [a.allocation.freed for a in result.attempts]
    assert freed == sorted(freed, reverse=True) and len(set(freed)) == len(freed)
    assert [a.met for a in result.attempts][-1] and not any(a.met for a in result.attempts[:-1])
    assert toy.restored == ["dense"] * (len(result.attempts) - 1)
    assert [a.kind for a in result.attempts] == ["first"] + ["back-off"] * (len(result.attempts) - 1)
    assert result.standing == len(result.attempts) - 1  # no grow after a back-off
    budgets = [a.allocation.budget for a in result.attempts]
    assert budgets == [0.6 * 0.5 ** i for i in range(len(budgets))]


def test_search_stops_after_the_last_try_and_says_so():
    toy = Toy(joint_cost=5.0)  # always over
    result = knapsack_search(["a", "b"], toy.callbacks(), baseline=92.0, max_drop=0.6, backoff_tries=1,
                             progress=False)
    assert len(result.attempts) == 2 and not result.budget_met
    assert "over" in result.table() and "try 1" in result.table()
    search = result.as_search()
    assert [p.accepted for p in search.visited].count(True) == len(result.final.allocation.pruned())
    assert {r.stop for r in search.layers} == {"allocated"}


def test_prune_classifier_knapsack_records_sensitivity_and_allocation():
    from tests.models import digits_cnn
    from xbcompiler.datasets import Split, digits, train_classifier
    from xbcompiler.prune.flow import PruneSettings, holdout, prune_classifier
    from xbcompiler.target import load_target

    torch.manual_seed(0)
    d = digits(0)
    train, val = holdout(d.x_train, d.y_train, 0.2, 0)
    model = train_classifier(digits_cnn(seed=0), Split(*train, d.x_test, d.y_test), epochs=2)
    target = load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
    outcome = prune_classifier(model, target, train, val, PruneSettings(epochs=1, relax_epochs=1, max_drop=3.0,
                                                                       progress=False))
    k = outcome.knapsack
    assert k is not None and outcome.search is not None and k.attempts
    for layer in k.layers:
        assert layer.choices[0].ratio == 0.0 and layer.choices[0].freed == 0
        freed = [c.freed for c in layer.choices]
        assert freed == sorted(freed) and len(set(freed)) == len(freed)  # each ratio frees more
        assert all(0 < c.ratio <= 0.9 for c in layer.choices[1:])
        drops = [c.drop for c in layer.choices]
        assert drops == sorted(drops)
    pruned = k.final.allocation.pruned()
    rows = {r.layer: r for r in outcome.layers}
    assert {name for name, r in rows.items() if r.kept < r.groups} == set(pruned)
    assert outcome.crossbars <= outcome.crossbars_dense - (k.final.allocation.freed > 0)


def test_an_undone_grow_leaves_the_model_and_its_masks_as_the_first_try_left_them(monkeypatch):
    """The first joint run is judged perfect (so the search grows), the grow hopeless (so it is undone): the
    model ends with the first try's weights, masks and history, and the table of layers reads them."""
    from tests.models import digits_cnn
    from xbcompiler.datasets import Split, digits, train_classifier
    from xbcompiler.prune import flow
    from xbcompiler.target import load_target

    d = digits(0)
    train, val = flow.holdout(d.x_train, d.y_train, 0.2, 0)
    model = train_classifier(digits_cnn(seed=0), Split(*train, d.x_test, d.y_test), epochs=2)
    after: list[tuple[dict, dict, list]] = []
    real = flow._Pruner.joint

    def joint(self, ratios):
        real(self, ratios)
        after.append((copy.deepcopy(self.model.state_dict()), dict(self.keep), list(self.history)))
        return 100.0 if len(after) == 1 else 0.0

    monkeypatch.setattr(flow._Pruner, "joint", joint)
    target = load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
    settings = flow.PruneSettings(epochs=1, relax_epochs=1, max_drop=3.0, fold_dead_channels=False, progress=False)
    outcome = flow.prune_classifier(model, target, train, val, settings)
    k = outcome.knapsack
    assert [a.kind for a in k.attempts] == ["first", "grow"] and k.standing == 0 and len(after) == 2
    assert k.attempts[1].allocation.freed > k.attempts[0].allocation.freed
    weights, keep, history = after[0]
    assert all(torch.equal(v, model.state_dict()[name]) for name, v in weights.items())
    assert outcome.history == history
    rows = {r.param: r for r in outcome.layers}
    assert keep and all(rows[param].kept == int(mask.sum()) for param, mask in keep.items())
    assert outcome.crossbars_dense - outcome.crossbars == k.attempts[0].allocation.freed


@pytest.mark.parametrize("search", ["knapsack", "greedy"])
def test_xbc_prune_search_writes_prune_json(tmp_path, capsys, search):
    out = tmp_path / search
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--train-epochs", "2", "--epochs", "1", "--relax-epochs",
                   "1", "--search", search, "--max-drop", "2", "--data", "digits:8x8x1", "-o", str(out), "--quiet"])
    assert status == 0
    summary = json.loads((out / "prune.json").read_text())
    assert summary["settings"]["search"] == search and summary["verify_ok"]
    assert summary["search"] and summary["search_visited"] is not None
    if search == "knapsack":
        k = summary["knapsack"]
        assert k["tries"] and k["tries"][0]["allocation"]["status"] in ("OPTIMAL", "FEASIBLE")
        assert {"objective", "bound", "method"} <= set(k["tries"][0]["allocation"]) and "gap" in k["tries"][0]
        assert len(k["layers"]) == len(summary["search"]) and "budget_met" in k
        assert k["tries"][0]["kind"] == "first" and 0 <= k["standing"] < len(k["tries"])
    else:
        assert summary["knapsack"] is None
    assert (out / "pareto.png").is_file()


@pytest.mark.parametrize("data", ["digits:0x8x1", "digits:abc"])
def test_xbc_prune_refuses_a_bad_digits_spec(tmp_path, capsys, data):
    out = tmp_path / "x"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--data", data, "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "XB003" in err and data in err and "Traceback" not in err and not out.exists()


def test_recalibrate_batchnorm_averages_the_batches_and_restores_the_model():
    from xbcompiler.prune.flow import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.1), torch.nn.ReLU()).eval()
    images = [torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(i)) + i for i in range(3)]
    recalibrate_batchnorm(model, images)
    bn = model[0]
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in images]).mean(0)  # equal batches: mean of means
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training and int(bn.num_batches_tracked) == 3


def test_expected_accuracy_is_the_mean_true_class_probability():
    from xbcompiler.prune.flow import accuracy_of, expected_accuracy_of

    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(20, 4, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 3
    with torch.no_grad():
        expected = 100 * float(model(x).softmax(-1)[torch.arange(20), y].mean())
    assert expected_accuracy_of(model, x, y, batch_size=7) == pytest.approx(expected, rel=1e-6)
    assert 0.0 <= expected_accuracy_of(model, x, y) <= 100.0 and 0.0 <= accuracy_of(model, x, y) <= 100.0


@pytest.mark.parametrize("flag,value", [("--recovery", "1.0"), ("--recovery", "-0.5"), ("--backoff-tries", "-1"),
                                        ("--sensitivity-batches", "-2"), ("--grow-factor", "0.5")])
def test_xbc_prune_refuses_knapsack_values_out_of_range(tmp_path, capsys, flag, value):
    out = tmp_path / "x"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, flag, value, "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "XB003" in err and flag in err and not out.exists()


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_the_budget_is_judged_on_images_the_search_does_not_see(fraction, monkeypatch):
    """The dense reference and every joint run are measured on the judge images; the sensitivity and the
    fine-tuning's epoch choice on the rest of the held-out images (the whole set when the fraction is 0)."""
    from tests.models import digits_cnn
    from xbcompiler.datasets import Split, digits, train_classifier
    from xbcompiler.prune import flow
    from xbcompiler.target import load_target

    d = digits(0)
    train, val = flow.holdout(d.x_train, d.y_train, 0.2, 0)
    model = train_classifier(digits_cnn(seed=0), Split(*train, d.x_test, d.y_test), epochs=1)
    search, judge = flow.holdout(*val, fraction, 1) if fraction else (val, val)
    seen: dict[str, set[int]] = {"top1": set(), "expected": set()}
    for name, key in (("accuracy_of", "top1"), ("expected_accuracy_of", "expected")):
        real = getattr(flow, name)

        def spy(m, x, y, *a, _real=real, _key=key, **k):
            seen[_key].add(len(x))
            return _real(m, x, y, *a, **k)

        monkeypatch.setattr(flow, name, spy)
    target = load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
    settings = flow.PruneSettings(epochs=1, relax_epochs=0, max_drop=50.0, judge_fraction=fraction, progress=False)
    outcome = flow.prune_classifier(model, target, train, val, settings)
    assert outcome.knapsack.judge_reference == outcome.knapsack.final.accuracy + outcome.knapsack.final.loss
    assert seen["expected"] == {len(search[0])}  # sensitivity
    assert seen["top1"] == {len(search[0]), len(judge[0])}  # epoch choice, judge
    if fraction:
        assert len(search[0]) + len(judge[0]) == len(val[0]) and len(judge[0]) == round(fraction * len(val[0]))


def test_a_held_out_set_too_small_to_split_is_used_whole():
    from tests.models import digits_cnn
    from xbcompiler.datasets import digits
    from xbcompiler.prune.flow import PruneSettings, holdout, prune_classifier
    from xbcompiler.target import load_target

    d = digits(0)
    train, _ = holdout(d.x_train, d.y_train, 0.2, 0)
    one = (d.x_test[:1], d.y_test[:1])
    target = load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
    settings = PruneSettings(epochs=1, relax_epochs=0, max_drop=100.0, judge_fraction=0.5, progress=False,
                             ratios=(0.5,))
    outcome = prune_classifier(digits_cnn(seed=0).eval(), target, train, one, settings)
    assert outcome.baseline_accuracy in (0.0, 100.0) and outcome.knapsack.attempts


def test_a_try_after_restore_repeats_the_first_exactly():
    """Restoring the saved state restores the data order too, so a joint run depends only on its ratios
    (two tries of one allocation give the same model), not on how many tries came before."""
    from tests.models import digits_cnn
    from xbcompiler.datasets import Split, digits, train_classifier
    from xbcompiler.prune import flow
    from xbcompiler.target import load_target

    d = digits(0)
    train, val = flow.holdout(d.x_train, d.y_train, 0.2, 0)
    model = train_classifier(digits_cnn(seed=0), Split(*train, d.x_test, d.y_test), epochs=1)
    target = load_target("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
    settings = flow.PruneSettings(epochs=1, relax_epochs=1, progress=False)
    groups = flow.plan_groups(model, d.x_train[:1], target, pipeline=settings.pipeline, grain=settings.grain)
    pruner = flow._Pruner(model, groups[1:-1], train, val, settings)
    ratios = {g.layer: 0.5 for g in groups[1:-1]}
    state = pruner.save()
    first = (pruner.joint(ratios), copy.deepcopy(model.state_dict()))
    pruner.restore(state)
    second = (pruner.joint(ratios), model.state_dict())
    assert first[0] == second[0]
    assert all(torch.equal(first[1][k], second[1][k]) for k in second[1])
    assert any(not torch.equal(first[1][k], state.weights[k]) for k in state.weights)  # the runs did train
