"""Self-compensation in ``xb.program`` (issue 12, background §3.5): residual programming and column gain/offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xbcompiler as xb
from tests.test_device_mode import outputs, small_linear
from xbcompiler import cli
from xbcompiler.emulator.column_gain import fit_columns
from xbcompiler.emulator.programming import FREE, SA0, effective_levels, residual_program
from xbcompiler.netlist.encoding import Encoding
from xbcompiler.netlist.types import EncodingSpec
from xbcompiler.target import CompensationSpec, DeviceSpec

RESIDUAL = {"compensation.residual_programming": True}


def encoding(signed: str = "differential", weight_bits: int = 8, cell_bits: int = 2) -> Encoding:
    return Encoding(EncodingSpec(signed=signed, weight_bits=weight_bits, cell_bits=cell_bits, input_bits=8,
                                 dac_bits=1, input_signed=False))


def side_values(levels: np.ndarray, enc: Encoding) -> np.ndarray:
    """Per logical column and side, ``sum 2**shift * level``: ``[rows, columns, sides]``."""
    planes = levels.reshape(levels.shape[0], -1, enc.planes)
    signs = sorted(set(enc.plane_signs))
    return np.stack([sum(planes[..., i] * 2.0 ** enc.plane_shifts[i] for i, g in enumerate(enc.plane_signs) if g == s)
                     for s in signs], axis=-1)


# --- residual programming ------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(signed=st.sampled_from(["differential", "differential-zero-high", "offset"]), seed=st.integers(0, 2**16))
def test_residual_programming_of_an_ideal_device_programs_the_stored_levels(signed, seed):
    enc = encoding(signed)
    rng = np.random.default_rng(seed)
    levels = enc.levels(rng.integers(-127, 128, size=(6, 5))).transpose(1, 2, 0).reshape(6, -1).astype(float)
    stuck = np.zeros(levels.shape, dtype=np.uint8)
    programmed, theta, pulses = residual_program(levels, stuck, None, rng, DeviceSpec(), CompensationSpec(), enc)
    assert np.array_equal(programmed, levels) and theta is None and pulses == 0


@settings(max_examples=40, deadline=None)
@given(signed=st.sampled_from(["differential", "offset"]), seed=st.integers(0, 2**16))
def test_the_slices_below_a_stuck_off_cell_take_up_what_it_lost(signed, seed):
    enc = encoding(signed)
    rng = np.random.default_rng(seed)
    levels = enc.levels(rng.integers(-127, 128, size=(4, 3))).transpose(1, 2, 0).reshape(4, -1).astype(float)
    top = int(np.argmax(enc.plane_shifts))  # the most significant plane (of the positive side)
    stuck = np.zeros(levels.shape, dtype=np.uint8)
    stuck[:, top::enc.planes] = SA0
    programmed, _, _ = residual_program(levels, stuck, None, rng, DeviceSpec(), CompensationSpec(), enc)
    want = side_values(levels, enc)
    got = side_values(effective_levels(programmed.astype(float), stuck, None, DeviceSpec(), enc.max_level), enc)
    capacity = 2.0 ** enc.plane_shifts[top] - 1  # what the slices below the top one can hold
    assert np.array_equal(got[..., -1], np.minimum(want[..., -1], capacity))  # the positive side: as close as it can
    plain = side_values(effective_levels(levels, stuck, None, DeviceSpec(), enc.max_level), enc)
    assert (np.abs(got - want) <= np.abs(plain - want)).all()


def test_residual_programming_halves_the_weight_error_of_a_varied_chip():
    cm, x = small_linear(128, 16, overrides={"adc.mode": "fixed"})
    net = cm.netlist
    device = {"device.program_sigma": 0.2}

    def weight_error(chip) -> float:
        errors = []
        for xbar in net.crossbars:
            state = chip.cells[xbar.id]
            enc = Encoding(net.layer(xbar.layer).quant.encoding)
            levels = net.crossbar_cells(xbar.id)[:state.stuck.shape[0]].astype(float)
            programmed = levels if state.levels is None else state.levels.astype(float)
            read = effective_levels(programmed, state.stuck, state.theta, chip.spec, enc.max_level)
            errors.append(np.abs(side_values(read, enc) - side_values(levels, enc)).mean())
        return float(np.mean(errors))

    plain = xb.program(cm, seed=4, overrides=device)
    residual = xb.program(cm, seed=4, overrides={**device, **RESIDUAL})
    assert residual.cells[net.crossbars[0].id].levels is not None and plain.cells[net.crossbars[0].id].levels is None
    assert np.array_equal(plain.cells[net.crossbars[0].id].theta, residual.cells[net.crossbars[0].id].theta)
    assert weight_error(residual) < weight_error(plain) / 2
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    err = lambda chip: float((outputs(xb.emulate(chip, x))[0] - ideal).abs().mean())
    assert err(residual) < err(plain)


def test_residual_programming_with_write_verify_verifies_every_slice():
    cm, _ = small_linear(64, 8)
    chip = xb.program(cm, seed=1, overrides={"device.program_sigma": 0.3, "compensation.write_verify_pulses": 4,
                                             **RESIDUAL})
    assert chip.write_pulses > 0
    for xbar in cm.netlist.crossbars:
        state = chip.cells[xbar.id]
        read = effective_levels(state.levels.astype(float), state.stuck, state.theta, chip.spec, 3)
        assert (np.abs(read - state.levels)[state.stuck == FREE] > 0.5).mean() < 0.01


@pytest.mark.parametrize("signed", ["differential", "differential-zero-high", "offset"])
def test_compensations_on_an_ideal_device_leave_integer_mode_unchanged(signed):
    cm, x = small_linear(overrides={"encoding.signed": signed, "adc.mode": "fixed"})
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    chip = xb.program(cm, seed=0, overrides={**RESIDUAL, "compensation.column_gain": True}, calibration=x)
    assert torch.equal(outputs(xb.emulate(chip, x))[0], ideal)
    assert all((c.gain_log2 == 0).all() and (c.offset == 0).all() for c in chip.column_corrections.values())


# --- column gain ---------------------------------------------------------------------------------------

def test_column_fit_finds_a_power_of_two_gain_and_the_offset():
    gen = torch.Generator().manual_seed(0)
    ideal = torch.randint(-500, 500, (16, 6, 3, 3), generator=gen).double()
    measured = ideal * torch.tensor([2.0, 1.0, 0.5, 1.1, 4.0, 1.0]).view(1, -1, 1, 1) + 6
    fit = fit_columns(ideal, measured, group_cols=1)
    assert fit.gain_log2.tolist() == [-1, 0, 1, 0, -2, 0]
    assert fit.offset[1] == -6 and fit.offset[0] == -3
    shared = fit_columns(ideal, measured, group_cols=3)  # one shift per 3 columns: one gain per group
    assert (shared.gain_log2[:3] == shared.gain_log2[0]).all() and (shared.gain_log2[3:] == shared.gain_log2[3]).all()


def test_column_gain_removes_the_bias_of_clipped_read_noise():
    cm, _ = small_linear(128, 16, overrides={"adc.mode": "fixed"})
    gen = torch.Generator().manual_seed(3)
    calibration, x = torch.rand(64, 128, generator=gen), torch.rand(64, 128, generator=gen)
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    device = {"device.read_noise": 0.01}
    plain = xb.program(cm, seed=2, overrides=device)
    corrected = xb.program(cm, seed=2, overrides={**device, "compensation.column_gain": True}, calibration=calibration)
    layer = cm.netlist.layers[0].name
    assert not plain.column_corrections and corrected.column_corrections[layer].offset.any()
    bias = lambda chip: float((outputs(xb.emulate(chip, x))[0] - ideal).mean(0).abs().mean())
    assert bias(corrected) < bias(plain) / 2


def test_column_gain_needs_calibration_data(tmp_path, capsys):
    cm, x = small_linear()
    for call in (lambda: xb.program(cm, overrides={"compensation.column_gain": True}),
                 lambda: xb.emulate(cm, x, mode="device", overrides={"compensation.column_gain": True})):
        with pytest.raises(xb.CompileError) as err:
            call()
        assert err.value.code == "XB540"
    out = tmp_path / "net"
    cm.save(out)
    np.save(tmp_path / "x.npy", x.numpy())
    args = ["emulate", str(out), "--input", str(tmp_path / "x.npy"), "--mode", "device", "--set",
            "compensation.column_gain=true"]
    assert cli.main(args) == 2 and "XB540" in capsys.readouterr().err
    assert cli.main([*args, "--calibrate", str(tmp_path / "x.npy")]) == 0
    assert "output: shape" in capsys.readouterr().out
    assert cli.main(["emulate", str(out), "--input", str(tmp_path / "x.npy"), "--calibrate",
                     str(tmp_path / "x.npy")]) == 2  # --calibrate without --mode device
    assert "XB003" in capsys.readouterr().err


def test_compensation_keys_are_validated_and_fingerprinted():
    t = xb.load_target("tiny")
    for key in ("compensation.residual_programming", "compensation.column_gain"):
        assert t.with_overrides({key: True}).to_dict()["compensation"][key.partition(".")[2]] is True
        with pytest.raises(xb.CompileError) as err:
            t.with_overrides({key: 3})
        assert err.value.code in ("XB402", "XB404")
