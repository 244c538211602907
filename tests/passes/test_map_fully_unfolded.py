"""``map-fully-unfolded`` run alone through the PassManager (verify-each and numeric-check on).

Every output row gets its own copy of the semi-folded crossbars: one phase per image and exactly
``H' x`` the semi-folded count at the same ``w_o`` (the SPEC 2.2 bound, met with equality; see
docs/mapping.md). Row copies share one entry of the cells array. The netlists equal torch in the
ideal emulator on the model zoo and on single layers with stride, dilation and depthwise kernels.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from passes.map_fully_unfolded import MapFullyUnfoldedPass
from tests.conftest import zoo_compile
from tests.models import MODELS
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.emulator.ideal import read_row_blocks
from xbcompiler.frontend.ops import HOST_OPS
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.matrix import conv_via_im2col
from xbcompiler.ir.printer import print_ir
from xbcompiler.ir.program import XbarProgram
from xbcompiler.ir.values import decode
from xbcompiler.mapping.plan import ArraySpec
from xbcompiler.mapping.search import search
from xbcompiler.mapping.shape import shape_of
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
    doc = netlist.doc
    for layer in doc["layers"]:
        assert layer["strategy"] == "fully-unfolded" and layer["phases"] == 1
        assert layer["schedule"]["order"] == "all"
        copies = layer["row_copies"]
        assert layer["arrays"]["cells"]["shape"][0] * copies == layer["crossbars"]  # row copies share cells
    assert doc["summary"]["pipeline_period"] == 1


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
    first = layer["first_crossbar"]
    blocks = read_row_blocks(layer, compiled.netlist.doc["crossbars"][first:first + layer["crossbars"]],
                             compiled.netlist.arrays[layer["arrays"]["cells"]["key"]])
    assert sum(len(b.rows) for b in blocks) == compiled.program.matrices[layer["name"]].weight.shape[1] * layer["groups"]
    if case != "linear_tokens":
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = replay_schedule(compiled.netlist, layer["name"], x[0]) + np.asarray(
            compiled.netlist.arrays[layer["arrays"]["bias"]["key"]]).reshape((-1,) + (1,) * (expected.ndim - 1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=STRICT * np.abs(expected).max())


def test_a_missing_row_copy_changes_the_result():
    """The emulator runs each row copy on its own output row: dropping one loses that row."""
    from tests.mapping_cases import single_layer

    model, x = single_layer("stride2_odd")
    compiled = xb.compile(model, (x,), "isaac-like", "fully-unfolded")
    doc = json.loads(compiled.netlist.json_bytes())
    victim = next(xbar for xbar in doc["crossbars"] if xbar["blocks"][0]["out_row"] == 2)
    victim["blocks"] = [{**b, "out_row": 3} for b in victim["blocks"]]  # row 3 twice, row 2 never
    got = xb.emulate(xb.Netlist(doc, compiled.netlist.arrays), x)
    with torch.no_grad():
        expected = model(x)
    assert not torch.allclose(got[:, :, 2], expected[:, :, 2])
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
