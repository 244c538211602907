"""Transposed and 3-D convolutions on crossbars (issue 11): the rewrites and the models that use them.

Each rewrite of :mod:`xbcompiler.frontend.rewrite_conv` equals its torch layer (hypothesis, float64)
and keeps every weight exactly once; the models of :mod:`tests.models_convs` compile with the default
pipeline under both front ends, verify in ideal mode within 1e-4 and bit-exactly in integer mode
with lossless ADCs, and every weight tensor of theirs is one crossbar layer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import msgspec
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from tests.models_convs import CONV_MODELS
from xbcompiler import CompileError
from xbcompiler.frontend.rewrite_conv import CONV_REWRITES, DepthPlanes, SubPixel, conv3d, conv_transpose
from xbcompiler.frontend.rewrites import REWRITES

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def compile_quiet(model, inputs, target="isaac-like", **kwargs) -> xb.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, inputs, target, **kwargs)


def crossbar_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights of the crossbar layers (Conv1d/Conv2d) a rewrite built."""
    return [m.weight for m in module.modules() if type(m) in (nn.Conv1d, nn.Conv2d)]


def assert_same_weights(original: nn.Module, rewritten: nn.Module) -> None:
    """Every weight of ``original`` sits in the one crossbar layer of ``rewritten``, once; the rest is 0."""
    (weight,) = crossbar_weights(rewritten)
    kept = weight[weight != 0].sort().values
    assert torch.equal(kept, original.weight[original.weight != 0].sort().values)


# --------------------------------------------------------------------------- the rewrites against torch


@st.composite
def transposed_layers(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    dims = []
    for _ in range(n):
        k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        p = draw(st.integers(0, d * (k - 1)))
        op = draw(st.integers(0, max(s, d) - 1))
        size = draw(st.integers(1, 5 if n < 3 else 3))
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 > 0)
        dims.append((k, s, p, d, op, size))
    k, s, p, d, op, size = zip(*dims)
    layer = TRANSPOSED[n - 1](groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), k, s, p, op,
                              groups, bias=draw(st.booleans()), dilation=d)
    return layer.double().eval(), size


@settings(max_examples=60, deadline=None)
@given(transposed_layers(), st.integers(0, 2**16))
def test_conv_transpose_rewrite_equals_torch(case, seed):
    layer, size = case
    x = torch.randn(2, layer.in_channels, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rewritten = conv_transpose(layer)
    assert isinstance(rewritten, SubPixel)
    with torch.no_grad():
        expected, got = layer(x), rewritten(x)
    assert got.shape == expected.shape and got.is_contiguous()  # .view works on it as on torch's
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert_same_weights(layer, rewritten)


@st.composite
def conv3d_layers(draw):
    groups = draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(3))
    d = tuple(draw(st.integers(1, 2)) for _ in range(3))
    padding = draw(st.one_of(st.just("same"), st.just("valid"), st.tuples(*[st.integers(0, 2)] * 3)))
    s = (1, 1, 1) if padding == "same" else tuple(draw(st.integers(1, 3)) for _ in range(3))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    layer = nn.Conv3d(groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), k, s, padding, d, groups,
                      bias=draw(st.booleans()), padding_mode=mode)
    size = tuple(draw(st.integers(d[i] * (k[i] - 1) + 3, d[i] * (k[i] - 1) + 5)) for i in range(3))
    return layer.double().eval(), size


@settings(max_examples=60, deadline=None)
@given(conv3d_layers(), st.integers(0, 2**16))
def test_conv3d_rewrite_equals_torch(case, seed):
    layer, size = case
    x = torch.randn(2, layer.in_channels, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rewritten = conv3d(layer)
    assert isinstance(rewritten, DepthPlanes)
    with warnings.catch_warnings():  # torch warns about padding="same" with even kernels
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad():
            expected, got = layer(x), rewritten(x)
    assert got.shape == expected.shape and got.is_contiguous()  # .view works on it as on torch's
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(crossbar_weights(rewritten)[0].flatten(), layer.weight.flatten())


@pytest.mark.parametrize(("k", "s", "p", "taps"), [(2, 2, 0, 1), (4, 2, 1, 2), (3, 2, 1, 2), (3, 1, 1, 3)])
def test_sub_pixel_kernel_is_ceil_k_over_s(k, s, p, taps):
    """One stride-1 layer of ``C_out s^2`` channels and ``ceil(k / s)`` taps; no zeros when ``s`` divides ``k``."""
    layer = nn.ConvTranspose2d(6, 4, k, stride=s, padding=p)
    (weight,) = crossbar_weights(conv_transpose(layer))
    assert weight.shape == (4 * s * s, 6, taps, taps)
    assert (weight.numel() == layer.weight.numel()) == (k % s == 0)


def test_dilated_stride_one_transpose_keeps_its_dilation():
    """Stride 1, dilation 2: the flipped 3x3 kernel with dilation 2 (no zeros stored between taps)."""
    layer = nn.ConvTranspose2d(2, 3, 3, dilation=2, padding=1)
    rewritten = conv_transpose(layer)
    assert rewritten.phases.kernel_size == (3, 3) and rewritten.phases.dilation == (2, 2)
    assert torch.equal(rewritten.phases.weight, layer.weight.transpose(0, 1).flip(-1, -2))


def test_the_table_is_merged_into_the_rewrite_hook():
    assert set(CONV_REWRITES) == {nn.Conv3d, *TRANSPOSED}
    assert all(REWRITES[t] is build for t, build in CONV_REWRITES.items())


# --------------------------------------------------------------------------- the models


def _fx_name(path: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]+", "_", path)


def expected_layers(model: nn.Module) -> list[str]:
    """One crossbar layer per weight tensor, named after its module (with the rewrite's suffix)."""
    suffix = {nn.Conv3d: "_planes", nn.ConvTranspose1d: "_phases", nn.ConvTranspose2d: "_phases",
              nn.ConvTranspose3d: "_phases_planes"}
    return sorted(_fx_name(path) + suffix.get(type(m), "") for path, m in model.named_modules()
                  if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, *TRANSPOSED)))


@pytest.mark.parametrize("name", sorted(CONV_MODELS))
def test_model_compiles_with_either_front_end_and_verifies_in_ideal_mode(name):
    case = CONV_MODELS[name]
    model, x = case.build(), case.example_input()
    compiled = {fe: compile_quiet(model, (x,), frontend=fe) for fe in ("export", "fx")}
    for frontend, c in compiled.items():
        assert c.netlist.doc.provenance["frontend"]["used"] == frontend
        report = xb.verify(c, model, (x,))
        assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    assert msgspec.to_builtins(compiled["export"].netlist.doc.layers) == \
        msgspec.to_builtins(compiled["fx"].netlist.doc.layers)
    # every weight tensor of the model is one crossbar layer, named after its module
    layers = [layer.name for layer in compiled["export"].netlist.layers]
    weights = [p for p in model.parameters() if p.dim() >= 2]
    assert len(layers) == len(weights) and sorted(layers) == expected_layers(model)
    # the batch stays free: the netlist runs on three samples
    x3 = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(xb.emulate(compiled["export"].netlist, (x3,), mode="ideal"), model(x3),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["export", "fx"])
@pytest.mark.parametrize("name", sorted(CONV_MODELS))
def test_model_is_bit_exact_in_integer_mode(name, frontend):
    case = CONV_MODELS[name]
    model, x = case.build(), case.example_input()
    # the calibration covers the checked input: the quantised outputs then stay within verify's float tolerance
    calibration = torch.cat([x, torch.randn(6, *x.shape[1:], generator=torch.Generator().manual_seed(5))])
    compiled = compile_quiet(model, (x,), frontend=frontend, calibration=calibration,
                             overrides={"adc.mode": "lossless"})
    report = xb.verify(compiled, model, (x,))
    assert report.mode == "integer" and report.ok, report.to_dict()
    assert [(c.name, c.mismatches) for c in report.layers if c.mismatches] == []
    assert report.output_rel == 0.0


def test_phases_without_taps_are_bias_only_and_bit_exact():
    """Dilation 2, stride 2: odd phases get no tap (all-zero columns); the bias alone reaches them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 3, 2, stride=2, dilation=2, output_padding=1), nn.ReLU(),
                          nn.Conv2d(3, 2, 1)).eval()
    x = torch.randn(2, 2, 6, 6)
    calibration = torch.cat([x, torch.randn(4, 2, 6, 6)])
    (weight,) = crossbar_weights(conv_transpose(model[2]))
    assert not weight.reshape(3, 2, 2, -1)[:, 1].any() and not weight.reshape(3, 2, 2, -1)[:, :, 1].any()
    compiled = compile_quiet(model, (x,), calibration=calibration, overrides={"adc.mode": "lossless"})
    report = xb.verify(compiled, model, (x,))
    assert report.mode == "integer" and report.ok and report.output_rel == 0.0, report.to_dict()


# --------------------------------------------------------------------------- refusals


class SizedUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2)

    def forward(self, x):
        return self.up(x, output_size=[10, 10])  # marker: output_size


@pytest.mark.parametrize("frontend", ["export", "auto"])
def test_output_size_at_call_is_refused_with_the_output_padding_to_use(frontend):
    with pytest.raises(CompileError) as info:
        compile_quiet(SizedUp().eval(), (torch.randn(2, 4, 4, 4),), "tiny", frontend=frontend)
    err = info.value
    assert err.code == "XB103" and "ConvTranspose2d(4, 2" in err.message and "output_size" in err.message
    assert "output_padding" in err.hint
    assert Path(__file__).name in err.location.source and "# marker: output_size" in err.location.source


# --------------------------------------------------------------------------- the measured comparison


@pytest.mark.slow
def test_sub_pixel_maps_better_than_zero_insertion():
    """bench/bench_conv_transpose.py: fewer phases and ADC conversions, no more crossbars (semi-folded)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_conv_transpose.py"), "--layer", "unet_2x2_s2",
                           "--pipeline", "semi-folded"], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"bench"')]
    assert row["sub_pixel_phases"] * 2 == row["zero_insertion_phases"]
    assert row["sub_pixel_adc_conversions"] * 2 == row["zero_insertion_adc_conversions"]
    assert row["sub_pixel_crossbars"] <= row["zero_insertion_crossbars"]
