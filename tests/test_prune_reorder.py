"""Input-channel reorder (background §1.6): objective, bound, heuristic, OR-Tools solver path, application."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xbcompiler.diagnostics import XBWarning
from xbcompiler.prune import (
    build_problem,
    kernel_energy,
    objective,
    permute_inputs,
    permute_outputs,
    reorder_solve,
    upper_bound,
)
from xbcompiler.prune.reorder import assignment_value, groups_of, heuristic
from xbcompiler.prune.reorder_solve import solve


def partitions(items: list[int], sizes: list[int]):
    """Every split of ``items`` into unlabelled blocks with the multiset of ``sizes``."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for size in sorted(set(sizes)):
        left = list(sizes)
        left.remove(size)
        for mates in combinations(rest, size - 1):
            remaining = [i for i in rest if i not in mates]
            for tail in partitions(remaining, left):
                yield [(first, *mates), *tail]


def brute_force(problem) -> float:
    """Optimum by enumerating every partition of every conv group's channels into its group sizes."""
    best_per_class = []
    classes = np.unique(problem.chan_class)
    for j in classes:
        chans = [int(i) for i in np.flatnonzero(problem.chan_class == j)]
        slots = np.flatnonzero(problem.group_class == j)
        sizes = [int(problem.sizes[a]) for a in slots]
        best_per_class.append([(blocks, slots) for blocks in partitions(chans, sizes)])
    best = -1.0

    def assign(k, g):
        nonlocal best
        if k == len(classes):
            best = max(best, assignment_value(problem, g))
            return
        for blocks, slots in best_per_class[k]:
            free = list(slots)
            for block in blocks:
                a = next(a for a in free if problem.sizes[a] == len(block))
                free.remove(a)
                g[list(block)] = a
            assign(k + 1, g)

    assign(0, np.zeros(len(problem.chan_class), np.int64))
    return best


def random_problem(seed: int, c_out: int, c_in: int, kin: int, frac: float, groups: int = 1, kout=None):
    rng = np.random.default_rng(seed)
    imp = rng.random((c_out, c_in // groups)) ** 3
    probe = build_problem(imp, kin=kin, budget=0, groups=groups, kout=kout)
    return build_problem(imp, kin=kin, budget=round(frac * probe.valid.sum()), groups=groups, kout=kout)


def is_bijection(perm, n):
    return sorted(np.asarray(perm).tolist()) == list(range(n))


@pytest.mark.parametrize("seed,c_out,c_in,kin,frac", [
    (0, 6, 10, 3, 0.4), (1, 8, 10, 4, 0.3), (2, 5, 9, 3, 0.5), (3, 7, 10, 2, 0.25), (4, 4, 10, 5, 0.6),
])
def test_solver_matches_brute_force(seed, c_out, c_in, kin, frac):
    problem = random_problem(seed, c_out, c_in, kin, frac)
    result = solve(problem, time_limit_s=20)
    optimum = brute_force(problem)
    assert is_bijection(result.perm, c_in)
    assert result.objective == pytest.approx(optimum, rel=1e-9)
    assert objective(problem, result.perm) == pytest.approx(result.objective, rel=1e-12)
    assert result.status == "optimal" and result.method in ("identity", "heuristic", "alternating", "mip")
    assert result.upper_bound >= optimum * (1 - 1e-12)
    assert upper_bound(problem) >= optimum * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), c_out=st.integers(1, 6), c_in=st.integers(2, 8), kin=st.integers(1, 4),
       frac=st.floats(0.0, 1.0))
def test_random_small_instances(seed, c_out, c_in, kin, frac):
    problem = random_problem(seed, c_out, c_in, kin, frac)
    identity = objective(problem, np.arange(c_in))
    optimum = brute_force(problem)
    assert upper_bound(problem) >= optimum * (1 - 1e-12) - 1e-12
    fast = heuristic(problem, seed=seed)
    assert is_bijection(np.argsort(fast, kind="stable"), c_in)
    assert identity - 1e-12 <= assignment_value(problem, fast) <= optimum * (1 + 1e-12)
    result = solve(problem, time_limit_s=20)
    assert is_bijection(result.perm, c_in)
    assert result.objective >= identity - 1e-12
    assert result.objective == pytest.approx(optimum, rel=1e-9, abs=1e-12)
    assert 0.0 <= result.gap <= 1.0


def test_grouped_layer_permutes_within_groups_and_matches_brute_force():
    problem = random_problem(5, 6, 8, 2, 0.4, groups=2)
    result = solve(problem, time_limit_s=20)
    perm = result.perm
    assert is_bijection(perm, 8)
    assert set(perm[:4].tolist()) == {0, 1, 2, 3} and set(perm[4:].tolist()) == {4, 5, 6, 7}
    assert result.objective == pytest.approx(brute_force(problem), rel=1e-9)


def test_crossbar_grain_variant_counts_blocks():
    rng = np.random.default_rng(7)
    imp = rng.random((8, 9)) ** 3
    problem = build_problem(imp, kin=3, kout=4, budget=3)
    assert problem.scores.shape == (2, 9)
    np.testing.assert_allclose(problem.scores[1], imp[4:].sum(0))
    result = solve(problem, time_limit_s=20)
    assert result.objective == pytest.approx(brute_force(problem), rel=1e-9)


def test_never_worse_than_identity_on_a_larger_layer():
    problem = random_problem(11, 32, 64, 8, 0.4)
    result = solve(problem, time_limit_s=5, kicks=5)
    assert is_bijection(result.perm, 64)
    assert result.objective >= result.heuristic_objective >= result.identity_objective
    assert result.upper_bound >= result.objective
    assert result.status in ("feasible", "optimal")


def test_planted_clusters_are_recovered():
    rng = np.random.default_rng(3)
    c_in, kin = 64, 8
    cluster = rng.permutation(np.arange(c_in) // kin)
    imp = (rng.random((24, c_in // kin)) < 0.25)[:, cluster] + 0.01 * rng.random((24, c_in))
    problem = build_problem(imp, kin=kin, budget=int(0.25 * 24 * 8))
    planted = assignment_value(problem, cluster)
    assert assignment_value(problem, heuristic(problem)) >= planted * (1 - 1e-9)


def test_fallback_warns_and_returns_the_best_permutation(monkeypatch):
    problem = random_problem(0, 6, 10, 3, 0.4)
    monkeypatch.setattr(reorder_solve, "transport", lambda problem, profit: (None, "BAD_COST_RANGE"))
    with pytest.warns(XBWarning, match=r"\[XB230\].*BAD_COST_RANGE"):
        result = solve(problem, time_limit_s=5)
    assert result.status == "fallback"
    assert is_bijection(result.perm, 10)
    assert result.objective >= result.identity_objective


def test_time_limit_zero_falls_back_to_identity():
    problem = random_problem(1, 6, 10, 3, 0.4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve(problem, time_limit_s=0.0)
    assert result.status == "fallback" and any("XB230" in str(w.message) for w in caught)
    assert result.objective == pytest.approx(result.identity_objective)
    assert is_bijection(result.perm, 10)


def test_budget_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="budget"):
        build_problem(np.ones((2, 4)), kin=2, budget=5)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_permutation_preserves_the_function(groups):
    torch.manual_seed(0)
    conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
    conv2 = torch.nn.Conv2d(8, 4, 3, padding=1, groups=groups)
    x = torch.randn(2, 3, 6, 6)
    ref = conv2(F.relu(conv1(x)))
    problem = build_problem(kernel_energy(conv2.weight), kin=2, budget=4, groups=groups)
    perm = solve(problem, time_limit_s=10).perm
    w1, b1 = permute_outputs(conv1.weight, perm), permute_outputs(conv1.bias, perm)
    w2 = permute_inputs(conv2.weight, perm, groups)
    out = F.conv2d(F.relu(F.conv2d(x, w1, b1, padding=1)), w2, conv2.bias, padding=1, groups=groups)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_permute_inputs_rejects_cross_group_permutations():
    with pytest.raises(ValueError, match="conv group"):
        permute_inputs(torch.randn(4, 2, 1, 1), [2, 1, 0, 3], groups=2)


def test_groups_of_inverts_the_permutation():
    problem = random_problem(0, 4, 10, 3, 0.5)
    perm = np.random.default_rng(0).permutation(10)
    g = groups_of(problem, perm)
    assert all(g[perm[p]] == problem.slots[p] for p in range(10))
