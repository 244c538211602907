"""``examples/fault_tolerance.py`` and ``examples/variation_study.py`` end to end with a tiny budget (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_quick(example: str, out: Path) -> dict:
    """Run ``examples/EXAMPLE --out OUT --quick``; its last stdout line, parsed."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / example), "--out", str(out), "--quick"],
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fault_tolerance_example_quick(tmp_path):
    out = tmp_path / "faults"
    result = run_quick("fault_tolerance.py", out)
    assert {"float_accuracy", "sparsity", "tolerated_sa1_rate"} <= result.keys()
    assert set(result["tolerated_sa1_rate"]) == {"differential", "differential-zero-high"}
    assert result["float_accuracy"] > 50 and 0.3 < result["sparsity"] < 1
    assert all(rate in (0.0, 0.2) for rate in result["tolerated_sa1_rate"].values())
    table = (out / "faults.md").read_text()
    assert table.count("| differential |") == 2 and table.count("| differential-zero-high |") == 2
    assert (out / "faults.png").stat().st_size > 1000


@pytest.mark.slow
def test_variation_study_quick(tmp_path):
    out = tmp_path / "variation"
    result = run_quick("variation_study.py", out)
    compensations = {"none", "residual programming", "column gain", "write-verify (5 pulses)"}
    assert set(result["accuracy"]) == {"offset", "differential"}
    for encoding, by_compensation in result["accuracy"].items():
        assert set(by_compensation) == compensations
        for by_sigma in by_compensation.values():
            # no variation: the integer datapath exactly, whatever the compensation
            assert by_sigma["0.0"] == result["integer_accuracy"][encoding]
    table = (out / "variation.md").read_text()
    assert table.count("| offset | none |") == 2 and table.count("| differential | column gain |") == 2
    assert all((out / f"variation_{e}.png").stat().st_size > 1000 for e in ("offset", "differential"))
