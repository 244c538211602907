"""``map-semi-folded`` run alone through the PassManager (verify-each and numeric-check on).

Plans follow the cost model of docs/mapping.md, the program verifier accepts the block-Toeplitz
placement, and the emitted netlists equal torch in the ideal emulator (relative error below 1e-5) on
the model zoo, on single layers with stride, odd widths, dilation, grouped/depthwise kernels and
kernel-row splits, and when the schedule is replayed phase by phase.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from passes.map_semi_folded import MapSemiFoldedPass
from tests.conftest import zoo_compile
from tests.models import MODELS
from tests.passes.harness import before_pass, check_golden, golden_models, prefix_of, run_passes
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.emulator.literal import derived_cells, read_back
from xbcompiler.ir.printer import print_ir
from xbcompiler.mapping.plan import ArraySpec
from xbcompiler.mapping.search import search
from xbcompiler.mapping.shape import shape_of
from xbcompiler.netlist.placement import footprint
from xbcompiler.pipeline import format_pipeline

# --- map-semi-folded ------------------------------------------------------------------------------------

PIPELINE = "semi-folded"
STRICT = 1e-5


def mapped(model: nn.Module, inputs: tuple, target="tiny", **options):
    """(program before, after map-semi-folded run alone, context)."""
    program, ctx = before_pass("map-fully-folded", model, inputs, target)  # the same prefix for every mapping
    return program, run_passes([MapSemiFoldedPass(**options)], program, ctx), ctx


def compile_case(name: str, target: str, pipeline: str = PIPELINE):
    from tests.mapping_cases import single_layer

    model, x = single_layer(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        return model, x, xb.compile(model, (x,), target, pipeline)


def test_plans_are_the_cost_model_and_blocks_verify():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    before, program, ctx = mapped(model, (torch.randn(2, 3, 8, 8),), "isaac-like")
    arr = ArraySpec.of(ctx.target)
    assert not program.placed and "mapped" in ctx.properties
    for name, plan in program.plans.items():
        expected = search("semi-folded", shape_of(program.matrices[name]), arr, layer=name)
        assert plan == expected
        assert plan.strategy == "semi-folded" and len(program.layer_crossbars(name)) == plan.crossbars
    assert program.slices == () and len(program.blocks) >= len(program.crossbars)
    report = ctx.report["map-semi-folded"]
    assert report["crossbars"] == len(program.crossbars)
    assert set(report["layers"]) == set(program.plans)
    first = next(iter(report["layers"].values()))
    assert {"w_o", "crossbars", "cost", "alternatives"} <= set(first)
    program.verify(ctx.target)
    # mapping never changes what the program computes
    assert program.matrices == before.matrices and program.nodes == before.nodes


def test_options_fix_the_slice_width_and_weight_the_objective():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1)).eval()
    inputs = (torch.randn(1, 16, 12, 12),)
    _, fixed, _ = mapped(model, inputs, "isaac-like", w_o=3, alternatives=1)
    plan = next(iter(fixed.plans.values()))
    assert plan.w_o == 3 and plan.n_w == 4 and len(plan.alternatives) == 1
    _, weighted, _ = mapped(model, inputs, "isaac-like", accumulation_weight=1.0)
    _, default, _ = mapped(model, inputs, "isaac-like")
    w, d = next(iter(weighted.plans.values())), next(iter(default.plans.values()))
    assert w.cost == w.crossbars + w.partial_sum_additions and d.cost == d.crossbars
    assert w.partial_sum_fanin <= d.partial_sum_fanin


def test_a_kernel_row_wider_than_the_crossbar_is_xb301():
    model = nn.Sequential(nn.Conv2d(1, 2, (1, 9), dilation=(1, 3))).eval()  # one kernel row spans 25 > 16 rows
    program, ctx = before_pass("map-fully-folded", model, (torch.randn(1, 1, 4, 30),), "tiny")
    with pytest.raises(CompileError) as err:
        run_passes([MapSemiFoldedPass()], program, ctx)
    assert err.value.code == "XB301" and "fully-folded" in err.value.hint


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_netlists_equal_torch(name):
    zc = zoo_compile(name, "prime-like", PIPELINE)
    netlist, tgt = zc.compiled.netlist, zc.compiled.target
    report = xb.verify(netlist, zc.model, (zc.x,))
    if name == "resnet56":  # 56 stacked float32 layers: rounding reaches ~2e-5 per layer (test_end_to_end.py)
        assert report.ok and report.output_rel < STRICT, report.to_dict()
    else:
        assert report.ok and report.max_rel < STRICT, report.to_dict()
    for layer in netlist.layers:
        assert layer.strategy == "semi-folded"
        assert layer.kin > 0 and layer.kout > 0 and layer.w_o > 0 and layer.n_w > 0 and layer.replicas >= 1
        assert layer.partial_sum_fanin >= 0 and isinstance(layer.alternatives, list)
        # the matrix is stored once; every crossbar of the layer derives rows x logical-cols cells from it
        assert netlist.weight(layer).shape == (layer.groups, layer.matrix_rows, layer.n_g)
        xbars = netlist.layer_crossbars(layer)
        assert len(xbars) == layer.crossbars
        assert all((x.rows, x.cols) == (tgt.crossbar.rows, tgt.logical_cols) for x in xbars)
        assert netlist.crossbar_cells(xbars[0].id).shape == (tgt.crossbar.rows, tgt.logical_cols)
        assert layer.phases == layer.schedule.phases == layer.schedule.period
    summary = netlist.summary
    assert summary["crossbars"] == len(netlist.crossbars) == summary["crossbars_with_replicas"]
    assert summary["pipeline_period"] == max(layer.phases for layer in netlist.layers)
    assert {"accumulation_crossbars", "partial_sum_additions", "tile_traffic_bits"} <= set(summary)


@pytest.mark.parametrize("name", ["functional_net", "mobilenetv2_small", "conv1d_net", "transformer_block"])
def test_row_block_reader_gives_the_matrices_back(name):
    zc = zoo_compile(name, "prime-like", PIPELINE)
    netlist, program = zc.compiled.netlist, zc.compiled.program
    for layer in netlist.layers:
        blocks = read_back(layer, netlist.layer_crossbars(layer), derived_cells(netlist, layer))
        weight = program.matrices[layer.name].weight
        rebuilt, count = np.zeros_like(weight), np.zeros(weight.shape[:2], dtype=int)
        for b in blocks:
            assert list(b.rows) == sorted(b.rows) and b.weight.shape == (len(b.rows), weight.shape[2])
            rebuilt[b.group][b.rows] = b.weight
            count[b.group][b.rows] += 1
        assert (count == 1).all()
        np.testing.assert_array_equal(rebuilt, weight)


@pytest.mark.parametrize("target", ["tiny", "isaac-like"])
@pytest.mark.parametrize("case", ["stride2_odd", "dilation2", "depthwise", "grouped_stride_1x2", "kernel7x3",
                                  "pointwise_tails", "conv1d", "linear_tokens"])
def test_single_layers_equal_torch_and_replay_their_schedule(case, target):
    from tests.mapping_cases import replay_schedule

    model, x, compiled = compile_case(case, target)
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel < STRICT, report.to_dict()
    layer = compiled.netlist.layers[0]
    if case == "kernel7x3" and target == "tiny":
        assert layer.kernel_row_splits > 1  # 7 kernel rows of >= 3 columns do not fit 16 rows
    if case == "pointwise_tails" and target == "tiny":
        assert 40 % layer.kin != 0  # a channel tail
    if case != "linear_tokens":
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = replay_schedule(compiled.netlist, layer.name, x[0]) + np.asarray(
            compiled.netlist.array(layer, "bias")).reshape((-1,) + (1,) * (expected.ndim - 1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=STRICT * np.abs(expected).max())


@pytest.mark.parametrize("w_o", [1, 2, 3, 5, 6])
def test_every_slice_width_is_exact(w_o):
    model, x = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1)).eval(), torch.randn(2, 3, 9, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        compiled = xb.compile(model, (x,), "isaac-like", f"fold-batchnorm,lower-im2col,lower-to-xbar,"
                                                        f"map-semi-folded{{w-o={w_o}}},place-tiles")
    layer = compiled.netlist.layers[0]
    assert layer.w_o == w_o and layer.n_w == -(-6 // w_o)
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel < STRICT


def test_a_disagreeing_copy_is_xb320_and_nothing_is_placed_outside_the_records():
    _, _, compiled = compile_case("stride2_odd", "isaac-like")
    netlist = compiled.netlist
    layer = netlist.layers[0]
    crossbars = netlist.layer_crossbars(layer)
    cells = derived_cells(netlist, layer)
    rows, cols = np.nonzero(cells[0])
    broken = cells.copy()
    broken[0, rows[0], cols[0]] += 1.0  # one copy of one weight
    with pytest.raises(CompileError) as err:
        read_back(layer, crossbars, broken)
    assert err.value.code == "XB320"
    # v2 derives the cells from the records: every cell outside a record's footprint is zero
    for k, x in enumerate(crossbars):
        placed = np.zeros(cells[k].shape, dtype=bool)
        for b in x.blocks:
            f = footprint(layer, b)
            placed[f.r0:f.r1, f.c0:f.c1] = True
        assert not cells[k][~placed].any()
        np.testing.assert_array_equal(netlist.crossbar_cells(x.id), cells[k])


def test_semi_folded_pipeline_is_deterministic(tmp_path):
    model, x, first = compile_case("grouped_stride_1x2", "isaac-like", "semi-folded")
    _, _, second = compile_case("grouped_stride_1x2", "isaac-like", "semi-folded")
    assert first.netlist.layers[0].strategy == "semi-folded"
    assert first.save(tmp_path / "a").joinpath("netlist.json").read_bytes() == \
        second.save(tmp_path / "b").joinpath("netlist.json").read_bytes()
    loaded = xb.load_netlist(tmp_path / "a")
    assert xb.verify(loaded, model, (x,)).max_rel < STRICT


def test_golden_dump():
    model, shape = golden_models()["convbn"]
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)
    ir, ctx = before_pass("map-fully-folded", model, inputs, "tiny")
    after = run_passes([MapSemiFoldedPass()], ir, ctx)
    text = "\n".join(["# convbn through 'map-semi-folded' on 'tiny', after: " + format_pipeline(prefix_of("map-fully-folded")),
                      "# regenerate: XB_UPDATE_GOLDEN=1 python -m pytest tests/passes", "--- before", print_ir(ir),
                      "--- after", print_ir(after)])
    check_golden("convbn-map-semi-folded", text)
