"""Programming variation on the digits CNN: accuracy against ``program_sigma``, with each compensation.

Trains the digits CNN on scikit-learn's digits, compiles it quantised (8-bit weights and inputs,
``isaac-like`` cells on 64x64 arrays), once with ``offset`` and once with ``differential`` weights, and
programs each onto ``--maps`` chips per ``program_sigma`` in
0..0.3, once per compensation (background §3.5): none, residual programming, column gain/offset (measured on
128 training images) and write-verify (``--pulses`` pulses, tolerance 0.5 levels). Measures the test
accuracy in device mode (mean and 95% interval over the chips) and the write pulses given. Writes
``variation.md`` and ``variation_<encoding>.png`` into ``--out`` and prints, as the last stdout line,
one JSON object with ``integer_accuracy`` and per encoding and compensation the mean accuracy at each
sigma.

Run: ``python examples/variation_study.py --out DIR`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from examples.fault_tolerance import chip_accuracy, log
from tests.models import digits_cnn
from xbcompiler.datasets import accuracy, digits, train_classifier
from xbcompiler.report import interval, plot_accuracy

TARGET = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64, "precision.weight_bits": 8,
                         "precision.input_bits": 8})
SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
ENCODINGS = ("offset", "differential")


def compensations(pulses: int) -> dict[str, dict]:
    return {"none": {}, "residual programming": {"compensation.residual_programming": True},
            "column gain": {"compensation.column_gain": True},
            f"write-verify ({pulses} pulses)": {"compensation.write_verify_pulses": pulses}}


def run(args) -> dict:
    torch.manual_seed(args.seed)
    data = digits(args.seed)
    model = digits_cnn(seed=args.seed)
    train_classifier(model, data, epochs=args.epochs, seed=args.seed)
    calibration = data.x_train[:128]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| encoding | compensation | program_sigma | accuracy (mean ± 95% CI) | chips | write pulses per chip |",
             "| --- | --- | --- | --- | --- | --- |"]
    result, clean = {}, {}
    for encoding in ENCODINGS:
        target = xb.load_target(TARGET[0], {**TARGET[1], "encoding.signed": encoding})
        net = xb.compile(model, data.x_train[:2], target, calibration=calibration).netlist
        clean[encoding] = accuracy(lambda x, net=net: xb.emulate(net, x, mode="integer"), data.x_test, data.y_test)
        log(f"{encoding}: integer accuracy {clean[encoding]:.2f} %")
        result[encoding], series = {}, {}
        for name, extra in compensations(args.pulses).items():
            result[encoding][name], series[name] = {}, []
            for sigma in args.sigmas:
                chips = [xb.program(net, seed=s, overrides={"device.program_sigma": sigma, **extra},
                                    calibration=calibration) for s in range(1 if sigma == 0 else args.maps)]
                acc = interval([chip_accuracy(chip, data) for chip in chips])
                pulses = sum(c.write_pulses for c in chips) / len(chips)
                lines.append(f"| {encoding} | {name} | {sigma:g} | {acc} % | {acc.n} | {pulses:.0f} |")
                result[encoding][name][str(sigma)] = round(acc.mean, 3)
                series[name].append((sigma, acc))
                log(f"{encoding}, {name}: sigma {sigma:.2f}  accuracy {acc} %  pulses/chip {pulses:.0f}")
        plot_accuracy(out / f"variation_{encoding}.png", series, "program_sigma (log-normal programming variation)",
                      f"Digits CNN, {encoding} weights, under programming variation", reference=clean[encoding])
    head = "Digits CNN, integer (variation-free) accuracy: " + ", ".join(f"{k} {v:.2f} %" for k, v in clean.items())
    (out / "variation.md").write_text("\n".join([head, "", *lines]) + "\n")
    return {"integer_accuracy": {k: round(v, 3) for k, v in clean.items()}, "accuracy": result, "maps": args.maps}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for variation.md and the plots")
    p.add_argument("--maps", type=int, default=10, help="chips (programming seeds) per sigma")
    p.add_argument("--pulses", type=int, default=5, help="write-verify pulses")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 chip, sigmas 0 and 0.3, short training")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.sigmas = SIGMAS
    if args.quick:
        args.maps, args.sigmas, args.epochs = 1, (0.0, 0.3), 3
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
