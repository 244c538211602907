"""``place-tiles`` run alone through the PassManager (verify-each and numeric-check on).

Crossbars fill tiles in layer order (``tile, slot = divmod(index, crossbars_per_tile)``, ``chip =
tile // tiles``); more than one chip is an XBWarning, more than ``max_chips`` is XB302.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

from passes.place_tiles import PlaceTilesPass
from tests.passes.harness import before_pass, check_golden, golden_text, run_passes
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.target import load_target

# --- place-tiles ----------------------------------------------------------------------------------------


class Grouped(nn.Module):
    """18 crossbars on tiny: a grouped 1x1 conv (2), a 72x10 conv (15), a Linear (1)."""

    def __init__(self):
        super().__init__()
        self.g = nn.Conv2d(8, 8, 1, groups=4)
        self.big = nn.Conv2d(8, 10, 3, padding=1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc(self.big(torch.relu(self.g(x))).mean(dim=(2, 3)))


def small_chip(tiles: int = 1, per_tile: int = 4):
    """``tiny`` with fewer tiles and crossbars, so that small models need several chips."""
    return load_target("tiny", {"hierarchy.tiles": tiles, "hierarchy.crossbars_per_tile": per_tile})


def placed(model: nn.Module, inputs: tuple, target="tiny", **options):
    """The program right before place-tiles, then the pass alone (verify-each, numeric-check)."""
    program, ctx = before_pass("place-tiles", model, inputs, target)
    return program, run_passes([PlaceTilesPass(**options)], program, ctx), ctx


def inputs_for_grouped(seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    return Grouped().eval(), (torch.randn(2, 8, 4, 4),)


def test_one_chip_no_warning():
    model, inputs = inputs_for_grouped()
    with warnings.catch_warnings():
        warnings.simplefilter("error", XBWarning)
        before, program, ctx = placed(model, inputs)
    h = ctx.target.hierarchy
    assert (h.tiles, h.crossbars_per_tile) == (16, 8)
    assert program.placed and "placed" in ctx.properties and not before.placed
    assert [(x.tile, x.slot, x.chip) for x in program.crossbars] == \
        [(i // 8, i % 8, 0) for i in range(18)]
    assert [x.id for x in program.crossbars][:3] == ["t0.x0", "t0.x1", "t0.x2"]
    assert program.crossbars[-1].id == "t2.x1"
    report = ctx.report["place-tiles"]
    assert (report["chips"], report["tiles"], report["method"]) == (1, 3, "fill")
    assert ctx.warnings == []
    # placement changes only where crossbars are, never what they hold or how layers are mapped
    assert program.slices == before.slices
    assert {k: (p.strategy, p.crossbars) for k, p in program.plans.items()} == \
        {k: (p.strategy, p.crossbars) for k, p in before.plans.items()}
    assert [(x.layer, x.rows, x.cols) for x in program.crossbars] == \
        [(x.layer, x.rows, x.cols) for x in before.crossbars]
    program.verify(ctx.target)


def test_layers_are_placed_in_topological_order():
    model, inputs = inputs_for_grouped()
    _, program, _ = placed(model, inputs)
    order = [x.layer for x in program.crossbars]
    assert order == ["g"] * 2 + ["big"] * 15 + ["fc"]


@pytest.mark.parametrize("tiles,per_tile,chips", [(1, 4, 5), (2, 4, 3), (3, 3, 2), (1, 18, 1)])
def test_more_than_one_chip_warns(tiles, per_tile, chips):
    model, inputs = inputs_for_grouped()
    target = small_chip(tiles, per_tile)
    if chips == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("error", XBWarning)
            _, program, ctx = placed(model, inputs, target)
    else:
        with pytest.warns(XBWarning, match=rf"needs {chips} chips: 18 crossbars, {tiles * per_tile} per chip"):
            _, program, ctx = placed(model, inputs, target)
        assert len(ctx.warnings) == 1 and f"{chips} chips" in ctx.warnings[0]
    assert ctx.report["place-tiles"]["chips"] == chips
    assert max(x.chip for x in program.crossbars) == chips - 1
    for x in program.crossbars:
        assert (x.tile, x.slot) == divmod(x.index, per_tile) and x.chip == x.tile // tiles
        assert x.slot < per_tile
    assert len({x.id for x in program.crossbars}) == 18
    program.verify(target)


def test_max_chips_refuses_with_xb302():
    model, inputs = inputs_for_grouped()
    program, ctx = before_pass("place-tiles", model, inputs, small_chip(1, 4))
    with pytest.raises(CompileError) as info:
        run_passes([PlaceTilesPass(max_chips=4)], program, ctx)
    err = info.value
    assert err.code == "XB302" and err.hint and "5 chips" in err.message
    assert any("place-tiles" in note for note in err.__notes__)
    assert not program.placed  # the input program is unchanged


@pytest.mark.parametrize("max_chips", [5, 6])
def test_max_chips_at_or_above_the_need_places_with_a_warning(max_chips):
    model, inputs = inputs_for_grouped()
    with pytest.warns(XBWarning):
        _, program, ctx = placed(model, inputs, small_chip(1, 4), max_chips=max_chips)
    assert program.placed and ctx.report["place-tiles"]["chips"] == 5


def test_max_chips_through_the_driver():
    import xbcompiler as xb

    model, inputs = inputs_for_grouped()
    with pytest.raises(CompileError) as info:
        xb.compile(model, inputs, small_chip(1, 4),
                   pipeline="fold-batchnorm,lower-im2col,lower-to-xbar,map-fully-folded,place-tiles{max-chips=2}")
    assert info.value.code == "XB302"


def test_a_model_without_crossbar_layers_is_placed_on_one_chip():
    model, inputs = nn.Sequential(nn.ReLU(), nn.Flatten()), (torch.randn(2, 3, 4),)
    with warnings.catch_warnings():
        warnings.simplefilter("error", XBWarning)
        _, program, ctx = placed(model, inputs)
    assert program.placed and program.crossbars == ()
    assert (ctx.report["place-tiles"]["chips"], ctx.report["place-tiles"]["tiles"]) == (1, 0)


def test_placement_misuse_is_caught_by_the_verifier():
    model, inputs = inputs_for_grouped()
    _, program, ctx = placed(model, inputs)
    xs = list(program.crossbars)
    xs[1] = xs[1]._replace(tile=0, slot=0)  # two crossbars at t0.x0
    with pytest.raises(CompileError) as info:
        program.replace(crossbars=tuple(xs)).verify(ctx.target)
    assert info.value.code == "XB303"
    xs = list(program.crossbars)
    xs[0] = xs[0]._replace(slot=8)  # beyond 8 crossbars per tile
    with pytest.raises(CompileError):
        program.replace(crossbars=tuple(xs)).verify(ctx.target)
    xs = list(program.crossbars)
    xs[2] = xs[2]._replace(tile=None, slot=None, chip=None)  # a placed program with an unplaced crossbar
    with pytest.raises(CompileError, match="has no tile"):
        program.replace(crossbars=tuple(xs)).verify(ctx.target)


@pytest.mark.parametrize("tiles,per_tile", [(16, 8), (2, 3), (1, 5)])
def test_min_traffic_never_does_worse_than_fill(tiles, per_tile):
    model, inputs = inputs_for_grouped()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        _, fill, ctx_fill = placed(model, inputs, small_chip(tiles, per_tile))
        _, best, ctx = placed(model, inputs, small_chip(tiles, per_tile), method="min-traffic")
    report = ctx.report["place-tiles"]
    assert report["objective_bits"] <= report["fill_bits"] == ctx_fill.report["place-tiles"]["objective_bits"]
    assert report["chips"] <= ctx_fill.report["place-tiles"]["chips"]
    assert sorted((x.tile, x.slot) for x in best.crossbars) == sorted({(x.tile, x.slot) for x in best.crossbars})
    assert best.slices == fill.slices
    best.verify(ctx.target)


@pytest.mark.parametrize("target", ["tiny", "multi-chip"])
def test_placed_program_emits_and_emulates_exactly(target):
    import xbcompiler as xb

    model, inputs = inputs_for_grouped(4)
    tgt = small_chip(2, 3) if target == "multi-chip" else target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        compiled = xb.compile(model, inputs, tgt, pipeline="fully-folded")
    ids = [x.id for x in compiled.netlist.crossbars]
    assert ids == [x.id for x in compiled.program.crossbars] and len(set(ids)) == len(ids)
    assert xb.verify(compiled, model, inputs).ok


@pytest.mark.parametrize("model_name", ["convbn", "mlp", "functional_net"])
def test_golden(model_name):
    check_golden(f"{model_name}-place-tiles", golden_text(model_name, PlaceTilesPass()))


def test_golden_failure_too_many_chips():
    # functional_net needs 138 crossbars, two chips of tiny's 128
    check_golden("functional_net-place-tiles-max-chips", golden_text("functional_net", PlaceTilesPass(max_chips=1)))
