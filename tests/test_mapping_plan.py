"""The mapping cost model and the slice-width search against background §2.2/2.3, written out by hand.

The background §2.3 worked example assumes 256x256 crossbars with one physical column per weight (SemiMap's
8-bit "virtual crossbar"). It is reproduced on a target, not by calling the model with ``m_c = 1``:
prime-like with ``encoding.signed = "offset"`` and ``precision.weight_bits = crossbar.cell_bits = 8``
(one 8-bit cell per offset-encoded weight), asserted to give ``m_c == 1``.
"""

from __future__ import annotations

from math import ceil

import pytest

import xbcompiler as xb
from xbcompiler.mapping.plan import ArraySpec, fully_folded, toeplitz_plan
from xbcompiler.mapping.search import Objective, search
from xbcompiler.mapping.shape import LayerShape

SPEC_TARGET = {"crossbar.rows": 256, "crossbar.cols": 256, "crossbar.cell_bits": 8, "precision.weight_bits": 8,
               "encoding.signed": "offset"}


@pytest.fixture(scope="module")
def arr() -> ArraySpec:
    target = xb.load_target("prime-like", SPEC_TARGET)
    assert target.m_c == 1 and target.logical_cols == 256 and target.crossbar.rows == 256
    return ArraySpec.of(target)


def conv(cin, cout, hw, k=3, s=1, p=1, d=1, groups=1) -> LayerShape:
    out = (hw + 2 * p - d * (k - 1) - 1) // s + 1
    return LayerShape(groups, cin // groups, cout // groups, (k, k), (s, s), (p, p), (d, d), (hw, hw), (out, out))


# (layer, fully-folded crossbars, cycles, semi-folded crossbars, w_o, Kin, Kout, n_w, phases, unfolded bound)
SPEC_2_3 = [
    (conv(128, 128, 32), 5, 1024, 112, 2, 21, 128, 16, 32, 3584),
    (conv(64, 64, 224), 3, 50176, 280, 4, 14, 64, 56, 224, 62720),
    (conv(512, 512, 14), 36, 196, 532, 1, 28, 256, 14, 14, 7448),
]


@pytest.mark.parametrize("row", SPEC_2_3, ids=["128ch-32x32", "64ch-224x224", "512ch-14x14"])
def test_spec_2_3_table(arr, row):
    shape, ff_x, ff_cycles, semi_x, w_o, kin, kout, n_w, phases, unfolded = row
    ff = fully_folded(shape, arr)
    assert (ff.crossbars, ff.phases) == (ff_x, ff_cycles)
    semi = search("semi-folded", shape, arr)
    assert (semi.crossbars, semi.w_o, semi.kin, semi.kout, semi.n_w, semi.phases) == (semi_x, w_o, kin, kout, n_w, phases)
    full = search("fully-unfolded", shape, arr)
    # our fully-unfolded placement gives each output row its own copy: it meets the bound H' x semi exactly
    assert full.crossbars == unfolded == shape.out_hw[0] * semi.crossbars
    assert (full.phases, full.row_copies, full.w_o) == (1, shape.out_hw[0], semi.w_o)
    # the ratios background §2.3 states: semi vs fully-folded phases W', semi vs fully-unfolded crossbars H'
    assert ff.phases // semi.phases == shape.out_hw[1] and full.crossbars // semi.crossbars == shape.out_hw[0]


def test_spec_2_3_slice_width_sweep(arr):
    shape = SPEC_2_3[0][0]
    sweep = {w_o: toeplitz_plan("semi-folded", shape, arr, w_o).crossbars for w_o in (32, 16, 8, 4, 2, 1)}
    assert sweep == {32: 1024, 16: 512, 8: 256, 4: 160, 2: 112, 1: 160}
    # every w_o has the same number of phases: one output row each
    assert {toeplitz_plan("semi-folded", shape, arr, w).phases for w in range(1, 33)} == {32}


def test_spec_2_2_formulas_for_every_slice_width(arr):
    shape = conv(96, 80, 27, k=5, s=2, p=2)
    h_out, w_out = shape.out_hw
    for w_o in range(1, w_out + 1):
        plan = toeplitz_plan("semi-folded", shape, arr, w_o)
        w_i = (w_o - 1) * 2 + 5
        kin, kout = min(96, 256 // (5 * w_i)), min(80, 256 // w_o)
        if kin == 0:  # one channel's 5 kernel rows do not fit: they are split
            assert plan.kin == 1 and plan.kernel_row_splits == ceil(5 / (256 // w_i))
            continue
        n_w = ceil(w_out / w_o)
        assert (plan.w_i, plan.kin, plan.kout, plan.n_w) == (w_i, kin, kout, n_w)
        assert plan.crossbars == n_w * ceil(96 / kin) * ceil(80 / kout)
        assert plan.partial_sum_fanin == ceil(96 / kin)
        assert plan.copies == w_o * n_w and plan.phases == h_out


def test_fully_folded_is_the_im2col_tiling():
    arr = ArraySpec(128, 128, 8)  # isaac-like: 16 logical columns
    shape = conv(64, 40, 10, k=3, s=2)
    plan = fully_folded(shape, arr)
    k = 64 * 9
    assert (plan.crossbars, plan.row_tiles, plan.col_tiles) == (ceil(k / 128) * ceil(40 / 16), ceil(k / 128), 3)
    assert plan.phases == plan.cycles == 5 * 5 and plan.copies == 1 and plan.partial_sum_fanin == ceil(k / 128)
    assert plan.partial_sum_additions == (ceil(k / 128) - 1) * 40 * 25
    assert plan.accumulation_crossbars == ceil(40 / min(16, 128 // ceil(k / 128)))
    assert plan.logical_crossbars == ceil(k / 128) * ceil(40 / 128)


def test_counts_separate_logical_from_physical_columns():
    # prime-like: m_c = 4 (a differential pair of two 4-bit cells), 64 logical columns of 256 physical
    target = xb.load_target("prime-like")
    arr = ArraySpec.of(target)
    assert (arr.cols, arr.physical_cols, arr.m_c) == (64, 256, 4)
    shape = conv(128, 128, 32)
    plan = toeplitz_plan("semi-folded", shape, arr, 2)
    assert plan.kout == 64 // 2 and plan.crossbars == 16 * 7 * 4  # Kout = floor(C / (w_o m_c))
    assert plan.logical_crossbars == 112  # the background §2.3 count with one column per weight


def test_kernel_row_splitting_and_channel_tails():
    arr = ArraySpec(16, 16)
    shape = conv(3, 4, 9, k=5, p=0)  # 5 kernel rows of w_i >= 5 columns do not fit 16 rows
    plan = toeplitz_plan("semi-folded", shape, arr, 1)
    assert (plan.w_i, plan.kin, plan.kernel_row_splits, plan.kernel_rows_per_split) == (5, 1, 2, 3)
    assert plan.partial_sum_fanin == 3 * 2 and plan.crossbars == 5 * 3 * 2 * 1
    tails = toeplitz_plan("semi-folded", conv(10, 4, 8, k=1, p=0), arr, 2)
    assert (tails.kin, tails.row_tiles) == (8, 2)  # 10 channels: a group of 8 and a tail of 2
    assert toeplitz_plan("semi-folded", conv(3, 4, 40, k=17, p=0), arr, 1) is None  # a kernel row > 16 rows


def test_linear_is_the_degenerate_case():
    arr = ArraySpec(128, 128, 8)
    shape = LayerShape(1, 300, 40, (1, 1), (1, 1), (0, 0), (1, 1), (16, 1), (16, 1))  # 16 token vectors
    semi, ff = search("semi-folded", shape, arr), fully_folded(shape, arr)
    assert (semi.w_o, semi.n_w, semi.kin, semi.kout) == (1, 1, 128, 16)
    assert semi.crossbars == ff.crossbars == ceil(300 / 128) * ceil(40 / 16)
    assert semi.phases == ff.phases == 16
    assert search("fully-unfolded", shape, arr).crossbars == 16 * semi.crossbars


def test_grouped_layers_pack_block_diagonally():
    arr = ArraySpec(64, 64)
    shape = conv(32, 32, 8, groups=32)  # depthwise 3x3
    plan = toeplitz_plan("semi-folded", shape, arr, 8)
    w_i = 10
    per = min(64 // (3 * w_i), 64 // 8)
    assert plan.groups_per_crossbar == per == 2 and plan.crossbars == ceil(32 / per)
    assert plan.partial_sum_fanin == 1 and plan.accumulation_crossbars == 0


def test_search_breaks_ties_towards_fewer_partial_sums_and_reports_alternatives(arr):
    shape = SPEC_2_3[0][0]
    plan = search("semi-folded", shape, arr, alternatives=2)
    # w_o = 1 and w_o = 4 both need 160 crossbars; 1 has fan-in 5, 4 has fan-in 10
    assert [(a.w_o, a.crossbars, a.partial_sum_fanin) for a in plan.alternatives] == [(1, 160, 5), (4, 160, 10)]
    assert plan.cost == 112


def test_weighted_objective_and_fixed_slice_width(arr):
    shape = SPEC_2_3[0][0]
    accumulate = search("semi-folded", shape, arr, objective=Objective(1.0, 0.0, 1.0))
    assert accumulate.partial_sum_fanin < search("semi-folded", shape, arr).partial_sum_fanin
    assert accumulate.cost == accumulate.crossbars + accumulate.partial_sum_additions
    fixed = search("semi-folded", shape, arr, w_o=8)
    assert (fixed.w_o, fixed.crossbars) == (8, 256) and fixed.alternatives[0].w_o == 2
    assert search("semi-folded", shape, arr, w_o=1000).w_o == 32  # clipped to W'


def test_replication_budget_and_period():
    from xbcompiler.mapping.replication import ReplicationProblem, greedy

    problem = ReplicationProblem(("a", "b", "c"), (32, 16, 8), (10, 20, 5), budget=60)
    best = min((max(ceil(p / r) for p, r in zip(problem.phases, rs)), rs)
               for rs in ((ra, rb, rc) for ra in range(1, 33) for rb in range(1, 17) for rc in range(1, 9))
               if problem.cost(rs) <= problem.budget)
    solution = greedy(problem)
    assert solution.period == best[0] and problem.cost(solution.replicas) <= problem.budget
