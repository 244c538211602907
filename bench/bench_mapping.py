"""Mapping benchmarks: slice-width search time for ResNet-50, and replication solve time with its gap.

Goals (issue: semi-folded mapping): the mapping search of ResNet-50 (ImageNet shapes) under 5 s.
The replication CP-SAT runs with one worker (deterministic) and a 10 s limit; its period is compared
with the greedy result of the same problem.
Run: ``python bench/bench_mapping.py``.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import median_time, report

import xbcompiler as xb
from tests.models import IMAGENET_MODELS
from xbcompiler.frontend.trace import trace
from xbcompiler.mapping.apply import map_toeplitz
from xbcompiler.mapping.plan import ArraySpec
from xbcompiler.mapping.replication import ReplicationProblem, greedy
from xbcompiler.mapping.replication_solver import solve
from xbcompiler.mapping.search import search
from xbcompiler.pipeline import PassContext, PassManager
from xbcompiler.report.compare import model_shapes

#: background §2.3's crossbar: 256x256 with one physical column per weight (offset-encoded 8-bit cells).
SPEC_256 = {"crossbar.rows": 256, "crossbar.cols": 256, "crossbar.cell_bits": 8, "precision.weight_bits": 8,
            "encoding.signed": "offset"}


def bench_search(repeat: int) -> list:
    model = IMAGENET_MODELS["resnet50_imagenet"].factory()
    x = torch.randn(1, 3, 224, 224)
    start = time.perf_counter()
    shapes = model_shapes(model, (x,))
    trace_s = time.perf_counter() - start
    plans = []
    for name, target in (("256x256_mc1", xb.load_target("prime-like", SPEC_256)), ("isaac-like", xb.load_target("isaac-like"))):
        arr = ArraySpec.of(target)

        def run(arr=arr):
            return [search(s, shape, arr, layer=layer) for layer, shape in shapes for s in ("semi-folded", "fully-unfolded")]

        seconds = median_time(run, repeat)
        semi = [p for p in run() if p.strategy == "semi-folded"]
        plans.append((name, target, semi))
        report(f"mapping_search_resnet50_{name}", median_s=seconds, goal_s=5.0, layers=len(shapes),
               candidates=sum(shape.out_hw[1] for _, shape in shapes) * 2, crossbars=sum(p.crossbars for p in semi),
               trace_s=trace_s)
    # the whole map-semi-folded pass on the lowered program: search, blocks, verifier
    gm = trace(model, (x,))
    ctx = PassContext(target=plans[0][1], properties={"traced", "shapes"})
    program = PassManager("fold-batchnorm,lower-im2col{check=false},lower-to-xbar").run(gm, ctx)
    start = time.perf_counter()
    mapped, _ = map_toeplitz(program, plans[0][1], "semi-folded")
    map_s = time.perf_counter() - start
    start = time.perf_counter()
    mapped.verify(plans[0][1])
    report("map_semi_folded_pass_resnet50_256x256_mc1", map_s=map_s, verify_s=time.perf_counter() - start,
           crossbars=len(mapped.crossbars), blocks=len(mapped.blocks))
    return plans


def bench_replication(plans, time_limit_s: float) -> None:
    for name, _, semi in plans:
        phases, crossbars = tuple(p.phases for p in semi), tuple(p.crossbars for p in semi)
        used = sum(crossbars)
        for factor in (0.25, 1.0, 4.0):
            problem = ReplicationProblem(tuple(p.layer for p in semi), phases, crossbars, int(factor * used))
            start = time.perf_counter()
            found = solve(problem, time_limit_s=time_limit_s, seed=0, workers=1)
            solve_s = time.perf_counter() - start
            fallback = greedy(problem)
            report(f"replication_resnet50_{name}_budget_x{factor:g}", solve_s=solve_s, status=found.status,
                   objective=found.objective, bound=found.bound, gap=found.gap, period=found.period,
                   greedy_period=fallback.period, period_before=max(phases), budget=problem.budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    plans = bench_search(args.repeat)
    bench_replication(plans, args.time_limit)


if __name__ == "__main__":
    main()
