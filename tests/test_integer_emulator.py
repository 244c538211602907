"""Integer mode against the integer reference: bit-exact with lossless ADCs on the whole model zoo,
equal to the LSB-dropping reference with fixed ADCs, and every fast-path shortcut equal to the per-read path.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler import cli
from xbcompiler.emulator import integer_fast as integer_mode
from xbcompiler.emulator.integer import IntegerLayer
from xbcompiler.pipeline import resolve_pipeline
from xbcompiler.target import load_target

TARGETS = ("isaac-like", "prime-like", "tiny")
ENCODINGS = ("differential", "offset")


def _pipeline(name: str) -> list:
    """A named pipeline without lower-im2col's numeric self-check (the ideal-mode tests cover it)."""
    return [dataclasses.replace(p, check=False) if p.name == "lower-im2col" else p for p in resolve_pipeline(name)]


PIPELINE = _pipeline("default")
#: Semi-folded on tiny's 16x16 arrays makes tens of thousands of crossbars per model: the zoo-wide
#: test maps tiny fully-folded (the other strategies are exercised on tiny by the lossy tests).
ZOO_PIPELINES = {"isaac-like": PIPELINE, "prime-like": PIPELINE, "tiny": _pipeline("fully-folded")}
LOSSY = {  # configurations whose reads really lose bits
    "isaac-8bit-no-flip-adc7": ("isaac-like", {"precision.weight_bits": 8, "precision.input_bits": 8,
                                               "encoding.flip_columns": False, "precision.adc_bits": 7}),
    "tiny-adc4-floor": ("tiny", {"precision.adc_bits": 4, "adc.rounding": "floor"}),
    "tiny-adc3-offset-input": ("tiny", {"precision.adc_bits": 3, "encoding.input_signed": "offset",
                                        "encoding.signed": "offset", "precision.dac_bits": 2}),
    "prime-calibrated": ("prime-like", {}),
    "prime-truncated": ("prime-like", {"adc.output_bits": 8, "adc.rounding": "floor"}),
}


def compile_quant(name: str, target: str, overrides: dict, pipeline=PIPELINE, batch: int = 1):
    case = MODELS[name]
    model, x = case.build(), case.example_input()[:batch]
    cal = torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), target, pipeline, overrides=overrides, calibration=cal), model, x


def assert_bit_exact(report) -> None:
    bad = [(c.name, c.mismatches) for c in report.layers if c.mismatches]
    assert report.exact and not bad and report.output_rel == 0.0, bad


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.slow
def test_zoo_lossless_adc_is_bit_exact(name):
    """Every crossbar layer equals the integer reference bit for bit, every target, every encoding."""
    for target in TARGETS:
        for encoding in ENCODINGS:
            compiled, model, x = compile_quant(name, target, {"adc.mode": "lossless", "encoding.signed": encoding},
                                               ZOO_PIPELINES[target])
            report = xb.verify(compiled.netlist, model, x)
            assert report.mode == "integer"
            assert_bit_exact(report)


@pytest.mark.parametrize("config", list(LOSSY))
@pytest.mark.parametrize("name", ["resnet_digits", "conv1d_net", "functional_net"])
def test_lossy_adc_equals_lsb_dropping_reference(name, config):
    target, overrides = LOSSY[config]
    compiled, model, x = compile_quant(name, target, overrides)
    assert any((compiled.netlist.array(layer, "adc_step") > 0).any()
               for layer in compiled.netlist.layers), "the configuration must drop LSBs somewhere"
    assert_bit_exact(xb.verify(compiled.netlist, model, x))


def test_fully_folded_and_fully_unfolded_too():
    for pipeline in ("fully-folded", "fully-unfolded"):
        compiled, model, x = compile_quant("digits_cnn", *LOSSY["isaac-8bit-no-flip-adc7"], pipeline=pipeline)
        assert_bit_exact(xb.verify(compiled.netlist, model, x))


def _kernels(compiled, path: str, literal: bool = False) -> dict[str, IntegerLayer]:
    """Every layer's integer kernel; ``literal`` reads the row blocks back from the derived crossbar cells."""
    netlist = compiled.netlist
    return {layer.name: IntegerLayer(netlist, layer, torch.device("cpu"), path=path, literal=literal)
            for layer in netlist.layers}


def _layer_inputs(compiled, x) -> dict[str, torch.Tensor]:
    _, env = xb.emulator.emulator_for(compiled.netlist, "integer", x.device).run((x,), record=True)
    return {n.target: env[n.args[0]["ref"]] for n in compiled.netlist.doc.nodes if n.op == "xbar"}


@pytest.mark.parametrize("config", list(LOSSY))
def test_fast_path_equals_per_read_path(config, monkeypatch):
    """The shortcuts (lossless merge, zero-plane skip, packed reads, chunking) change no output integer."""
    compiled, _, x = compile_quant("resnet_digits" if config.startswith("isaac") else "digits_cnn", *LOSSY[config],
                                   batch=2)
    inputs = _layer_inputs(compiled, x)
    inputs = {k: torch.cat([v, torch.zeros_like(v[:1])]) for k, v in inputs.items()}  # an all-zero image
    fast, slow = _kernels(compiled, "fast"), _kernels(compiled, "per-read", literal=True)
    for chunk in (integer_mode.CHUNK_READS, 1):  # one image per chunk exercises the zero-plane skip
        monkeypatch.setattr(integer_mode, "CHUNK_READS", chunk)
        for name, kernel in fast.items():
            xq = kernel.quantize(inputs[name])
            assert torch.equal(kernel.integer_output(xq), slow[name].integer_output(xq)), name


def test_packed_reads_and_float64_reads_are_exact():
    """Small reads share a float32 lane (several fields); reads at or above 2**24 fall back to float64."""
    small, _, _ = compile_quant("digits_cnn", "tiny", {"precision.adc_bits": 3})
    big, _, _ = compile_quant("digits_cnn", "prime-like", {"crossbar.cell_bits": 8, "precision.dac_bits": 8,
                                                           "precision.adc_bits": 16, "crossbar.rows": 512,
                                                           "precision.weight_bits": 16, "precision.input_bits": 16})
    for compiled in (small, big):
        inputs = _layer_inputs(compiled, torch.randn(3, 1, 8, 8))
        fast, slow = _kernels(compiled, "fast"), _kernels(compiled, "per-read", literal=True)
        assert any(g.fields > 1 for k in fast.values() for g in k.fast.groups) or compiled is big
        for name, kernel in fast.items():
            xq = kernel.quantize(inputs[name])
            assert torch.equal(kernel.integer_output(xq), slow[name].integer_output(xq)), name


def test_quantised_netlist_fields(tmp_path):
    compiled, model, x = compile_quant("digits_cnn", "isaac-like", {})
    compiled.save(tmp_path)
    netlist = xb.load_netlist(tmp_path)  # schema, checksum and array shapes checked
    assert_bit_exact(xb.verify(netlist, model, x))
    assert netlist.quantised
    for layer in netlist.layers:
        q = layer.quant
        # the matrix is stored once as the integer weights Wq (16-bit weights: int16)
        wq = netlist.weight(layer)
        assert wq.dtype == np.int16 and layer.arrays.weight.dtype == "int16"
        assert wq.shape == (layer.groups, layer.matrix_rows, layer.n_g)
        assert int(np.abs(wq.astype(np.int64)).max()) <= (1 << (q.weight_bits - 1)) - 1
        assert netlist.array(layer, "bias").dtype == np.int64
        assert len(q.shifts) == len(q.weight_exponents)
        assert q.shifts[0] == q.output_exponent - q.input_exponent - q.weight_exponents[0]
        assert q.encoding.flip_columns and layer.arrays.flips is not None
        assert len(q.planes) == 8 and len(q.cycles) == 16  # 16-bit weights on 2-bit cells, 1-bit DAC
        # ISAAC: column flipping makes the 8-bit ADC lossless for up to 128 rows
        assert (netlist.array(layer, "adc_step") == 0).all()
        # the derived cells are levels of 2-bit cells, one physical column per weight plane
        x = netlist.layer_crossbars(layer)[0]
        cells = netlist.crossbar_cells(x.id)
        assert cells.shape == (x.rows, x.physical_cols) and x.physical_cols == x.cols * len(q.planes)
        assert cells.min() >= 0 and cells.max() <= 3 and cells.any()
    for x in netlist.crossbars:
        assert x.adc.lossless_bits <= 8 and x.adc.step_bits == 0


def test_floor_rounding_bias_is_compensated():
    """Floor biases every read downwards; the integer compensation removes that mean error.

    (With differential encoding the biases of the positive and negative planes cancel by themselves.)
    Semi-folded: the measured error of that layer's crossbars as this test was written.
    """
    errors, semi = {}, _pipeline("semi-folded")
    for compensate in (True, False):
        compiled, _, _ = compile_quant("vgg_digits", "tiny", {"precision.adc_bits": 4, "adc.rounding": "floor",
                                                                  "encoding.signed": "offset",
                                                                  "adc.compensate_bias": compensate}, semi)
        layer = compiled.netlist.layers[-2]
        comp = compiled.netlist.array(layer, "adc_compensation")
        assert comp.any() == compensate
        assert (layer.quant.adc_error.mean <= 0.5) == compensate
        exact, _, _ = compile_quant("vgg_digits", "tiny", {"adc.mode": "lossless", "encoding.signed": "offset"}, semi)
        kernel, lossless = _kernels(compiled, "fast")[layer.name], _kernels(exact, "fast")[layer.name]
        xq = kernel.quantize(torch.rand(64, *layer.input_shape, generator=torch.Generator().manual_seed(0)) * 4)
        errors[compensate] = float((kernel.integer(kernel.as4d(xq)) - lossless.integer(lossless.as4d(xq))).mean())
    assert abs(errors[True]) < abs(errors[False])


def test_output_truncation_and_calibrated_adc():
    compiled, _, _ = compile_quant("resnet_digits", *LOSSY["prime-truncated"])
    assert any(layer.quant.truncate_bits > 0 for layer in compiled.netlist.layers)
    fixed, _, _ = compile_quant("resnet_digits", "prime-like", {"adc.mode": "fixed"})
    calibrated, _, _ = compile_quant("resnet_digits", "prime-like", {})
    key = lambda n, layer: n.array(layer, "adc_step")
    pairs = [(key(calibrated.netlist, a), key(fixed.netlist, b)) for a, b in
             zip(calibrated.netlist.layers, fixed.netlist.layers)]
    assert all((c <= f).all() for c, f in pairs) and any((c < f).any() for c, f in pairs)


def test_modes_refuse_the_wrong_netlist():
    compiled, _, x = compile_quant("digits_cnn", "tiny", {})
    with pytest.raises(xb.CompileError) as err:
        xb.emulate(compiled.netlist, x, mode="ideal")
    assert err.value.code == "XB520"
    assert torch.equal(compiled(x), xb.emulate(compiled.netlist, x, mode="integer"))  # the default follows the netlist
    float_net = xb.compile(MODELS["digits_cnn"].build(), (x,), "tiny")
    with pytest.raises(xb.CompileError) as err:
        xb.emulate(float_net.netlist, x, mode="integer")
    assert err.value.code == "XB520"


def test_verify_finds_a_corrupted_cell():
    compiled, model, x = compile_quant("digits_cnn", "tiny", {"adc.mode": "lossless"}, pipeline="fully-folded")
    netlist = compiled.netlist
    assert xb.verify(netlist, model, x).ok
    layer = netlist.layers[1]
    assert layer.copies == 1
    xbar = netlist.layer_crossbars(layer)[0]
    # the matrix is stored once: replacing the weights crossbar 0's slices hold replaces that crossbar's cells
    wq = netlist.weight(layer).copy()
    for s in xbar.slices:
        held = wq[s.group, s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]]
        wq[s.group, s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]] = np.clip(3 - held, -7, 7)
    assert xbar.slices and not np.array_equal(wq, netlist.weight(layer))
    bad = xb.Netlist(netlist.doc, {**netlist.arrays, layer.arrays.weight.key: wq})
    assert not np.array_equal(bad.crossbar_cells(xbar.id), netlist.crossbar_cells(xbar.id))
    assert all(np.array_equal(bad.crossbar_cells(y.id), netlist.crossbar_cells(y.id))
               for y in netlist.layer_crossbars(layer)[1:])
    report = xb.verify(bad, model, x)
    check = next(c for c in report.layers if c.name == layer.name)
    assert not report.ok and check.mismatches > 0 and check.first_mismatch == xbar.id


def test_cli_calibrate(tmp_path, capsys):
    out, npy = tmp_path / "q", tmp_path / "cal.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    spec = "tests/models.py:digits_cnn"
    assert cli.main(["compile", spec, "--input-shape", "1,1,8,8", "--target", "tiny", "--calibrate", str(npy),
                     "-o", str(out)]) == 0
    assert all("quant" in layer for layer in json.loads((out / "netlist.json").read_text())["layers"])
    assert cli.main(["verify", str(out), "--model", spec]) == 0
    assert "integer reference: 0" in capsys.readouterr().out
    assert cli.main(["compile", spec, "--input-shape", "1,1,8,8", "--target", "tiny", "--calibrate-random", "3",
                     "-o", str(tmp_path / "r")]) == 0
    assert cli.main(["compile", spec, "--input-shape", "1,1,8,8", "--target", "tiny", "--calibrate-random", "0",
                     "-o", str(tmp_path / "bad")]) == 2


def test_target_lossless_bits_match_the_netlist():
    target = load_target("isaac-like")
    assert target.lossless_adc_bits(128) == 8  # 9 bits without flipping, one saved (background §4.4)


ZERO_HIGH = {"encoding.signed": "differential-zero-high", "encoding.flip_columns": False}


@pytest.mark.parametrize("name", ["resnet_digits", "conv1d_net", "functional_net", "mobilenetv2_small"])
@pytest.mark.slow
def test_differential_zero_high_is_bit_exact_lossless_and_lossy(name):
    for target in TARGETS:
        compiled, model, x = compile_quant(name, target, {"adc.mode": "lossless", **ZERO_HIGH}, ZOO_PIPELINES[target])
        assert_bit_exact(xb.verify(compiled.netlist, model, x))
    compiled, model, x = compile_quant(name, "isaac-like", {**LOSSY["isaac-8bit-no-flip-adc7"][1], **ZERO_HIGH})
    assert_bit_exact(xb.verify(compiled.netlist, model, x))


def test_differential_zero_high_stores_zero_weights_high_in_both_cells():
    compiled, _, _ = compile_quant("mlp", "tiny", {"adc.mode": "lossless", **ZERO_HIGH}, ZOO_PIPELINES["tiny"])
    net = compiled.netlist
    x = net.crossbars[0]
    layer = net.layer(x.layer)
    s = x.slices[0]
    wq = net.weight(layer)[s.group, s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]]
    cells = net.crossbar_cells(x.id)
    m_c = x.physical_cols // x.cols
    top = (1 << layer.quant.encoding.cell_bits) - 1
    r, c = np.argwhere(wq == 0)[0] if (wq == 0).any() else (None, None)
    if r is not None:
        row, col = s.at[0] + r, (s.at[1] + c) * m_c
        assert (cells[row, col:col + m_c] == top).all()
    k = layer.quant.encoding.cell_bits
    for r, c in np.argwhere(wq != 0)[:20]:  # each pair (top - neg slice, top - pos slice) differs by the slice
        row, col = s.at[0] + r, (s.at[1] + c) * m_c
        pairs = cells[row, col:col + m_c].astype(np.int64).reshape(-1, 2)
        assert sum((p - n) << (k * i) for i, (p, n) in enumerate(pairs)) == wq[r, c]
        assert (pairs.max(1) == top).all()  # one cell of every pair stays high


def test_differential_zero_high_refuses_column_flipping():
    with pytest.raises(xb.CompileError) as err:
        load_target("isaac-like", {"encoding.signed": "differential-zero-high"})
    assert err.value.code == "XB404" and "flip" in str(err.value)
