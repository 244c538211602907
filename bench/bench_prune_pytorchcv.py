"""`xbc prune` with default search settings on third-party architectures: crossbars freed, loss, time.

For each pytorchcv model of ``examples/pytorchcv_models.py`` (residual, squeeze-and-excitation and
depthwise-separable families) and each seed, runs exactly the command of docs/pruning.md's table

    xbc prune examples/pytorchcv_models.py:M --target isaac-like --data digits:32x32x3 --train-epochs 30 \\
        --seed S --json -o DIR

as a subprocess and reads its ``prune.json``: the share of compute crossbars freed, the test loss (float
minus pruned, points), each try's judged loss, the ideal and integer-mode checks, wall and CPU seconds.
Goal (issue 16): at least 50 % freed at at most 1 point, verified in integer mode, under 5 minutes a run,
on every seed of three families. One line per run and one per model (``met_all_seeds``).
Run: ``python bench/bench_prune_pytorchcv.py`` (about 40 minutes on 2 cores); ``--models``, ``--seeds``
and ``--xbc-args`` narrow or change it; ``--quick`` is a smoke run on a tiny model (seconds).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, report

MODELS = ("resnet20", "seresnet20", "mobilenetv3", "mobilenetv2")
GOAL_SAVING, GOAL_LOSS, GOAL_WALL_S = 50.0, 1.0, 300.0
QUICK = ("tests/data/prune_models.py:inverted_residual", "--target", "isaac-like", "--set", "crossbar.rows=64",
         "--set", "crossbar.cols=64", "--data", "digits:8x8x1", "--train-epochs", "1", "--epochs", "1",
         "--relax-epochs", "0")


def prune_once(ref_and_flags: list[str], seed: int, out: Path) -> dict:
    """One ``xbc prune`` run; its ``prune.json`` summary with wall and CPU seconds of the subprocess."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xbcompiler.cli", "prune", *ref_and_flags, "--seed", str(seed),
                           "--json", "--quiet", "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"xbc prune failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads((out / "prune.json").read_text())
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {**summary, "wall_s": wall, "cpu_s": cpu}


def run_row(name: str, seed: int, s: dict) -> bool:
    """Print one run's line; whether it meets the goal."""
    dense, pruned = s["dense_crossbars"], s["pruned_crossbars"]
    saving = 100.0 * (1.0 - pruned / dense)
    loss = s["float_accuracy"] - s["pruned_accuracy"]
    verified = bool(s["verify_ok"] and s["verify_integer_exact"])
    met = saving >= GOAL_SAVING and loss <= GOAL_LOSS and verified and s["wall_s"] < GOAL_WALL_S
    k = s["knapsack"]
    tries = [round(t["loss"], 2) for t in k["tries"]] if k else []
    report(f"prune_{name}_seed{seed}", dense=dense, pruned=pruned, saving_percent=round(saving, 2),
           float_accuracy=s["float_accuracy"], pruned_accuracy=s["pruned_accuracy"], loss=round(loss, 3),
           judged_tries=tries, standing=k["standing"] if k else None, verified=verified,
           wall_s=round(s["wall_s"], 1), cpu_s=round(s["cpu_s"], 1), saving_goal=GOAL_SAVING,
           loss_goal=GOAL_LOSS, wall_goal_s=GOAL_WALL_S, met=met)
    return met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="factories of examples/pytorchcv_models.py")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--xbc-args", default="", help="more flags for every xbc prune run (shell-quoted)")
    p.add_argument("--quick", action="store_true", help="one tiny model, one seed, one epoch (a smoke run)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = shlex.split(args.xbc_args)
    if args.quick:
        runs = {"inverted_residual": [*QUICK, *extra]}
        seeds = seeds[:1]
    else:
        runs = {m: [f"examples/pytorchcv_models.py:{m}", "--target", "isaac-like", "--data", "digits:32x32x3",
                    "--train-epochs", "30", *extra] for m in args.models.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in runs.items():
            met = [run_row(name, seed, prune_once(flags, seed, Path(tmp) / f"{name}_{seed}")) for seed in seeds]
            report(f"prune_{name}", seeds=len(seeds), met_seeds=sum(met), met_all_seeds=all(met))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
