"""Fault-aware remapping on a pruned digits CNN: device-mode accuracy at a fixed fault map without and with
``remap-faults`` (issue 12, item 5).

The model and compile are those of ``examples/fault_tolerance.py`` (its helpers): the digits CNN trained
on scikit-learn's digits, pruned with the pruning flow, compiled quantised (8-bit weights and inputs,
``isaac-like`` cells on 64x64 arrays, no column flipping) with the default pipeline. For each encoding,
SA1 rate (SA0 = SA1 / 5.2) and map seed, one chip's faults are sampled over every physical cell and
written as a fault map (``xb.save_fault_map``); the model is compiled once more with
``remap-faults{fault-map=...}`` appended, and both netlists are programmed with that same map
(``device.fault_map``) and their test accuracy measured in device mode: mean and 95% interval
(Student t) over the maps, with the pass's error cost before and after.

Writes ``remap_faults.md`` (the table) into ``--out``; prints progress on stderr and, as the last stdout
line, one JSON object: per encoding and rate, the mean accuracy without and with the pass, and the
summed costs.

Run: ``python examples/remap_faults.py --out DIR`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fault_tolerance as ft  # the fault-tolerance example's helpers

import xbcompiler as xb
from tests.models import digits_cnn
from xbcompiler.datasets import Split, accuracy, digits, train_classifier
from xbcompiler.prune.flow import PruneSettings, holdout, prune_classifier
from xbcompiler.report import interval

RATES = (0.002, 0.005, 0.01, 0.02, 0.05)


def pruned_model(args):
    """The trained and pruned digits CNN of ``examples/fault_tolerance.py`` (same seeds and settings)."""
    torch.manual_seed(args.seed)
    target = xb.load_target(*ft.TARGET)
    data = digits(args.seed)
    train, val = holdout(data.x_train, data.y_train, 0.2, args.seed)
    model = digits_cnn(seed=args.seed)
    train_classifier(model, Split(*train, data.x_test, data.y_test), epochs=args.epochs, seed=args.seed)
    float_accuracy = accuracy(model, data.x_test, data.y_test)
    settings = PruneSettings(sparsity=args.sparsity, epochs=args.finetune_epochs, relax_epochs=args.relax_epochs,
                             seed=args.seed, progress=False)
    prune_classifier(model, target, train, val, settings, log=ft.log)
    ft.log(f"trained and pruned: float accuracy {float_accuracy:.2f} %, {100 * ft.sparsity_of(model):.1f} % zeros")
    return model, data, target, float_accuracy


def run(args) -> dict:
    model, data, target, float_accuracy = pruned_model(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, clean = [], {}
    for encoding in args.encodings:
        def build(pipeline: str, encoding=encoding):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", xb.XBWarning)
                return xb.compile(model, data.x_train[:2], target, pipeline, calibration=data.x_train[:128],
                                  overrides={"encoding.signed": encoding})

        plain = build("default")
        net = plain.netlist
        clean[encoding] = accuracy(lambda x, net=net: xb.emulate(net, x, mode="integer"), data.x_test, data.y_test)
        for rate in args.rates:
            rates = {"device.sa1_rate": rate, "device.sa0_rate": rate * ft.SA0_PER_SA1}
            without, with_pass, before, after, seconds = [], [], 0, 0, 0.0
            for seed in range(args.maps):
                path = xb.save_fault_map(xb.program(net, seed=seed, overrides=rates), out / f"map-{encoding}-{seed}.npz")
                start = time.perf_counter()
                remapped = build(f"{plain.pipeline},remap-faults{{fault-map={json.dumps(str(path))}}}")
                seconds += time.perf_counter() - start
                total = remapped.report["remap-faults"]["total"]
                before, after = before + total["cost_before"], after + total["cost_after"]
                fixed = {"device.fault_map": str(path)}
                without.append(ft.chip_accuracy(xb.program(net, overrides=fixed), data))
                with_pass.append(ft.chip_accuracy(xb.program(remapped.netlist, overrides=fixed), data))
                path.unlink()
            result = (encoding, rate, interval(without), interval(with_pass), before, after, seconds / args.maps)
            rows.append(result)
            ft.log(f"{encoding}: SA1 {100 * rate:g} %  without {result[2]} %  with {result[3]} %  "
                   f"cost {before} -> {after}")
    write_table(out / "remap_faults.md", rows, clean, float_accuracy, args.maps)
    return {"float_accuracy": round(float_accuracy, 3), "integer_accuracy": {k: round(v, 3) for k, v in clean.items()},
            "maps": args.maps,
            "accuracy": {enc: {str(rate): {"without": round(a.mean, 3), "with": round(b.mean, 3)}
                               for e, rate, a, b, *_ in rows if e == enc} for enc in args.encodings},
            "cost": {enc: {str(rate): {"before": c0, "after": c1} for e, rate, _, _, c0, c1, _ in rows if e == enc}
                     for enc in args.encodings},
            "seconds": round(time.perf_counter() - ft.START, 1)}


def write_table(path: Path, rows, clean, float_accuracy: float, maps: int) -> None:
    lines = [f"Pruned digits CNN (float accuracy {float_accuracy:.2f} %), device-mode test accuracy at one fault map "
             f"per seed ({maps} maps per rate), without and with `remap-faults`; integer (fault-free) accuracy: "
             + ", ".join(f"{k} {v:.2f} %" for k, v in clean.items()), "",
             "| encoding | SA1 rate | SA0 rate | without the pass | with the pass | error cost before | after "
             + "| compile with the pass (s) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {enc} | {100 * rate:g} % | {100 * rate * ft.SA0_PER_SA1:.3g} % | {a} % | {b} % | {c0:.3g} | "
              f"{c1:.3g} | {s:.1f} |" for enc, rate, a, b, c0, c1, s in rows]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    args = ft.study_arguments(__doc__, "directory for remap_faults.md",
                              "a smoke run: 2 maps at 5 %% SA1, one encoding, short training", argv)
    args.rates, args.encodings = ((0.05,), ft.ENCODINGS[1:]) if args.quick else (RATES, ft.ENCODINGS)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
