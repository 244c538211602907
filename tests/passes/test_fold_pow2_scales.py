"""``fold-pow2-scales``: power-of-two post-training quantisation with every rescale a shift.

Run through the PassManager (verify-each on) after ``fold-batchnorm,lower-im2col`` with calibration
batches in the context; golden dump of a small residual net (graph plus each layer's exponents).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from passes.fold_pow2_scales import FoldPow2ScalesPass
from tests.models import MODELS
from tests.passes.harness import check_golden, make_context
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.printer import print_ir
from xbcompiler.pipeline import PassContext, PassManager, VerifyEach, format_pipeline, parse_pipeline
from xbcompiler.quant.check import check_layer
from xbcompiler.quant.graph import QType, propagate
from xbcompiler.quant.layer import QuantIm2colLayer
from xbcompiler.quant.ops import requantize
from xbcompiler.target import load_target

BITS8 = {"precision.weight_bits": 8, "precision.input_bits": 8}


class Residual(nn.Module):
    """conv-relu-conv plus a 1x1 shortcut conv, add, relu, global average pool, linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.short = nn.Conv2d(2, 4, 1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.short.weight.mul_(8.0)  # the shortcut's output range differs from the main branch's

    def forward(self, x):
        y = self.bn(self.b(torch.relu(self.a(x))))
        return self.fc(torch.relu(y + self.short(x)).mean(dim=(2, 3)))


def quantize(model: nn.Module, shape, target="isaac-like", overrides=BITS8, calibration=True, **options):
    """(quantised graph, context) of ``model`` after fold-batchnorm, lower-im2col and the pass."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    cal = [(torch.randn(8, *shape[1:], generator=gen),)] if calibration else None
    ctx = make_context((x,), load_target(target, overrides), calibration=cal)  # verify_ir: the built-in verifier
    passes = [*parse_pipeline("fold-batchnorm,lower-im2col"), FoldPow2ScalesPass(**options)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        gm = PassManager(passes, [VerifyEach()]).run(trace(model.eval(), (x,)), ctx)
    return gm, ctx, x


def quant_layers(gm: fx.GraphModule) -> dict[str, QuantIm2colLayer]:
    return {n.name: gm.get_submodule(n.target) for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), QuantIm2colLayer)}


def test_needs_calibration():
    with pytest.raises(CompileError) as err:
        quantize(Residual(), (1, 2, 6, 6), calibration=False)
    assert err.value.code == "XB220"


def test_calibration_that_does_not_fit_is_xb222():
    ctx = PassContext(target=load_target("tiny"), properties={"traced", "shapes"},
                      calibration=[(torch.randn(2, 3, 6, 6),)])
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(CompileError) as err:
        PassManager([*parse_pipeline("fold-batchnorm,lower-im2col"), FoldPow2ScalesPass()]).run(trace(Residual(), (x,)), ctx)
    assert err.value.code == "XB222"


def test_exponents_weights_and_bias_are_integers_and_powers_of_two():
    gm, ctx, _ = quantize(Residual(), (1, 2, 6, 6))
    b_w = ctx.target.precision.weight_bits
    for name, layer in quant_layers(gm).items():
        m, q = layer.matrix, layer.matrix.quant
        check_layer(m)
        top = 2 ** (b_w - 1) - 1
        assert np.abs(m.weight).max() <= top and (m.weight == np.round(m.weight)).all()
        e_w = q.weight_exponents[0]
        assert all(isinstance(e, int) for e in (q.input_exponent, q.output_exponent, e_w))
        # e_w is the smallest power of two that fits the largest weight: max|Wq| is in (top/2, top]
        assert top / 2 < np.abs(m.weight).max() <= top, name
        assert (q.shifts(m.cols) == q.output_exponent - q.input_exponent - e_w).all()
        assert q.bias is None or q.bias.dtype == np.int64


def test_quantised_graph_tracks_the_float_model_at_16_bits():
    model = MODELS["resnet_digits"].build()
    gm, _, x = quantize(model, (4, 1, 8, 8), overrides={"precision.weight_bits": 16, "precision.input_bits": 16})
    with torch.no_grad():
        want, got = model(x), gm(x)
    assert float((want - got).abs().max() / want.abs().max()) < 2e-3


def test_residual_add_gets_an_alignment_shift():
    gm, ctx, _ = quantize(Residual(), (1, 2, 6, 6))
    report = ctx.report["fold-pow2-scales"]
    assert report["aligned"], "the shortcut and the main branch have different exponents"
    shifts = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is requantize]
    assert len(shifts) == len(report["aligned"])
    add = next(n for n in gm.graph.nodes if n.op == "call_function" and "add" in str(n.target))
    assert any(a.target is requantize for a in add.all_input_nodes)
    types = propagate(gm, _layer_types(gm), insert=False)
    assert types.aligned == []  # nothing left to align
    assert len({types.types[a.name].exponent for a in add.all_input_nodes}) == 1
    with torch.no_grad():  # an alignment shift is exact rounding onto the coarser grid
        v = torch.tensor([0.3125, -0.40625, 1.0])
        assert torch.equal(requantize(v, -2), torch.tensor([0.25, -0.5, 1.0]))


def _layer_types(gm) -> dict[str, QType]:
    return {name: QType(layer.matrix.quant.output_exponent) for name, layer in quant_layers(gm).items()}


def test_float_host_ops_are_listed_with_the_reason():
    _, ctx, _ = quantize(MODELS["se_net"].build(), (1, 3, 32, 32))
    floats = ctx.report["fold-pow2-scales"]["host_float"]
    ops = {f["op"].rsplit(".", 1)[-1] for f in floats}
    assert {"sigmoid", "mul"} <= ops
    assert all(f["reason"] for f in floats)
    sigmoid = next(f for f in floats if f["op"].endswith("sigmoid"))
    assert "nonlinear" in sigmoid["reason"]
    _, ctx, _ = quantize(MODELS["transformer_block"].build(), (1, 16, 32))
    ops = {f["op"].rsplit(".", 1)[-1] for f in ctx.report["fold-pow2-scales"]["host_float"]}
    assert {"softmax", "layer_norm", "gelu"} <= ops


def test_integer_host_ops_are_not_listed():
    _, ctx, _ = quantize(MODELS["resnet_digits"].build(), (1, 1, 8, 8))
    assert ctx.report["fold-pow2-scales"]["host_float"] == []  # relu, add, mean over 2x2: integer or shift


def test_column_group_granularity():
    target = load_target("isaac-like", BITS8)
    gm, _, _ = quantize(MODELS["vgg_digits"].build(), (1, 1, 8, 8), granularity="column-group")
    widest = max(quant_layers(gm).values(), key=lambda layer: layer.matrix.cols)
    q = widest.matrix.quant
    assert q.group_cols == target.logical_cols
    assert len(q.weight_exponents) == math.ceil(widest.matrix.cols / target.logical_cols) > 1
    gm, _, _ = quantize(MODELS["vgg_digits"].build(), (1, 1, 8, 8), granularity="column-group", group_cols=4)
    assert all(layer.matrix.quant.group_cols == 4 for layer in quant_layers(gm).values())


def test_check_rejects_float_multiplies():
    gm, _, _ = quantize(Residual(), (1, 2, 6, 6))
    m = next(iter(quant_layers(gm).values())).matrix
    with pytest.raises(CompileError) as err:
        check_layer(dataclasses.replace(m, weight=m.weight * 1.5))
    assert err.value.code == "XB221"
    with pytest.raises(CompileError):
        check_layer(dataclasses.replace(m, quant=dataclasses.replace(m.quant, input_exponent=-3.5)))
    with pytest.raises(CompileError):
        check_layer(dataclasses.replace(m, bias=np.ones(m.cols, dtype=np.float32)))


def test_pipeline_text_round_trip():
    text = "fold-pow2-scales{granularity=column-group,group-cols=8,percentile=99.9,output-bits=10}"
    (p,) = parse_pipeline(text)
    assert p == FoldPow2ScalesPass("column-group", 8, 99.9, 10)
    assert parse_pipeline(format_pipeline([p])) == [p]


def test_driver_inserts_the_pass_only_with_calibration():
    model, x = MODELS["digits_cnn"].build(), MODELS["digits_cnn"].example_input()
    float_compile = xb.compile(model, (x,), "tiny", pipeline="fully-folded")
    assert "fold-pow2-scales" not in float_compile.pipeline
    assert not any(layer.quant is not None for layer in float_compile.netlist.layers)
    quant = xb.compile(model, (x,), "tiny", pipeline="fully-folded", calibration=torch.randn(4, 1, 8, 8))
    names = quant.pipeline.split(",")
    assert names.index("fold-pow2-scales") == names.index("lower-im2col") + 1
    assert all(layer.quant is not None for layer in quant.netlist.layers)
    assert quant.report["fold-pow2-scales"]["integer_segments"]["float_multiplies"] == 0


def golden_text() -> str:
    gm, ctx, _ = quantize(Residual(), (1, 2, 6, 6))
    lines = ["# Residual through fold-pow2-scales on isaac-like (8-bit), after: fold-batchnorm,lower-im2col",
             "# regenerate: XB_UPDATE_GOLDEN=1 python -m pytest tests/passes", "--- after", print_ir(gm).rstrip()]
    for name, layer in quant_layers(gm).items():
        q = layer.matrix.quant
        lines.append(f"{name}: e_x={q.input_exponent} signed={q.input_signed} e_w={list(q.weight_exponents)} "
                     f"e_y={q.output_exponent} shift={sorted(set(q.shifts(layer.matrix.cols).tolist()))} "
                     f"bias={None if q.bias is None else q.bias.tolist()}")
    lines.append(f"aligned: {ctx.report['fold-pow2-scales']['aligned']}")
    return "\n".join(lines) + "\n"


def test_golden():
    check_golden("residual-fold-pow2-scales", golden_text())
