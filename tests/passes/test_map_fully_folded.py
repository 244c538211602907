"""``map-fully-folded`` run alone through the PassManager (verify-each and numeric-check on).

Crossbar counts (``fully_folded_count``), block-diagonal packing of small groups, row/column tiles of
large matrices as half-open slices, every weight placed exactly once, plans per layer.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

from passes.map_fully_folded import MapFullyFoldedPass, fully_folded_count
from passes.place_tiles import PlaceTilesPass
from tests.models import MODELS
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.frontend.ops import HOST_OPS
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.matrix import conv_via_im2col
from xbcompiler.ir.printer import print_ir
from xbcompiler.ir.program import XbarProgram
from xbcompiler.ir.values import decode
from xbcompiler.pipeline import (
    NumericCheck,
    Pass,
    PassContext,
    PassManager,
    VerifyEach,
    format_pipeline,
    resolve_pipeline,
)
from xbcompiler.target import load_target

# --- harness: the same block in every tests/passes/test_*.py (there is no tests/passes/conftest.py) ---
#
# Golden files: tests/passes/golden/<model>-<pass>.txt hold our own printer's dump (print_ir) of the IR
# before and after the pass, the earlier passes of the ``fully-folded`` pipeline applied first. After an
# intended change, regenerate them and review the diff:
#
#     XB_UPDATE_GOLDEN=1 python -m pytest tests/passes
#
# A failure case ends in "--- error" and the diagnostic code instead of the "--- after" dump.

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("XB_UPDATE_GOLDEN") == "1"


def run_program(program: XbarProgram, inputs: tuple):
    """Execute a crossbar program directly: host ops from the allow-list, layers through their matrices.

    Placement is ignored (the mapping passes are checked by the verifier and by emulating the
    netlist); this lets the numeric-check instrument compare a program against its graph.
    """
    env: dict = {}
    for node in program.nodes:
        if node.op == "input":
            env[node.name] = inputs[int(node.target)]
        elif node.op == "const":
            env[node.name] = torch.from_numpy(program.constants[node.target])
        elif node.op == "host":
            args = decode(list(node.args), env)
            kwargs = {k: decode(v, env) for k, v in node.kwargs}
            env[node.name] = HOST_OPS[node.target].fn(*args, **kwargs)
        else:  # xbar
            m = program.matrices[node.target]
            bias = None if m.bias is None else torch.from_numpy(m.bias)
            env[node.name] = conv_via_im2col(env[node.args[0]["ref"]], torch.from_numpy(m.weight), bias, m.geometry)
    return decode(program.output, env)


def run_ir(ir, inputs: tuple):
    with torch.no_grad():
        return ir(*inputs) if isinstance(ir, fx.GraphModule) else run_program(ir, inputs)


def make_context(inputs: tuple, target="tiny", **changes) -> PassContext:
    """The context the driver builds (verify, run and print hooks), for running passes alone."""
    tgt = load_target(target) if isinstance(target, str) else target

    def verify_ir(ir) -> None:
        if isinstance(ir, XbarProgram):
            ir.verify(tgt)
        else:
            ir.graph.lint()

    fields = {"target": tgt, "example_inputs": inputs, "check_inputs": tuple(t[:1].clone() for t in inputs),
              "verify_ir": verify_ir, "run_ir": run_ir, "print_ir": print_ir, "properties": {"traced", "shapes"}}
    return PassContext(**{**fields, **changes})


def run_passes(passes, ir, ctx: PassContext, numeric: bool = True):
    """Run ``passes`` through the PassManager with verify-each (and numeric-check) on."""
    instruments = [VerifyEach(), NumericCheck()] if numeric else [VerifyEach()]
    stage = "graph" if isinstance(ir, fx.GraphModule) else "xbar"
    return PassManager(list(passes), instruments).run(ir, ctx, stage=stage)


def prefix_of(pass_name: str) -> list:
    """The passes of the ``fully-folded`` pipeline before ``pass_name``."""
    passes = resolve_pipeline("fully-folded")
    return passes[: [p.name for p in passes].index(pass_name)]


def before_pass(pass_name: str, model: nn.Module, inputs: tuple, target="tiny", **changes):
    """(IR right before ``pass_name`` in the ``fully-folded`` pipeline, its context)."""
    ctx = make_context(inputs, target, **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        return run_passes(prefix_of(pass_name), trace(model, inputs), ctx), ctx


def golden_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Small seeded models for the golden dumps: name -> (model in eval mode, input shape)."""
    torch.manual_seed(0)
    convbn = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.Conv2d(4, 4, 1, groups=2), nn.BatchNorm2d(4, affine=False),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4), nn.Linear(4, 3))
    return {"convbn": (convbn.eval(), (1, 2, 6, 6)),
            "mlp": (MODELS["mlp"].build(), MODELS["mlp"].input_shape),
            "functional_net": (MODELS["functional_net"].build(), MODELS["functional_net"].input_shape)}


def golden_text(model_name: str, pass_: Pass, target="tiny") -> str:
    model, shape = golden_models()[model_name]
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)
    ir, ctx = before_pass(pass_.name, model, inputs, target)
    done = format_pipeline(prefix_of(pass_.name)) or "trace"
    lines = [f"# {model_name} through '{pass_}' on '{target}', after: {done}",
             "# regenerate: XB_UPDATE_GOLDEN=1 python -m pytest tests/passes", "--- before", print_ir(ir)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", XBWarning)
            after = run_passes([pass_], ir, ctx)
    except CompileError as exc:
        lines += ["--- error", exc.code + "\n"]
    else:
        lines += ["--- after", print_ir(after)]
    return "\n".join(lines)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; create it with XB_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "now", n=2))
        pytest.fail(f"{path.name} differs from the golden dump (XB_UPDATE_GOLDEN=1 regenerates it):\n{diff}")

# --- end of harness -------------------------------------------------------------------------------------


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
    moved = dataclasses.replace(s, crossbar=1, xrow=4, xcol=0)  # the same block placed twice
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
