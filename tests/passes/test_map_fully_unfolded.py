"""``map-fully-unfolded`` run alone through the PassManager (verify-each and numeric-check on).

Every output row gets its own copy of the semi-folded crossbars: one phase per image and exactly
``H' x`` the semi-folded count at the same ``w_o`` (the background §2.2 bound, met with equality; see
docs/mapping.md). Row copies repeat the same placement records (the matrix is stored once and each
copy's cells are derived from it). The netlists equal torch in the
ideal emulator on the model zoo and on single layers with stride, dilation and depthwise kernels.
"""

from __future__ import annotations

import json
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
from passes.map_fully_unfolded import MapFullyUnfoldedPass
from tests.conftest import zoo_compile
from tests.models import MODELS
from tests.passes.harness import before_pass, check_golden, golden_models, prefix_of, run_passes
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.emulator.literal import derived_cells, read_back
from xbcompiler.ir.printer import print_ir
from xbcompiler.mapping.plan import ArraySpec
from xbcompiler.mapping.search import search
from xbcompiler.mapping.shape import shape_of
from xbcompiler.netlist.placement import weight_counts
from xbcompiler.pipeline import format_pipeline

# --- map-fully-unfolded ---------------------------------------------------------------------------------

STRICT = 1e-5


def test_counts_are_h_out_times_semi_folded_and_blocks_verify():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(6 * 5 * 5, 4)).eval()
    program, ctx = before_pass("map-fully-folded", model, (torch.randn(2, 3, 10, 10),), "isaac-like")
    after = run_passes([MapFullyUnfoldedPass()], program, ctx)
    arr = ArraySpec.of(ctx.target)
    for name, plan in after.plans.items():
        shape = shape_of(after.matrices[name])
        semi = search("semi-folded", shape, arr)
        assert plan.strategy == "fully-unfolded" and plan.phases == 1 and plan.row_copies == shape.out_hw[0]
        assert plan.crossbars == shape.out_hw[0] * semi.crossbars and plan.w_o == semi.w_o
        assert plan.copies == shape.out_hw[0] * semi.copies
        rows = {b.out_row for b in after.blocks if b.layer == name}
        assert rows == set(range(shape.out_hw[0]))
    assert ctx.report["map-fully-unfolded"]["crossbars"] == len(after.crossbars)
    after.verify(ctx.target)


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_netlists_equal_torch(name):
    zc = zoo_compile(name, "prime-like", "fully-unfolded")
    netlist = zc.compiled.netlist
    report = xb.verify(netlist, zc.model, (zc.x,))
    if name == "resnet56":  # 56 stacked float32 layers: rounding reaches ~2e-5 per layer (test_end_to_end.py)
        assert report.ok and report.output_rel < STRICT, report.to_dict()
    else:
        assert report.ok and report.max_rel < STRICT, report.to_dict()
    for layer in netlist.layers:
        assert layer.strategy == "fully-unfolded" and layer.phases == 1
        assert layer.schedule.order == "all"
        copies = layer.row_copies
        # row copies: the same records once per output row (out_row aside), the matrix stored once
        xbars = netlist.layer_crossbars(layer)
        by_row: dict[int, list] = {}
        for x in xbars:
            rows = {b.out_row for b in x.blocks}
            assert len(rows) == 1
            by_row.setdefault(rows.pop(), []).append(x)
        assert sorted(by_row) == list(range(copies))
        per_copy = {len(v) for v in by_row.values()}
        assert len(per_copy) == 1 and per_copy.pop() * copies == layer.crossbars

        def records(x):
            return [(b.group, b.channels, b.kernel_rows, b.out_channels, b.slice, b.at) for b in x.blocks]

        first = [records(x) for x in by_row[0]]
        assert all([records(x) for x in v] == first for v in by_row.values())
        np.testing.assert_array_equal(weight_counts(layer, xbars), copies * weight_counts(layer, by_row[0]))
        assert netlist.weight(layer).shape == (layer.groups, layer.matrix_rows, layer.n_g)
    assert netlist.summary["pipeline_period"] == 1


@pytest.mark.parametrize("case", ["stride2_odd", "dilation2", "depthwise", "kernel7x3", "conv1d", "linear_tokens"])
def test_single_layers_equal_torch_and_replay_their_schedule(case):
    from tests.mapping_cases import replay_schedule, single_layer

    model, x = single_layer(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        compiled = xb.compile(model, (x,), "tiny", "fully-unfolded")
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel < STRICT, report.to_dict()
    layer = compiled.netlist.layers[0]
    blocks = read_back(layer, compiled.netlist.layer_crossbars(layer), derived_cells(compiled.netlist, layer))
    assert sum(len(b.rows) for b in blocks) == compiled.program.matrices[layer.name].weight.shape[1] * layer.groups
    if case != "linear_tokens":
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = replay_schedule(compiled.netlist, layer.name, x[0]) + np.asarray(
            compiled.netlist.array(layer, "bias")).reshape((-1,) + (1,) * (expected.ndim - 1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=STRICT * np.abs(expected).max())


def test_a_missing_row_copy_changes_the_result(tmp_path):
    """The crossbars run each row copy on its own output row: dropping one loses that row.

    Saved, edited and reloaded (the document is immutable). The literal emulator (crossbar by crossbar)
    must lose row 2; the fast path runs the stored matrix on the loader's proof that the records place
    every copy, so either the loader refuses the netlist (coverage, XB512) or the fast path loses it too.
    """
    from tests.mapping_cases import single_layer

    model, x = single_layer("stride2_odd")
    compiled = xb.compile(model, (x,), "isaac-like", "fully-unfolded")
    compiled.save(tmp_path)
    doc = json.loads((tmp_path / "netlist.json").read_text())
    victim = next(xbar for xbar in doc["crossbars"] if xbar["blocks"][0].get("out_row", -1) == 2)
    victim["blocks"] = [{**b, "out_row": 3} for b in victim["blocks"]]  # row 3 twice, row 2 never
    (tmp_path / "netlist.json").write_text(json.dumps(doc))
    with torch.no_grad():
        expected = model(x)
    try:
        edited = xb.load_netlist(tmp_path)
    except CompileError as err:
        assert err.code == "XB512", err
        return
    for literal in (True, False):
        got = xb.emulate(edited, x, literal=literal)
        assert not torch.allclose(got[:, :, 2], expected[:, :, 2]), f"literal={literal}"
        assert torch.allclose(got[:, :, :2], expected[:, :, :2], atol=1e-5)


def test_golden_dump():
    model, shape = golden_models()["mlp"]
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)
    ir, ctx = before_pass("map-fully-folded", model, inputs, "tiny")
    after = run_passes([MapFullyUnfoldedPass()], ir, ctx)
    text = "\n".join(["# mlp through 'map-fully-unfolded' on 'tiny', after: "
                      + format_pipeline(prefix_of("map-fully-folded")),
                      "# regenerate: XB_UPDATE_GOLDEN=1 python -m pytest tests/passes", "--- before", print_ir(ir),
                      "--- after", print_ir(after)])
    check_golden("mlp-map-fully-unfolded", text)
