"""Netlist v2 benchmarks (issue 10): the semi-folded pipeline's saved netlist against fully-folded's.

ResNet-50 (3x224x224, random weights) on ``isaac-like``, compiled with the ``semi-folded`` pipeline (the default before the budgeted mapping)
(semi-folded) and with ``fully-folded``, each in a fresh process of its own (this script with the
hidden ``--child PIPELINE OUTDIR``), which compiles, saves and reports on one JSON line. Measured:

(a) size: bytes of the saved directory (every file in it: netlist.json + weights.npz today);
(b) time: ``xb.compile`` + ``compiled.save`` wall time (model construction excluded);
(c) memory: the child's peak resident set (RSS).

Goals: size default / fully-folded at most 1.25; time default / fully-folded at most 1.5; the default's
peak RSS under 1.5 GB (10^9 bytes). Also shown, without a goal: ``xb.load_netlist`` time of the saved
directory, measured after the peak was read so that it does not count in it.

Peak RSS is read by the child itself, ``getrusage(RUSAGE_SELF).ru_maxrss`` as its last measurement:
``RUSAGE_CHILDREN`` in the parent is the largest peak among all children reaped so far (neither a sum
nor per child), so a before/after "delta" is wrong whenever the second child peaks lower than the
first. The peak includes the interpreter, torch and the model, alike in both processes.

Run: ``python bench/bench_netlist.py [--repeat N] [--model NAME] [--quick]`` (ResNet-50: about a minute
per repeat). ``--quick`` is one repeat of ResNet-20 unless ``--model`` names another zoo model
(``tests/models.py``), for a smoke run in seconds; the goals are ResNet-50's.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import ROOT, report

PIPELINES = ("semi-folded", "fully-folded")
GOALS = {"size_ratio": 1.25, "time_ratio": 1.5, "default_peak_gb": 1.5}
MODEL_ALIASES = {"resnet50": "resnet50_imagenet", "resnet18": "resnet18_imagenet", "vgg16": "vgg16_imagenet"}


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(pipeline: str, outdir: str, model_name: str) -> None:
    """Compile and save one pipeline in this (fresh) process; print the measurements as one JSON line."""
    import torch

    import xbcompiler as xb
    from tests.models import ALL_MODELS

    case = ALL_MODELS[model_name]
    model = case.factory()
    x = case.example_input()[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        start = time.perf_counter()
        compiled = xb.compile(model, (x,), "isaac-like", pipeline=pipeline)
        mid = time.perf_counter()
        compiled.save(outdir)
        end = time.perf_counter()
    peak = peak_rss_bytes()
    files = {str(p.relative_to(outdir)): p.stat().st_size for p in sorted(Path(outdir).rglob("*")) if p.is_file()}
    summary = {k: compiled.summary.get(k) for k in ("crossbars", "tiles", "chips")}
    del compiled
    start_load = time.perf_counter()
    xb.load_netlist(outdir)
    load_s = time.perf_counter() - start_load
    print(json.dumps({"child": pipeline, "compile_s": mid - start, "save_s": end - mid, "bytes": sum(files.values()),
                      "files": files, "peak_bytes": peak, "load_s": load_s, "threads": torch.get_num_threads(),
                      **summary}))


def run_child(pipeline: str, outdir: Path, model_name: str) -> dict:
    """Run :func:`child` in a new interpreter and return its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", pipeline, str(outdir), "--model", model_name]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"child"')]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"bench_netlist: the {pipeline} child exited {proc.returncode}")
    return json.loads(lines[-1])


def bench(model_name: str, repeat: int) -> None:
    runs: dict[str, list[dict]] = {p: [] for p in PIPELINES}
    with tempfile.TemporaryDirectory(prefix="bench_netlist_") as tmp:
        for r in range(repeat):
            for pipeline in PIPELINES:  # alternate, so drift hits both pipelines alike
                out = Path(tmp) / f"{r}_{pipeline}"
                runs[pipeline].append(run_child(pipeline, out, model_name))
                shutil.rmtree(out)  # free the disk before the next child

    def median(pipeline: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[pipeline])

    for pipeline in PIPELINES:
        last = runs[pipeline][-1]
        report(f"netlist_{model_name}_{pipeline.replace('-', '_')}", bytes=last["bytes"], mb=last["bytes"] / 1e6,
               compile_save_s=median(pipeline, "compile_s") + median(pipeline, "save_s"),
               compile_s=median(pipeline, "compile_s"), save_s=median(pipeline, "save_s"),
               load_s=median(pipeline, "load_s"), peak_gb=median(pipeline, "peak_bytes") / 1e9,
               crossbars=last["crossbars"], tiles=last["tiles"], chips=last["chips"],
               files=",".join(f"{k}:{v}" for k, v in last["files"].items()), threads=last["threads"])
    default, folded = runs["semi-folded"], runs["fully-folded"]
    values = {
        "size_ratio": default[-1]["bytes"] / folded[-1]["bytes"],
        "time_ratio": statistics.median((d["compile_s"] + d["save_s"]) / (f["compile_s"] + f["save_s"])
                                        for d, f in zip(default, folded)),
        "peak_ratio": median("semi-folded", "peak_bytes") / median("fully-folded", "peak_bytes"),
        "default_peak_gb": median("semi-folded", "peak_bytes") / 1e9,
    }
    met = {key: values[key] <= goal if key != "default_peak_gb" else values[key] < goal for key, goal in GOALS.items()}
    report(f"netlist_{model_name}_semi_folded_over_fully_folded", size_ratio=values["size_ratio"],
           size_goal=GOALS["size_ratio"], time_ratio=values["time_ratio"], time_goal=GOALS["time_ratio"],
           peak_ratio=values["peak_ratio"], default_peak_gb=values["default_peak_gb"],
           peak_goal_gb=GOALS["default_peak_gb"], size_met=met["size_ratio"], time_met=met["time_ratio"],
           peak_met=met["default_peak_gb"], repeat=repeat)
    print("goals: " + ", ".join(f"{key} {values[key]:.3g} ({'<' if key == 'default_peak_gb' else '<='} {goal}) "
                                f"{'met' if met[key] else 'NOT met'}" for key, goal in GOALS.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="child pairs to run; times are paired medians")
    parser.add_argument("--model", default=None, help="zoo model name (default resnet50_imagenet; resnet20 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one repeat, ResNet-20 unless --model is given")
    parser.add_argument("--child", nargs=2, metavar=("PIPELINE", "OUTDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or ("resnet20" if args.quick else "resnet50_imagenet")
    model = MODEL_ALIASES.get(model, model)
    if args.child:
        child(args.child[0], args.child[1], model)
        return
    from tests.models import ALL_MODELS

    if model not in ALL_MODELS:
        parser.error(f"unknown model '{model}' (known: {', '.join(sorted(ALL_MODELS))})")
    bench(model, 1 if args.quick else max(1, args.repeat))


if __name__ == "__main__":
    main()
