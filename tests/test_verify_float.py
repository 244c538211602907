"""``verify`` in integer mode checks the end-to-end error against the float model (issue 14, item 2).

The integer datapath can match its reference bit for bit while the quantised network no longer computes
what the model computes (calibration data unlike the inputs, too few bits): given inputs, verify then
fails on ``float_rel > float_tolerance`` (default ``max(2 ** (4 - b), 0.05)``), and ``xbc verify --inputs`` exits 1.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import xbcompiler as xb
from xbcompiler.cli import main
from xbcompiler.verify import default_float_tolerance


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def compiled(calibration_scale: float, target: str = "isaac-like"):
    model = mlp()
    calibration = calibration_scale * torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, xb.compile(model, (torch.randn(1, 16),), target, calibration=calibration)


INPUTS = torch.randn(16, 16, generator=torch.Generator().manual_seed(2))


def test_default_tolerance_follows_the_narrowest_width():
    _, eight = compiled(1.0)
    _, four = compiled(1.0, "tiny")
    assert default_float_tolerance(eight.netlist) == 0.05  # 16-bit isaac-like: the 5 % floor
    assert default_float_tolerance(four.netlist) == 1.0
    six_bits = xb.compile(mlp(), (torch.randn(1, 16),), "tiny", calibration=torch.randn(8, 16),
                          overrides={"precision.weight_bits": 6, "precision.input_bits": 8})
    assert default_float_tolerance(six_bits.netlist) == 0.25
    assert default_float_tolerance(xb.compile(mlp(), (torch.randn(1, 16),), "isaac-like").netlist) is None


def test_calibrated_like_the_inputs_passes_both_checks():
    model, cm = compiled(1.0)
    report = xb.verify(cm.netlist, model, INPUTS)
    assert report.exact and report.float_ok and report.ok
    assert report.float_tolerance == 0.05 and report.float_rel < report.float_tolerance


def test_calibration_unlike_the_inputs_is_exact_but_fails_on_the_float_error():
    model, cm = compiled(1e-3)  # scales fitted to tiny activations: real inputs saturate
    report = xb.verify(cm.netlist, model, INPUTS)
    assert report.exact and not report.float_ok and not report.ok
    assert report.float_rel > report.float_tolerance
    assert xb.verify(cm.netlist, model, INPUTS, float_tolerance=None).ok  # reported only
    assert xb.verify(cm.netlist, model, INPUTS, float_tolerance=1e9).ok
    seeded = xb.verify(cm.netlist, model)  # seeded random inputs: reported, not checked
    assert seeded.float_rel is not None and seeded.float_tolerance is None and seeded.ok


@pytest.fixture
def saved(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
                          "    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()\n")
    _, cm = compiled(1e-3)
    cm.save(tmp_path / "net")
    np.save(tmp_path / "x.npy", INPUTS.numpy())
    return tmp_path, f"{model_file}:build"


def test_cli_fails_with_exit_1_naming_the_quantisation_error(saved, capsys):
    folder, spec = saved
    assert main(["verify", str(folder / "net"), "--model", spec, "--inputs", str(folder / "x.npy")]) == 1
    out = capsys.readouterr().out
    assert "QUANTISATION ERROR" in out and "bit for bit" in out
    assert main(["verify", str(folder / "net"), "--model", spec, "--inputs", str(folder / "x.npy"),
                 "--float-tolerance", "none"]) == 0
    assert main(["verify", str(folder / "net"), "--model", spec]) == 0  # random inputs: reported only
    assert "not checked: random inputs" in capsys.readouterr().out


def test_cli_json_carries_both_verdicts(saved, capsys):
    folder, spec = saved
    main(["verify", str(folder / "net"), "--model", spec, "--inputs", str(folder / "x.npy"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["exact"] is True and data["float_ok"] is False and data["ok"] is False
    assert data["float_tolerance"] == 0.05


@pytest.mark.parametrize("value", ["-1", "x", "nan"])
def test_bad_float_tolerance_is_a_coded_error(saved, capsys, value):
    folder, spec = saved
    assert main(["verify", str(folder / "net"), "--model", spec, "--float-tolerance", value]) == 2
    assert "XB003" in capsys.readouterr().err


def test_inputs_of_the_wrong_shape_are_refused(saved, capsys):
    folder, spec = saved
    np.save(folder / "bad.npy", np.zeros((4, 3), dtype=np.float32))
    assert main(["verify", str(folder / "net"), "--model", spec, "--inputs", str(folder / "bad.npy")]) == 2
    assert "XB505" in capsys.readouterr().err
