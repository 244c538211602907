"""The budgeted default mapping beside the named pipelines: crossbars, chips and pipeline period, and solve time.

For ResNet-18 and ResNet-50 (3x224x224) and a Conv1d keyword spotter (40 MFCC x 101 frames) on a target
(``isaac-like`` unless ``--target``): each named pipeline's crossbars, chips and period from the cost
model (the mapping search per layer; chips as ``place-tiles`` packs them, ``ceil(crossbars / per chip)``),
beside the default pipeline compiled for ``hierarchy.chips`` chips (``--chips``): its crossbars (replicas
included), chips and period from the netlist's summary, and the CP-SAT solve time, status and gap.
Goal (issue: a default mapping that fits the chip): the ResNet-50 solve under 10 s, gap stated.
Run: ``python bench/bench_budget.py`` (``--quick``: the keyword spotter only).
"""

from __future__ import annotations

import argparse
import time
import warnings
from math import ceil

import torch
from common import report
from torch import nn

import xbcompiler as xb
from tests.models import IMAGENET_MODELS
from xbcompiler.mapping.plan import STRATEGIES, ArraySpec
from xbcompiler.report.compare import compare, model_shapes


class KeywordSpotter(nn.Module):
    """A Conv1d keyword spotter: four 3-tap convolutions over 101 frames of 40 MFCCs, 12 keywords."""

    def __init__(self, mfcc: int = 40, width: int = 64, keywords: int = 12):
        super().__init__()
        layers, c = [], mfcc
        for _ in range(4):
            layers += [nn.Conv1d(c, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, keywords)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=-1))


def models(quick: bool) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    found = {"kws_conv1d": (KeywordSpotter().eval(), torch.randn(1, 40, 101))}
    if not quick:
        for name in ("resnet18_imagenet", "resnet50_imagenet"):
            found[name] = (IMAGENET_MODELS[name].factory(), torch.randn(1, 3, 224, 224))
    return found


def bench(name: str, model: nn.Module, x: torch.Tensor, target_name: str, chips: int, time_limit_s: float) -> None:
    target = xb.load_target(target_name, {"hierarchy.chips": chips})
    comparison = compare(model_shapes(model, (x,)), ArraySpec.of(target))
    tag = f"{name}_{target_name.replace('-', '_')}_chips{chips}"
    for strategy in STRATEGIES:
        crossbars = comparison.total(strategy, "crossbars")
        report(f"budget_{tag}_{strategy.replace('-', '_')}", crossbars=crossbars,
               chips=ceil(crossbars / target.crossbars_per_chip), period=comparison.period(strategy))
    pipeline = ("fold-batchnorm,lower-im2col{check=false},lower-to-xbar,"
                f"map-budgeted{{time-limit-s={time_limit_s}}},place-tiles{{method=min-traffic}}")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model, (x,), target, pipeline=pipeline, frontend="fx")
    compile_s = time.perf_counter() - start
    summary, solved = compiled.summary, compiled.report["map-budgeted"]
    strategies = sorted({layer["strategy"] for layer in solved["layers"].values()})
    report(f"budget_{tag}_default", crossbars=summary["crossbars_with_replicas"], chips=summary["chips"],
           period=summary["pipeline_period"], budget_chips=chips, fits=solved["fits"], method=solved["method"],
           status=solved["status"], gap=solved["gap"], solve_s=solved["wall_s"], goal_s=10.0,
           greedy_period=solved["greedy_period"], replicated_layers=sum(v["replicas"] > 1 for v in solved["layers"].values()),
           strategies="+".join(strategies), compile_s=compile_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="isaac-like")
    parser.add_argument("--chips", type=int, nargs="+", default=[1])
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="the keyword spotter only")
    args = parser.parse_args()
    for name, (model, x) in models(args.quick).items():
        for chips in args.chips:
            bench(name, model, x, args.target, chips, args.time_limit)


if __name__ == "__main__":
    main()
