"""``xbc prune`` and ``examples/prune_digits.py`` end to end with a tiny budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import xbcompiler as xb
from xbcompiler.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "data" / "prune_models.py"
T64 = ["--target", "isaac-like", "--set", "crossbar.rows=64", "--set", "crossbar.cols=64"]


def test_xbc_prune_writes_a_verified_pruned_netlist(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--train-epochs", "2", "--sparsity", "0.5",
                   "--epochs", "1", "--reorder", "--solver", "heuristic", "-o", str(out), "--json", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    netlist = xb.load_netlist(out)
    assert summary["pruned_crossbars"] == netlist.summary["crossbars"] < summary["dense_crossbars"]
    assert summary["verify_ok"] and {"float_accuracy", "pruned_accuracy", "layers"} <= set(summary)
    pruned = [r for r in summary["layers"] if r["kept"] < r["groups"]]
    assert pruned and all(abs(r["sparsity"] - 0.5) < 0.05 for r in pruned)  # exact up to rounding of s
    assert (out / "prune.json").is_file() and (out / "pareto.png").is_file()


def test_xbc_prune_refuses_a_grain_the_mapping_has_not(tmp_path, capsys):
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--grain", "kernel", "--sparsity", "0.5",
                   "-o", str(tmp_path / "x"), "--quiet"])
    assert status == 2 and "XB003" in capsys.readouterr().err


@pytest.mark.slow
def test_example_runs_with_a_tiny_budget(tmp_path):
    out = tmp_path / "digits"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_digits.py"), "--out", str(out), "--quick",
                           "--quiet"], capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    netlist = xb.load_netlist(out)
    assert result["pruned_crossbars"] == netlist.summary["crossbars"] < result["dense_crossbars"]
    assert 0 <= result["float_accuracy"] <= 100 and 0 <= result["pruned_accuracy"] <= 100
    assert result["verify_ideal_ok"] and result["verify_integer_ok"] and result["integer_mismatches"] == 0


@pytest.mark.parametrize("flag,value", [("--sparsity", "1.0"), ("--sparsity", "-0.1"), ("--max-ratio", "0"),
                                        ("--step", "1.5"), ("--lr", "0"), ("--epochs", "-1")])
def test_xbc_prune_refuses_values_out_of_range(tmp_path, capsys, flag, value):
    out = tmp_path / "x"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, flag, value, "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "XB003" in err and flag in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_study_example_runs_with_a_tiny_budget(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_study.py"), "--out", str(out), "--models",
                           "vgg", "--seeds", "0", "--sparsities", "0.8", "--epochs", "1", "--finetune-epochs", "1",
                           "--time-limit", "1"], capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "study.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["crossbar", "column", "column+reorder"]
    assert len({r["crossbars"] for r in rows}) == 1 and rows[0]["crossbars"] < rows[0]["dense"]
    assert all(r["netlist_crossbars"] == r["crossbars"] for r in rows)  # the pruned netlists' own count
    assert rows[0]["kept_importance"] <= rows[1]["kept_importance"]  # column keeps at least crossbar's energy
    assert (out / "study.md").is_file() and (out / "pareto.png").is_file()


def test_xbc_prune_refuses_unreadable_or_inconsistent_data(tmp_path, capsys):
    import numpy as np

    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not an archive")
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, x_train=np.zeros((10, 1, 8, 8)), y_train=np.arange(9), x_test=np.zeros((4, 1, 8, 8)),
             y_test=np.zeros(4, dtype=np.int64))
    for data in (garbage, ragged):
        out = tmp_path / f"out-{data.stem}"
        status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--data", str(data), "-o", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert status == 2 and "XB003" in err and data.name in err and not out.exists()


@pytest.mark.parametrize("model", ["vgg", "resnet"])
@pytest.mark.slow
def test_example_meets_the_pruning_goal(tmp_path, model):
    """The full experiment (seed 0, default budget): >= 60 % fewer compute crossbars, <= 1 point lost."""
    out = tmp_path / model
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_digits.py"), "--out", str(out), "--model",
                           model, "--quiet"], capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pruned_crossbars"] == xb.load_netlist(out).summary["crossbars"]
    assert result["pruned_crossbars"] <= 0.4 * result["dense_crossbars"]
    assert result["float_accuracy"] - result["pruned_accuracy"] <= 1.0
    assert result["verify_ideal_ok"] and result["verify_integer_ok"] and result["integer_mismatches"] == 0


def test_xbc_prune_without_matplotlib_stops_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "x"
    status = main(["prune", f"{MODELS}:digits_cnn", *T64, "--train-epochs", "50", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "XB005" in err and "xbcompiler[plot]" in err and not out.exists()
