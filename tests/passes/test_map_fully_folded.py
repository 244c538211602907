"""``map-fully-folded`` run alone through the PassManager (verify-each and numeric-check on).

Crossbar counts (``fully_folded_count``), block-diagonal packing of small groups, row/column tiles of
large matrices as half-open slices, every weight placed exactly once, plans per layer.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

from passes.map_fully_folded import MapFullyFoldedPass
from passes.place_tiles import PlaceTilesPass
from tests.models import MODELS
from tests.passes.harness import before_pass, check_golden, golden_text, run_passes
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.mapping.plan import fully_folded_count

# --- map-fully-folded -----------------------------------------------------------------------------------


def mapped(model: nn.Module, inputs: tuple, target="tiny"):
    """The program right before map-fully-folded, then the pass alone (verify-each, numeric-check)."""
    program, ctx = before_pass("map-fully-folded", model, inputs, target)
    return program, run_passes([MapFullyFoldedPass()], program, ctx), ctx


@pytest.mark.parametrize("groups,rows,cols,R,C,expected", [
    (1, 16, 4, 16, 4, (1, 1)),     # exactly one crossbar
    (1, 17, 4, 16, 4, (2, 1)),     # one row too many: a second row tile
    (1, 40, 10, 16, 4, (9, 1)),    # 3 row tiles x 3 column tiles
    (1, 1, 1, 16, 4, (1, 1)),
    (4, 2, 2, 16, 4, (2, 2)),      # block-diagonal: min(16 // 2, 4 // 2) = 2 groups per crossbar
    (8, 4, 1, 16, 4, (2, 4)),      # min(4, 4) = 4 per crossbar
    (3, 9, 1, 16, 4, (3, 1)),      # 9 rows: only one block fits per crossbar
    (2, 20, 4, 16, 4, (4, 1)),     # blocks larger than a crossbar are tiled alone: 2 x 2
    (32, 9, 1, 256, 64, (2, 28)),  # depthwise 3x3 on prime-like: min(256 // 9, 64) = 28 per crossbar
])
def test_fully_folded_count(groups, rows, cols, R, C, expected):
    count, per = fully_folded_count(groups, rows, cols, R, C)
    if groups > 1 and rows <= R and cols <= C:
        assert per == min(R // rows, C // cols)
        assert count == math.ceil(groups / per)
    else:
        assert per == 1 and count == groups * math.ceil(rows / R) * math.ceil(cols / C)
    assert (count, per) == expected


@settings(max_examples=200, deadline=None)
@given(groups=st.integers(1, 12), rows=st.integers(1, 70), cols=st.integers(1, 20),
       R=st.integers(1, 32), C=st.integers(1, 8))
def test_fully_folded_count_has_room_for_every_weight(groups, rows, cols, R, C):
    count, per = fully_folded_count(groups, rows, cols, R, C)
    assert count * R * C >= groups * rows * cols
    assert per >= 1 and count >= 1
    if per > 1:  # packed blocks are disjoint along the diagonal
        assert per * rows <= R and per * cols <= C


class Grouped(nn.Module):
    """A grouped 1x1 conv that packs block-diagonally, a conv that needs row and column tiles, a Linear."""

    def __init__(self):
        super().__init__()
        self.g = nn.Conv2d(8, 8, 1, groups=4)       # 4 blocks of 2x2
        self.big = nn.Conv2d(8, 10, 3, padding=1)   # 72 x 10 -> 5 row tiles x 3 column tiles on tiny
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc(self.big(torch.relu(self.g(x))).mean(dim=(2, 3)))


def test_plans_crossbars_and_slices():
    torch.manual_seed(0)
    before, program, ctx = mapped(Grouped().eval(), (torch.randn(2, 8, 4, 4),))
    assert "mapped" in ctx.properties and not program.placed
    assert before.crossbars == () and before.plans == {}  # the input program is untouched
    R, C = ctx.target.crossbar.rows, ctx.target.logical_cols
    assert (R, C) == (16, 4)
    plans = program.plans
    assert set(plans) == {"g", "big", "fc"}
    assert all(p.strategy == "fully-folded" and p.copies == 1 for p in plans.values())
    assert (plans["g"].crossbars, plans["g"].groups_per_crossbar) == (2, 2)
    assert (plans["big"].crossbars, plans["big"].row_tiles, plans["big"].col_tiles) == (15, 5, 3)
    assert (plans["fc"].crossbars, plans["fc"].row_tiles, plans["fc"].col_tiles) == (1, 1, 1)
    assert plans["big"].cycles == 16 and plans["fc"].cycles == 1
    assert len(program.crossbars) == 18
    assert [x.index for x in program.crossbars] == list(range(18))
    for name, plan in plans.items():
        assert len(program.layer_crossbars(name)) == plan.crossbars
    assert all((x.rows, x.cols, x.tile, x.chip) == (R, C, None, None) for x in program.crossbars)
    assert program.crossbars[0].id == "u0"
    # block-diagonal packing of the grouped conv
    g = [(s.crossbar, s.group, s.xrow, s.xcol) for s in program.slices if s.layer == "g"]
    assert g == [(0, 0, 0, 0), (0, 1, 2, 2), (1, 2, 0, 0), (1, 3, 2, 2)]
    # row and column tiles of the big conv: half-open ranges, the last ones short
    big = sorted((s.row_lo, s.row_hi, s.col_lo, s.col_hi) for s in program.slices if s.layer == "big")
    assert {(r0, r1) for r0, r1, _, _ in big} == {(0, 16), (16, 32), (32, 48), (48, 64), (64, 72)}
    assert {(c0, c1) for _, _, c0, c1 in big} == {(0, 4), (4, 8), (8, 10)}
    assert all((s.xrow, s.xcol) == (0, 0) for s in program.slices if s.layer == "big")


def test_each_weight_is_placed_exactly_once():
    torch.manual_seed(1)
    _, program, _ = mapped(Grouped().eval(), (torch.randn(2, 8, 4, 4),))
    for name, m in program.matrices.items():
        count = np.zeros(m.weight.shape, dtype=int)
        for s in program.slices:
            if s.layer == name:
                count[s.group, s.row_lo:s.row_hi, s.col_lo:s.col_hi] += 1
        assert (count == 1).all(), name


def test_verifier_catches_a_dropped_or_doubled_slice():
    torch.manual_seed(1)
    _, program, ctx = mapped(Grouped().eval(), (torch.randn(2, 8, 4, 4),))
    with pytest.raises(CompileError) as info:
        program.replace(slices=program.slices[1:]).verify(ctx.target)
    assert info.value.code == "XB303"
    s = program.slices[0]
    moved = s._replace(crossbar=1, xrow=4, xcol=0)  # the same block placed twice
    with pytest.raises(CompileError):
        program.replace(slices=program.slices + (moved,)).verify(ctx.target)


def test_prime_like_packs_the_depthwise_conv():
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(), nn.Conv2d(32, 64, 1)).eval()
    _, program, _ = mapped(model, (torch.randn(1, 32, 6, 6),), target="prime-like")
    assert (program.plans["_0"].crossbars, program.plans["_0"].groups_per_crossbar) == (2, 28)
    assert (program.plans["_2"].crossbars, program.plans["_2"].groups_per_crossbar) == (1, 1)


def test_mapping_invalidates_placement():
    torch.manual_seed(2)
    model, inputs = Grouped().eval(), (torch.randn(2, 8, 4, 4),)
    program, ctx = before_pass("map-fully-folded", model, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        placed = run_passes([MapFullyFoldedPass(), PlaceTilesPass()], program, ctx)
    assert placed.placed and "placed" in ctx.properties
    remapped = run_passes([MapFullyFoldedPass()], placed, ctx)
    assert not remapped.placed and "placed" not in ctx.properties
    assert all(x.tile is None for x in remapped.crossbars)


@pytest.mark.parametrize("target", ["tiny", "prime-like", "isaac-like"])
def test_compiled_mapping_emulates_exactly(target):
    import xbcompiler as xb

    torch.manual_seed(3)
    model, x = Grouped().eval(), torch.randn(2, 8, 4, 4)
    compiled = xb.compile(model, (x,), target, pipeline="fully-folded")
    assert xb.verify(compiled, model, (x,)).ok


@pytest.mark.parametrize("name", ["mobilenetv2_small", "shufflenet_small", "transformer_block", "conv1d_net"])
def test_zoo_crossbar_counts_add_up(name):
    case = MODELS[name]
    _, program, ctx = mapped(case.build(), (case.example_input(),))
    R, C = ctx.target.crossbar.rows, ctx.target.logical_cols
    assert len(program.crossbars) == sum(p.crossbars for p in program.plans.values())
    for name_, m in program.matrices.items():
        groups, K, N = m.weight.shape
        assert (program.plans[name_].crossbars, program.plans[name_].groups_per_crossbar) == \
            fully_folded_count(groups, K, N, R, C)


@pytest.mark.parametrize("model_name", ["convbn", "mlp", "functional_net"])
def test_golden(model_name):
    check_golden(f"{model_name}-map-fully-folded", golden_text(model_name, MapFullyFoldedPass()))
