"""Smoke runs of the netlist-v2 benchmarks on a tiny model: they exit 0 and print their JSON lines.

No timing is asserted; the benchmarks themselves report against their goals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str) -> tuple[str, dict[str, dict]]:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"bench"')]
    return proc.stdout, {row["bench"]: row for row in rows}


@pytest.mark.slow
def test_bench_netlist_quick():
    _, rows = run_bench("bench_netlist.py", "--quick", "--model", "mlp")
    for pipeline in ("semi_folded", "fully_folded"):
        row = rows[f"netlist_mlp_{pipeline}"]
        assert {"bytes", "compile_s", "save_s", "compile_save_s", "load_s", "peak_gb", "crossbars"} <= row.keys()
        assert row["bytes"] > 0 and row["peak_gb"] > 0
    ratios = rows["netlist_mlp_semi_folded_over_fully_folded"]
    assert {"size_ratio", "size_goal", "time_ratio", "time_goal", "peak_ratio", "default_peak_gb",
            "peak_goal_gb", "size_met", "time_met", "peak_met"} <= ratios.keys()


@pytest.mark.slow
def test_bench_emulation_quick():
    out, rows = run_bench("bench_emulation.py", "--quick", "--model", "mlp", "--batch", "4", "--repeat", "1")
    cases = [("ideal", "fully_folded"), ("ideal", "semi_folded"), ("ideal", "fully_unfolded"), ("integer", "semi_folded")]
    for mode, pipeline in cases:
        row = rows[f"emulation_{mode}_over_torch_mlp_b4_{pipeline}_cpu"]
        assert {"ratio", "goal", "emulator_s", "torch_s", "err", "crossbars"} <= row.keys()
        assert row["err"] < (1e-4 if mode == "ideal" else 0.5)
    peer_rows = [name for name in rows if name.startswith("peer_")]
    if "peer: skipped" in out:
        assert not peer_rows
    else:
        assert len(peer_rows) == len(cases)
        for name in peer_rows:
            assert {"ours_over_peer", "goal", "peer_over_torch", "peer_s"} <= rows[name].keys()
    assert not any(name.startswith("emulation_ideal_over_torch_resnet50") for name in rows)


@pytest.mark.slow
def test_bench_device_quick():
    _, rows = run_bench("bench_device.py", "--model", "lenet", "--batch", "2", "--repeat", "1", "--no-peer")
    row = rows["device_lenet_b2_isaac_like"]
    assert {"over_torch", "goal", "device_s", "torch_s", "program_s", "sa0_measured", "sa1_measured"} <= row.keys()
    assert 0 < row["sa1_measured"] < 0.2 and "over_peer" not in row


@pytest.mark.slow
def test_bench_load_bounds_small_member():
    _, rows = run_bench("bench_load_bounds.py", "--gib", "0.01")
    row = rows["load_bounds_unnamed_member"]
    assert row["code"] == "XB516" and row["plain_code"] == "ok"  # refused unread; the plain one loads
    assert row["peak_mb"] > 0 and row["plain_peak_mb"] > 0


@pytest.mark.slow
def test_bench_prune_pytorchcv_quick():
    _, rows = run_bench("bench_prune_pytorchcv.py", "--quick")
    row = rows["prune_inverted_residual_seed0"]
    assert {"dense", "pruned", "saving_percent", "loss", "judged_tries", "verified", "wall_s", "cpu_s",
            "saving_goal", "loss_goal", "wall_goal_s", "met"} <= row.keys()
    assert row["verified"] and 0 < row["pruned"] < row["dense"] and row["judged_tries"]
    assert row["saving_percent"] == round(100 * (1 - row["pruned"] / row["dense"]), 2)
    assert row["met"] == (row["saving_percent"] >= 50 and row["loss"] <= 1 and row["wall_s"] < 300)
    summary = rows["prune_inverted_residual"]
    assert summary["seeds"] == 1 and summary["met_all_seeds"] == row["met"]
