"""Device mode (issue 12): programmed chips, stuck-at faults, variation and read noise (docs/faults.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler import cli
from xbcompiler.emulator.programming import SA1
from xbcompiler.target import load_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compiled(name: str, target: str = "tiny", pipeline: str = "default", overrides=None, batch: int = 2):
    case = MODELS[name]
    model, x = case.build(), case.example_input()[:batch]
    cal = torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), target, pipeline, overrides=overrides, calibration=cal), x


def outputs(result) -> list[torch.Tensor]:
    from xbcompiler.verify import output_tensors

    return output_tensors(result)


# --- an ideal device is integer mode --------------------------------------------------------------

CASES = [(m, p, enc) for m in ("lenet", "conv1d_net", "mlp", "mobilenetv2_small")
         for p in ("default", "fully-folded", "fully-unfolded")
         for enc in ("differential", "offset", "differential-zero-high")] + \
    [(m, p, enc) for m in ("resnet20", "se_net") for p in ("default", "fully-folded") for enc in ("differential", "offset")]


@pytest.mark.parametrize("model,pipeline,encoding", CASES)
@pytest.mark.slow
def test_an_ideal_device_equals_integer_mode_bit_for_bit(model, pipeline, encoding):
    overrides = {"encoding.signed": encoding, "encoding.flip_columns": encoding != "differential-zero-high"}
    cm, x = compiled(model, "tiny" if pipeline == "fully-folded" else "isaac-like", pipeline,
                     {**overrides, "precision.adc_bits": 5} if pipeline == "fully-folded" else overrides)
    integer = outputs(xb.emulate(cm, x, mode="integer"))
    chip = xb.program(cm, seed=3)
    assert chip.spec.ideal and chip.fault_fractions() == (0.0, 0.0)
    device = outputs(xb.emulate(chip, x))
    assert len(integer) == len(device)
    for a, b in zip(integer, device):
        assert torch.equal(a, b)


def test_flipped_columns_and_lossy_adcs_stay_exact_on_an_ideal_device():
    cm, x = compiled("lenet", "isaac-like", "default", {"precision.weight_bits": 8, "precision.input_bits": 8,
                                                         "encoding.flip_columns": True, "precision.adc_bits": 5})
    assert cm.netlist.array(cm.netlist.layers[0], "flips") is not None
    a = outputs(xb.emulate(cm, x, mode="integer"))[0]
    assert torch.equal(a, outputs(xb.emulate(cm, x, mode="device", seed=0))[0])


# --- the device model ------------------------------------------------------------------------------

def small_linear(n_in: int = 64, n_out: int = 8, target: str = "isaac-like", pipeline: str = "fully-folded",
                 overrides=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(n_in, n_out)).eval()
    x = torch.randn(3, n_in)
    overrides = {"adc.mode": "lossless", "precision.weight_bits": 8, "precision.input_bits": 8,
                 "encoding.flip_columns": False, **(overrides or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        cm = xb.compile(model, (x,), target, pipeline, overrides=overrides, calibration=x)
    return cm, x


def kernel_of(chip):
    from xbcompiler.emulator import emulator_for

    emulator = emulator_for(chip, "device", "cpu")
    return emulator.layers[chip.layers[0].name]


def test_one_stuck_cell_changes_the_accumulator_by_its_lost_level(tmp_path):
    cm, x = small_linear()
    net = cm.netlist
    xbar = net.crossbars[0]
    cells = net.crossbar_cells(xbar.id)  # [rows, physical cols] levels
    r, c = np.argwhere(cells < 3)[0]  # a free cell below the top level (2-bit cells)
    sa1 = np.zeros((xbar.rows, xbar.physical_cols), dtype=bool)
    sa1[r, c] = True
    path = tmp_path / "faults.npz"
    np.savez(path, **{f"sa1/{xbar.id}": sa1})
    chip = xb.program(net, overrides={"device.fault_map": str(path)})
    assert chip.cells[xbar.id].stuck[r, c] == SA1 and (chip.cells[xbar.id].stuck == SA1).sum() == 1
    ideal, faulty = kernel_of(xb.program(net)), kernel_of(chip)
    xq = ideal.as4d(ideal.quantize(x))
    delta = (faulty.accumulator(xq) - ideal.accumulator(xq)).reshape(x.shape[0], -1).double()
    enc = ideal.enc
    m_c = xbar.physical_cols // xbar.cols
    column, plane = divmod(int(c), m_c)
    coef = enc.plane_signs[plane] * 2.0 ** enc.plane_shifts[plane]
    matrix_row = xbar.slices[0].rows[0] + int(r) - xbar.slices[0].at[0]
    driven = xq.reshape(x.shape[0], -1)[:, matrix_row].double() + enc.input_offset
    expected = torch.zeros_like(delta)
    expected[:, xbar.slices[0].cols[0] + column - xbar.slices[0].at[1]] = driven * coef * (3 - cells[r, c])
    assert torch.equal(delta, expected)


def test_measured_fault_fractions_match_the_rates():
    cm, _ = small_linear(512, 256)
    chip = xb.program(cm, seed=5, overrides={"device.sa0_rate": 0.02, "device.sa1_rate": 0.1})
    n = sum(c.stuck.size for c in chip.cells.values())
    assert n > 100_000
    for measured, rate in zip(chip.fault_fractions(), (0.02, 0.1)):
        assert abs(measured - rate) < 3 * np.sqrt(rate * (1 - rate) / n)


def test_seeds_change_the_faults_and_higher_rates_only_add_faults():
    cm, _ = small_linear(256, 64)
    low = xb.program(cm, seed=1, overrides={"device.sa1_rate": 0.05})
    high = xb.program(cm, seed=1, overrides={"device.sa1_rate": 0.2})
    other = xb.program(cm, seed=2, overrides={"device.sa1_rate": 0.05})
    for xid, state in low.cells.items():
        assert not ((state.stuck == SA1) & (high.cells[xid].stuck != SA1)).any()
    assert any(not np.array_equal(s.stuck, other.cells[i].stuck) for i, s in low.cells.items())
    again = xb.program(cm, seed=1, overrides={"device.sa1_rate": 0.05})
    assert all(np.array_equal(s.stuck, again.cells[i].stuck) for i, s in low.cells.items())


def test_a_crossbars_draws_do_not_depend_on_the_other_layers():
    small, _ = small_linear(64, 8)
    torch.manual_seed(0)
    chip = xb.program(small, seed=4, overrides={"device.sa1_rate": 0.3, "device.program_sigma": 0.1})
    from xbcompiler.emulator.programming import _Streams

    xbar = small.netlist.crossbars[0]
    rows = chip.cells[xbar.id].stuck.shape[0]
    u = _Streams(4).at(xbar.id, 0).random((xbar.rows, xbar.physical_cols))[:rows]
    assert np.array_equal(chip.cells[xbar.id].stuck == SA1, u >= 1 - 0.3)


@pytest.mark.slow
def test_same_seed_same_outputs_across_processes():
    script = (
        "import sys, warnings, hashlib, torch, xbcompiler as xb\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from tests.test_device_mode import small_linear, outputs\n"
        "cm, x = small_linear(64, 8, overrides={'adc.mode': 'fixed'})\n"
        "y = outputs(xb.emulate(cm, x, mode='device', seed=int(sys.argv[1]), overrides={'device.sa1_rate': 0.1,"
        " 'device.program_sigma': 0.1, 'device.read_noise': 0.01}))[0]\n"
        "print(hashlib.sha256(y.numpy().tobytes()).hexdigest())\n")

    def run(seed: int, hashseed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        return subprocess.run([sys.executable, "-c", script, str(seed)], capture_output=True, text=True, env=env,
                              check=True, timeout=300).stdout.strip()

    assert run(7, "1") == run(7, "2") != run(8, "1")


def test_each_non_ideality_moves_the_outputs_and_repeats_under_one_seed():
    cm, x = small_linear(64, 8, overrides={"adc.mode": "fixed"})
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    for key, value in (("device.sa0_rate", 0.2), ("device.sa1_rate", 0.2), ("device.program_sigma", 0.3),
                       ("device.read_noise", 0.05)):
        a = outputs(xb.emulate(cm, x, mode="device", seed=1, overrides={key: value}))[0]
        chip = xb.program(cm, seed=1, overrides={key: value})
        assert not torch.equal(a, ideal), key
        assert torch.equal(a, outputs(xb.emulate(chip, x))[0]), key  # the same chip and noise draws


def test_an_off_state_current_matters_only_with_variation():
    cm, x = small_linear(64, 8, overrides={"adc.mode": "fixed"})
    base = {"device.program_sigma": 0.2}
    a = outputs(xb.emulate(cm, x, mode="device", seed=1, overrides=base))[0]
    b = outputs(xb.emulate(cm, x, mode="device", seed=1, overrides={**base, "device.on_off_ratio": 10.0}))[0]
    c = outputs(xb.emulate(cm, x, mode="device", seed=1, overrides={"device.on_off_ratio": 10.0}))[0]
    assert not torch.equal(a, b) and torch.equal(c, outputs(xb.emulate(cm, x, mode="integer"))[0])


def test_stuck_on_cells_of_zero_weights_cost_nothing_with_differential_zero_high(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8)).eval()
    with torch.no_grad():
        model[0].weight[:, ::2] = 0  # every other input's weights are zero
    x = torch.randn(4, 64)
    changed = {}
    for encoding in ("differential", "differential-zero-high"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", xb.XBWarning)
            cm = xb.compile(model, (x,), "isaac-like", "fully-folded", calibration=x, overrides={
                "encoding.signed": encoding, "encoding.flip_columns": False, "precision.weight_bits": 8,
                "precision.input_bits": 8})
        net = cm.netlist
        layer = net.layers[0]
        wq = net.weight(layer)
        members = {}
        for xbar in net.layer_crossbars(layer):
            sa1 = np.zeros((xbar.rows, xbar.physical_cols), dtype=bool)
            m_c = xbar.physical_cols // xbar.cols
            for sl in xbar.slices:
                zero = wq[sl.group, sl.rows[0]:sl.rows[1], sl.cols[0]:sl.cols[1]] == 0
                for r, c in np.argwhere(zero):
                    col = (sl.at[1] + c) * m_c
                    sa1[sl.at[0] + r, col:col + m_c:2] = True  # the positive cell of each pair stuck on
            members[f"sa1/{xbar.id}"] = sa1
        path = tmp_path / f"{encoding}.npz"
        np.savez(path, **members)
        ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
        faulty = outputs(xb.emulate(cm, x, mode="device", overrides={"device.fault_map": str(path)}))[0]
        changed[encoding] = not torch.equal(ideal, faulty)
    assert changed == {"differential": True, "differential-zero-high": False}


def test_write_verify_pulls_varied_cells_back_within_the_tolerance():
    from xbcompiler.emulator.programming import FREE, effective_levels

    cm, x = small_linear(128, 16, overrides={"adc.mode": "fixed"})
    net = cm.netlist
    device = {"device.program_sigma": 0.3}
    plain = xb.program(cm, seed=2, overrides=device)
    verified = xb.program(cm, seed=2, overrides={**device, "compensation.write_verify_pulses": 8})
    assert plain.write_pulses == 0 and verified.write_pulses > 0

    def out_of_tolerance(chip) -> int:
        n = 0
        for xbar in net.crossbars:
            state = chip.cells[xbar.id]
            levels = net.crossbar_cells(xbar.id)[:state.stuck.shape[0]].astype(float)
            error = np.abs(effective_levels(levels, state.stuck, state.theta, chip.spec, 3) - levels)
            n += int(((error > 0.5) & (state.stuck == FREE)).sum())
        return n

    assert out_of_tolerance(verified) < out_of_tolerance(plain) / 10
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    err = lambda chip: float((outputs(xb.emulate(chip, x))[0] - ideal).abs().mean())
    assert err(verified) < err(plain)


def test_write_verify_spends_every_pulse_on_stuck_cells():
    cm, _ = small_linear(64, 8)
    pulses = 3
    chip = xb.program(cm, seed=1, overrides={"device.sa1_rate": 0.1, "compensation.write_verify_pulses": pulses})
    net = cm.netlist
    wrong = sum(int((net.crossbar_cells(x.id)[:chip.cells[x.id].stuck.shape[0]][chip.cells[x.id].stuck == SA1]
                     < 3).sum()) for x in net.crossbars)  # stuck on where the level is below the top
    assert wrong > 0 and chip.write_pulses == pulses * wrong


# --- cells without a weight ---------------------------------------------------------------------

def semi_folded_conv(pipeline: str):
    """A 3->4 channel 3x3 conv on 6x12 inputs, block-Toeplitz (``w_o`` > 1), and a structural-zero cell:
    word line ``x_in = w_i - 1`` of copy ``x_out = 0`` (past its kernel's reach), one plane of column
    ``o``. Returns the compiled model, the input, the block and the cell's (c, dy, x_in, o, x_out, row,
    physical column, plane)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 6, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        cm = xb.compile(model, (x,), "isaac-like", pipeline, calibration=x, overrides={
            "adc.mode": "lossless", "precision.weight_bits": 8, "precision.input_bits": 8,
            "encoding.flip_columns": False, "encoding.signed": "differential"})
    net = cm.netlist
    layer = net.layers[0]
    assert layer.w_o > 1 and layer.w_i > 3
    xbar, b = next((x, b) for x in net.crossbars for b in x.blocks if b.slice == 0 and b.out_row in (-1, 2))
    c, dy, x_in, o, x_out = b.channels[0] + 1, b.kernel_rows[0] + 1, layer.w_i - 1, b.out_channels[0] + 1, 0
    assert x_in - x_out > 2  # no kernel column of copy x_out reaches word line x_in
    n_dy = b.kernel_rows[1] - b.kernel_rows[0]
    row = b.at[0] + ((c - b.channels[0]) * n_dy + dy - b.kernel_rows[0]) * layer.w_i + x_in
    m_c = xbar.physical_cols // xbar.cols
    plane = 1
    col = (b.at[1] + (o - b.out_channels[0]) * layer.w_o + x_out) * m_c + plane
    assert net.crossbar_cells(xbar.id)[row, col] == 0  # programmed to G_min
    return cm, x, xbar, b, (c, dy, x_in, o, x_out, row, col, plane)


def fault_map(tmp_path, xbar, kind: str, cells, name: str = "map.npz", everywhere: str | None = None) -> str:
    """A fault map with ``cells`` of ``xbar`` stuck at ``kind`` (and every other cell at ``everywhere``)."""
    members = {}
    if everywhere:
        members[f"{everywhere}/{xbar.id}"] = np.ones((xbar.rows, xbar.physical_cols), dtype=bool)
    stuck = np.zeros((xbar.rows, xbar.physical_cols), dtype=bool)
    for r, c in cells:
        stuck[r, c] = True
        if everywhere:
            members[f"{everywhere}/{xbar.id}"][r, c] = False
    if kind:
        members[f"{kind}/{xbar.id}"] = stuck
    path = tmp_path / name
    np.savez(path, **members)
    return str(path)


def structural_delta(kernel, x, b, cell, level: float) -> torch.Tensor:
    """What the datapath predicts a structural-zero cell at effective ``level`` adds to the accumulator: the
    input its word line carries in each window, times the plane's coefficient and the level, on the output
    pixels of its copy (its slice's column ``x_out``; every row, or the block's own output row)."""
    c, dy, x_in, o, x_out, _, _, plane = cell
    enc = kernel.enc
    xq = kernel.as4d(kernel.quantize(x))
    driven = kernel.driven(xq).double()  # [B, C, Hp, Wp], padded
    (s_h, s_w), (d_h, _) = kernel.stride, kernel.dilation
    w_o = kernel.layer.w_o
    acc = torch.zeros((x.shape[0], kernel.n_out, *kernel.out_hw(xq)), dtype=torch.float64)
    column = b.slice * w_o + x_out
    input_col = b.slice * w_o * s_w + x_in
    coef = enc.plane_signs[plane] * 2.0 ** enc.plane_shifts[plane]
    for y in range(acc.shape[2]) if b.out_row < 0 else [b.out_row]:
        value = driven[:, c, y * s_h + dy * d_h, input_col] if input_col < driven.shape[3] else 0.0  # not driven
        acc[:, b.group * kernel.n_g + o, y, column] = value * coef * level
    return acc


@pytest.mark.parametrize("pipeline", ["semi-folded", "default"])
def test_a_stuck_on_structural_zero_adds_its_level_to_the_reads_that_drive_it(tmp_path, pipeline):
    cm, x, xbar, b, cell = semi_folded_conv(pipeline)
    net = cm.netlist
    row, col = cell[5], cell[6]
    ideal = kernel_of(xb.program(net))
    xq = ideal.as4d(ideal.quantize(x))
    sa1 = kernel_of(xb.program(net, overrides={"device.fault_map": fault_map(tmp_path, xbar, "sa1", [(row, col)])}))
    delta = sa1.accumulator(xq).double() - ideal.accumulator(xq).double()
    expected = structural_delta(ideal, x, b, cell, ideal.enc.max_level)
    assert expected.abs().sum() > 0 and torch.equal(delta, expected)
    integer = outputs(xb.emulate(cm, x, mode="integer"))[0]
    faulty = outputs(xb.emulate(xb.program(net, overrides={"device.fault_map": fault_map(
        tmp_path, xbar, "sa1", [(row, col)], "again.npz")}), x))[0]
    assert not torch.equal(faulty, integer) and torch.equal(faulty != integer, (faulty != integer) & (expected != 0))
    # stuck at G_min, where it was programmed anyway: nothing changes
    sa0 = xb.program(net, overrides={"device.fault_map": fault_map(tmp_path, xbar, "sa0", [(row, col)], "sa0.npz")})
    assert torch.equal(kernel_of(sa0).accumulator(xq), ideal.accumulator(xq))
    assert torch.equal(outputs(xb.emulate(sa0, x))[0], integer)


def test_a_structural_zero_leaks_its_off_state_current_with_variation(tmp_path):
    from xbcompiler.emulator.programming import effective_levels

    cm, x, xbar, b, cell = semi_folded_conv("semi-folded")
    net = cm.netlist
    row, col = cell[5], cell[6]
    free_cell = fault_map(tmp_path, xbar, "", [(row, col)], "free.npz", everywhere="sa0")  # all else stuck off
    all_off = fault_map(tmp_path, xbar, "", [], "off.npz", everywhere="sa0")
    device = {"device.program_sigma": 0.3, "device.on_off_ratio": 1.5}  # g0 = 6 levels
    for seed in range(20):  # a seed whose cell leaks at least half a level (the ADC rounds the reads)
        chip = xb.program(net, seed=seed, overrides={**device, "device.fault_map": free_cell})
        state = chip.cells[xbar.id]
        level = float(effective_levels(np.zeros(1), state.stuck[row, col:col + 1], state.theta[row, col:col + 1],
                                       chip.spec, 3)[0])
        if level > 0.5:
            break
    assert level == pytest.approx(6 * (np.exp(float(state.theta[row, col])) - 1)) and level > 0.5
    off = kernel_of(xb.program(net, seed=seed, overrides={**device, "device.fault_map": all_off}))
    xq = off.as4d(off.quantize(x))
    delta = kernel_of(chip).accumulator(xq).double() - off.accumulator(xq).double()
    expected = structural_delta(off, x, b, cell, float(np.round(level)))  # one 1-bit digit per cycle, rounded
    assert expected.abs().sum() > 0 and torch.equal(delta, expected)
    sigma = {"device.program_sigma": 0.3}  # an ideal off state (on_off_ratio 0): the free cell adds nothing
    free, stuck = (kernel_of(xb.program(net, seed=seed, overrides={**sigma, "device.fault_map": m}))
                   for m in (free_cell, all_off))
    assert torch.equal(free.accumulator(xq), stuck.accumulator(xq))


# --- errors ----------------------------------------------------------------------------------------

def test_device_mode_refuses_what_it_cannot_run(tmp_path):
    cm, x = small_linear()
    with pytest.raises(xb.CompileError) as err:
        xb.emulate(cm, x, mode="integer", seed=1)
    assert err.value.code == "XB505"
    with pytest.raises(xb.CompileError) as err:
        xb.emulate(xb.program(cm), x, seed=1)
    assert err.value.code == "XB505"
    with pytest.raises(xb.CompileError) as err:
        xb.program(cm, overrides={"crossbar.rows": 64})
    assert err.value.code == "XB407"
    with pytest.raises(xb.CompileError) as err:
        xb.program(cm, seed=-1)
    assert err.value.code == "XB505"
    with pytest.raises(xb.CompileError) as err:
        xb.program(cm, overrides={"device.sa1_rate": 0.7, "device.sa0_rate": 0.6})
    assert err.value.code == "XB404"
    from xbcompiler.emulator import Emulator

    with pytest.raises(xb.CompileError) as err:
        Emulator(cm.netlist, "device")
    assert err.value.code == "XB531"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        float_net = xb.compile(nn.Sequential(nn.Linear(4, 2)).eval(), (torch.randn(1, 4),), "tiny")
    with pytest.raises(xb.CompileError) as err:
        xb.emulate(float_net, torch.randn(1, 4), mode="device")
    assert err.value.code == "XB531"


def test_bad_fault_maps_are_coded_errors(tmp_path):
    cm, _ = small_linear()
    xbar = cm.netlist.crossbars[0]
    shape = (xbar.rows, xbar.physical_cols)
    cases = {
        "missing": None,
        "unknown": {"sa1/t99.x99": np.zeros(shape, bool)},
        "kind": {f"sa2/{xbar.id}": np.zeros(shape, bool)},
        "shape": {f"sa1/{xbar.id}": np.zeros((2, 2), bool)},
        "dtype": {f"sa1/{xbar.id}": np.zeros(shape, np.uint8)},
        "both": {f"sa0/{xbar.id}": np.ones(shape, bool), f"sa1/{xbar.id}": np.ones(shape, bool)},
    }
    for name, members in cases.items():
        path = tmp_path / f"{name}.npz"
        if members is not None:
            np.savez(path, **members)
        with pytest.raises(xb.CompileError) as err:
            xb.program(cm, overrides={"device.fault_map": str(path)})
        assert err.value.code == "XB530", name
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(xb.CompileError) as err:
        xb.program(cm, overrides={"device.fault_map": str(tmp_path / "junk.npz")})
    assert err.value.code == "XB530"


def test_target_device_section_is_validated_and_an_ideal_one_is_not_fingerprinted():
    t = load_target("tiny")
    assert t.device.ideal and "device" not in t.to_dict()
    noisy = t.with_overrides({"device.read_noise": 0.01})
    assert noisy.to_dict()["device"]["read_noise"] == 0.01 and noisy.fingerprint() != t.fingerprint()
    assert "compensation" not in t.to_dict()
    assert t.with_overrides({"compensation.write_verify_pulses": 2}).to_dict()["compensation"]["write_verify_pulses"] == 2
    for key, value in (("device.on_off_ratio", 0.5), ("device.sa1_rate", 1.5), ("device.program_sigma", -0.1),
                       ("compensation.write_verify_pulses", -1), ("compensation.write_verify_tolerance", -0.5)):
        with pytest.raises(xb.CompileError) as err:
            t.with_overrides({key: value})
        assert err.value.code == "XB404", key


# --- command line ----------------------------------------------------------------------------------

def test_cli_emulates_a_programmed_chip(tmp_path, capsys):
    cm, x = small_linear(overrides={"adc.mode": "fixed"})
    out = tmp_path / "net"
    cm.save(out)
    np.save(tmp_path / "x.npy", x.numpy())

    def run(*extra) -> tuple[int, str]:
        code = cli.main(["emulate", str(out), "--input", str(tmp_path / "x.npy"), *extra])
        return code, capsys.readouterr().out

    code, ideal = run("--mode", "integer")
    assert code == 0
    code, same = run("--mode", "device", "--seed", "3")
    assert code == 0 and same == ideal
    code, faulty = run("--mode", "device", "--seed", "3", "--set", "device.sa1_rate=0.3")
    assert code == 0 and faulty != ideal
    assert run("--mode", "device", "--seed", "3", "--set", "device.sa1_rate=0.3")[1] == faulty
    assert run("--set", "device.sa1_rate=0.3")[0] == 2
    assert run("--mode", "device", "--set", "crossbar.rows=64")[0] == 2


# --- replicas ------------------------------------------------------------------------------------------

REPLICATED = "fold-batchnorm,lower-im2col,lower-to-xbar,map-fully-folded,replicate-layers{budget=200,method=greedy},place-tiles"


def test_each_replica_is_its_own_cells_and_computes_every_other_image():
    cm, _ = compiled("lenet", "isaac-like", REPLICATED)
    net = cm.netlist
    replicated = [x for x in net.crossbars if x.replica_sites]
    assert replicated
    x = torch.randn(6, *cm.netlist.doc.inputs[0].shape, generator=torch.Generator().manual_seed(2))
    ideal = outputs(xb.emulate(cm, x, mode="integer"))[0]
    assert torch.equal(outputs(xb.emulate(xb.program(cm, seed=0), x))[0], ideal)  # ideal chip, replicas too
    chip = xb.program(cm, seed=5, overrides={"device.sa1_rate": 0.05})
    site = replicated[0].site_ids
    assert len(site) > 1 and all(s in chip.cells for s in site)
    assert not np.array_equal(chip.cells[site[0]].stuck, chip.cells[site[1]].stuck)  # faults of their own
    # a fault map that breaks only the replicas changes only the images they compute
    faults = {}
    for xbar in replicated:
        for replica in xbar.site_ids[1:]:
            faults[f"sa1/{replica}"] = np.ones((xbar.rows, xbar.physical_cols), dtype=bool)
    path = Path(tempfile.mkdtemp()) / "replicas.npz"
    np.savez(path, **faults)
    broken = outputs(xb.emulate(xb.program(cm, overrides={"device.fault_map": str(path)}), x))[0]
    replicas = {len(xbar.site_ids) for xbar in replicated}
    for b in range(len(x)):  # on the first copy of every layer exactly when b is a multiple of every count
        assert torch.equal(broken[b], ideal[b]) == all(b % r == 0 for r in replicas), (b, replicas)


# --- row runs: several slices of one row block per crossbar (compact-pruned-rows, group-pattern-columns) ----

#: three 4-of-9 kernel patterns; each tiny column tile (4 output channels) keeps one per input channel
RUN_PATTERNS = torch.tensor([[1, 1, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 1, 1], [0, 1, 0, 1, 1, 1, 0, 0, 0]],
                            dtype=torch.bool)
RUN_ENCODINGS = ["differential", "offset", "differential-zero-high", "polarized"]


def row_run_conv(pipeline: str, encoding: str = "differential", overrides=None):
    """A pattern-pruned 3x3 conv 8 -> 12 on ``tiny``: 32 of its 72 rows per column tile, so every tile takes
    two crossbars with different rows, each holding them as several row runs, and the tiles' rows differ."""
    from xbcompiler.prune.polarity import project

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    ids = torch.randint(0, len(RUN_PATTERNS), (3, 8), generator=g).repeat_interleave(4, 0)
    with torch.no_grad():
        conv.weight.mul_(RUN_PATTERNS[ids].reshape(12, 8, 3, 3))
        if encoding == "polarized":  # one sign per fragment of 8 matrix rows
            conv.weight.copy_(project(conv.weight, 8))
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(2))
    cal = torch.randn(8, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    overrides = {"encoding.signed": encoding, "precision.adc_bits": 5,
                 "encoding.flip_columns": encoding in ("differential", "offset"), **(overrides or {})}
    if encoding == "polarized":
        overrides.update({"crossbar.fragment_rows": 8, "encoding.flip_columns": False, "precision.adc_bits": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(nn.Sequential(conv).eval(), (x,), "tiny", pipeline, overrides=overrides, calibration=cal), x


def assert_row_runs(net):
    """Some crossbar holds one row block as several slices, and some column tile's crossbars hold different rows."""
    xbars = net.layer_crossbars(net.layers[0])
    assert any(len({s.rows for s in x.slices}) > 1 and len({s.cols for s in x.slices}) < len(x.slices) for x in xbars)
    tiles: dict[frozenset, set] = {}
    for x in xbars:
        tiles.setdefault(frozenset(s.cols for s in x.slices), set()).add(frozenset(s.rows for s in x.slices))
    assert len(tiles) > 1 and all(len(rows) > 1 for rows in tiles.values())


@pytest.mark.parametrize("pipeline", ["fully-folded-pruned", "fully-folded-pattern"])
@pytest.mark.parametrize("encoding", RUN_ENCODINGS)
def test_an_ideal_device_equals_integer_mode_on_row_runs(pipeline, encoding):
    cm, x = row_run_conv(pipeline, encoding)
    assert_row_runs(cm.netlist)
    if pipeline == "fully-folded-pattern":
        assert cm.netlist.layers[0].patterns is not None
    integer = outputs(xb.emulate(cm, x, mode="integer"))[0]
    assert integer.abs().max() > 0
    assert torch.equal(outputs(xb.emulate(xb.program(cm, seed=3), x))[0], integer)


def test_row_runs_read_each_column_once_and_only_the_columns_their_crossbars_hold():
    """Reads per image: every cycle, plane and pixel of the columns each row block's crossbars hold; the
    row block's other columns are virtual reads (integer mode's zero-weight reads, no cells)."""
    cm, _ = row_run_conv("fully-folded-pruned")
    net = cm.netlist
    kernel = kernel_of(xb.program(net))
    held: dict[frozenset, set] = {}
    for xbar in net.layer_crossbars(net.layers[0]):
        held.setdefault(frozenset(s.rows for s in xbar.slices), set()).update(
            j for s in xbar.slices for j in range(*s.cols))
    enc = kernel.enc
    pixels = int(np.prod(net.layers[0].output_shape[-2:]))
    assert kernel.reads_per_image() == pixels * len(enc.cycles) * enc.planes * sum(len(c) for c in held.values())
    assert sum(len(c) for c in held.values()) < len(held) * kernel.n_g


def ideal_planes(net) -> int:
    from xbcompiler.netlist.encoding import Encoding

    return Encoding(net.layers[0].quant.encoding).planes


def test_a_stuck_on_cell_of_a_row_run_adds_its_lost_level_once(tmp_path):
    """SA1 on a weight cell of a crossbar's second row run: the column reads it once, on every pixel."""
    import torch.nn.functional as F

    cm, x = row_run_conv("fully-folded-pruned", overrides={"adc.mode": "lossless"})
    net = cm.netlist
    xbar = next(x_ for x_ in net.layer_crossbars(net.layers[0]) if len({s.rows for s in x_.slices}) > 1)
    s = max(xbar.slices, key=lambda s: s.at[0])  # the last row run
    cells = net.crossbar_cells(xbar.id)
    m_c = xbar.physical_cols // xbar.cols
    r, c = next((r, c) for r, c in np.argwhere(cells < 3) if c % m_c < ideal_planes(net)
                and s.at[0] <= r < s.at[0] + s.rows[1] - s.rows[0] and s.at[1] <= c // m_c < s.at[1] + s.cols[1] - s.cols[0])
    ideal = kernel_of(xb.program(net))
    chip = xb.program(net, overrides={"device.fault_map": fault_map(tmp_path, xbar, "sa1", [(r, c)])})
    xq = ideal.as4d(ideal.quantize(x))
    delta = kernel_of(chip).accumulator(xq).double() - ideal.accumulator(xq).double()
    enc = ideal.enc
    column, plane = divmod(int(c), m_c)
    coef = enc.plane_signs[plane] * 2.0 ** enc.plane_shifts[plane]
    patches = F.unfold(ideal.driven(xq).double(), (3, 3))  # [B, (c, dy, dx), pixels], padding included
    expected = torch.zeros_like(delta)
    expected[:, s.cols[0] + column - s.at[1]] = (patches[:, s.rows[0] + int(r) - s.at[0]]
                                                  * coef * (3 - int(cells[r, c]))).view(x.shape[0], 5, 5)
    assert expected.abs().sum() > 0 and torch.equal(delta, expected)
