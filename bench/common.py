"""Shared helpers for the benchmarks: repo path, paired median timing, printing."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def median_time(fn, repeat: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_ratio(fn_a, fn_b, repeat: int = 9) -> tuple[float, float, float]:
    """Median of per-pair ratios a/b (A and B alternate, so machine drift cancels), and both medians."""
    fn_a(), fn_b()
    ratios, ta, tb = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        fn_a()
        mid = time.perf_counter()
        fn_b()
        end = time.perf_counter()
        ta.append(mid - start)
        tb.append(end - mid)
        ratios.append((mid - start) / (end - mid))
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def emulator_over_torch(emulator, model, x, device: str, repeat: int) -> tuple[float, float, float]:
    """:func:`paired_ratio` of ``emulator(x)`` against ``model(x)`` (no grad), synchronising CUDA."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_emulator():
        emulator(x)
        sync()

    def run_torch():
        with torch.no_grad():
            model(x)
        sync()

    return paired_ratio(run_emulator, run_torch, repeat)


def forward(model, x):
    """A callable running ``model(x)`` without autograd (the torch and peer sides of a paired timing)."""
    import torch

    def run():
        with torch.no_grad():
            model(x)
    return run


def report(name: str, **values) -> None:
    """Print one benchmark result as a readable line and a JSON line."""
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"{name}: {text}")
    print(json.dumps({"bench": name, **values}))


def paired_rounds(fns: dict, repeat: int = 9, sync=None) -> dict[str, list[float]]:
    """Wall times of every function in ``fns`` (name -> callable), by name, over ``repeat`` rounds.

    One warm-up round first; each round then runs every function once in turn, so machine drift hits
    them all alike. ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call, inside its time.
    Compare two of them with :func:`round_ratio`.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        fn()
        sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def round_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over the rounds of :func:`paired_rounds` of ``a``'s time / ``b``'s time in the same round."""
    return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))
