"""Sweep throughput on Ray (issue 13): the same 40-trial digits fault sweep with 1 and with 2 workers.

The spec is ``examples/sweeps/fault_rates.toml`` cut to 2 seeds (2 encodings x 10 SA1 rates x 2 seeds
= 40 trials, 2 compiles), with the model trained once beforehand (``--epochs``) and loaded from a
weights file, and without pruning, so each run times compiles and trials only. Each worker count runs
in a fresh local Ray instance with that many CPUs, into a fresh directory. Printed per run: wall time
(Ray's start included), the trial phase (first task submitted to last result), trials/s and trials/s
per worker, and the mean time of one trial (programming and emulation, from results.csv) with its
inverse, trials per second per core once the compiles are done; then the speed-up of 2 workers over 1
on the trial phase (goal 1.6 on 2 cores).

``--model resnet20`` measures trials/s per core of ResNet-20 instead (random weights, ``--samples``
random CIFAR-sized images per trial, ``isaac-like`` with 8-bit weights and inputs, device mode, one
worker). ``--quick`` is a smoke run (a few trials on a few images).

Run: ``python bench/bench_sweep.py [--workers 1,2] [--limit N] [--model digits|resnet20] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import tomllib
from pathlib import Path

from common import ROOT, report

from xbcompiler.campaign.report import load

SPEC = ROOT / "examples" / "sweeps" / "fault_rates.toml"
GOAL = 1.6


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_spec(path: Path, data: dict) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f'"{k}" = {toml_value(v)}' for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def digits_spec(folder: Path, epochs: int, limit: int, seeds: int, rates: int) -> Path:
    """The example's spec with trained weights (trained here once), no pruning, ``seeds`` seeds."""
    import torch

    from tests.models import digits_cnn
    from xbcompiler.datasets import digits, train_classifier

    data = tomllib.loads(SPEC.read_text())
    model = digits_cnn(seed=0)
    train_classifier(model, digits(0), epochs=epochs, seed=0)
    torch.save(model.state_dict(), folder / "digits_cnn.pt")
    data.pop("train")
    data.pop("prune")
    data["model"] = {"factory": str(ROOT / "tests" / "models.py") + ":digits_cnn", "input_shape": [1, 1, 8, 8],
                     "weights": "digits_cnn.pt"}
    data["data"]["limit"] = limit
    data["grid"]["device.sa1_rate"] = data["grid"]["device.sa1_rate"][:rates]
    data["grid"]["seed"] = list(range(seeds))
    return write_spec(folder / "bench.toml", data)


def resnet_spec(folder: Path, samples: int, trials: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(folder / "cifar_like.npz", x_test=rng.standard_normal((samples, 3, 32, 32), dtype=np.float32),
             y_test=rng.integers(0, 10, samples), x_train=rng.standard_normal((16, 3, 32, 32), dtype=np.float32),
             y_train=rng.integers(0, 10, 16))
    data = {"schema": 1, "name": "resnet20-throughput",
            "model": {"factory": str(ROOT / "tests" / "models.py") + ":resnet20", "input_shape": [1, 3, 32, 32]},
            "data": {"source": "cifar_like.npz", "calibration": 16, "batch_size": 64},
            "compile": {"target": "isaac-like", "mode": "device"},
            "overrides": {"precision.weight_bits": 8, "precision.input_bits": 8, "device.sa1_rate": 0.001},
            "grid": {"seed": list(range(trials))}}
    return write_spec(folder / "resnet.toml", data)


def run_once(spec: Path, out: Path, workers: int):
    """One sweep in a local Ray instance of ``workers`` CPUs, which the sweep starts and stops."""
    import xbcompiler as xb

    return xb.sweep(spec, out, workers=workers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits", choices=["digits", "resnet20"])
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--epochs", type=int, default=10, help="digits: training epochs before the sweeps")
    p.add_argument("--limit", type=int, default=0, help="digits: test images per trial (0: all 450)")
    p.add_argument("--samples", type=int, default=64, help="resnet20: images per trial")
    p.add_argument("--trials", type=int, default=4, help="resnet20: trials (seeds)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 trials on 20 images")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_sweep.") as tmp:
        folder = Path(tmp)
        if args.model == "digits":
            seeds, rates, limit = (1, 2, 20) if args.quick else (2, 10, args.limit)
            spec = digits_spec(folder, 1 if args.quick else args.epochs, limit, seeds, rates)
        else:
            spec = resnet_spec(folder, 4 if args.quick else args.samples, 2 if args.quick else args.trials)
        times = {}
        for w in counts:
            o = run_once(spec, folder / f"out{w}", w)
            rate = o.ran / o.trials_s if o.trials_s else 0.0
            times[w] = o.trials_s
            per_trial = statistics.fmean(r.metrics["seconds"] for r in load(folder / f"out{w}")[1])
            report(f"sweep_{args.model}_w{w}", trials=o.ran, failed=o.failed, compiles=o.compiles, workers=w,
                   wall_s=round(o.wall_s, 2), trials_s=round(o.trials_s, 2), trials_per_s=round(rate, 4),
                   trials_per_s_per_core=round(rate / w, 4), trial_mean_s=round(per_trial, 3),
                   trials_per_core_s_without_compiles=round(1 / per_trial, 4))
        if 1 in times and 2 in times:
            speedup = times[1] / times[2]
            report(f"sweep_{args.model}_speedup", speedup=round(speedup, 3), goal=GOAL, met=speedup >= GOAL)


if __name__ == "__main__":
    main()
