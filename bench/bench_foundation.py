"""Foundation benchmarks: ResNet-50 compile time; ideal emulator time / torch time on ResNet-20 at batch 64.

Goals (issue: foundation): compile under 10 s on 2 cores; ratio at most 2.0.
Run: ``python bench/bench_foundation.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emulator_over_torch, report

import xbcompiler as xb
from tests.models import IMAGENET_MODELS, MODELS
from xbcompiler.emulator import emulator_for


def bench_compile(repeat: int) -> None:
    model = IMAGENET_MODELS["resnet50_imagenet"].factory()
    x = torch.randn(1, 3, 224, 224)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compiled = xb.compile(model, (x,), "isaac-like", pipeline="fully-folded")
        times.append(time.perf_counter() - start)
    times.sort()
    report("compile_resnet50_isaac_fully_folded", median_s=times[len(times) // 2], goal_s=10.0,
           crossbars=compiled.summary["crossbars"])


def bench_emulator(device: str, repeat: int) -> None:
    model = MODELS["resnet20"].factory().to(device)
    x = torch.randn(64, 3, 32, 32, device=device)
    compiled = xb.compile(model.cpu(), (x[:1].cpu(),), "isaac-like", pipeline="fully-folded")
    model.to(device)
    emulator = emulator_for(compiled.netlist, "ideal", torch.device(device))
    ratio, t_emu, t_torch = emulator_over_torch(emulator, model, x, device, repeat)
    report(f"emulator_ideal_over_torch_resnet20_b64_{device}", ratio=ratio, goal=2.0, emulator_s=t_emu,
           torch_s=t_torch, threads=torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    bench_compile(max(3, args.repeat // 3))
    bench_emulator(args.device, args.repeat)


if __name__ == "__main__":
    main()
