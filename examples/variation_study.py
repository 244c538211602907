"""Programming variation on the digits CNN: accuracy against ``program_sigma``, without and with write-verify.

Trains the digits CNN on scikit-learn's digits, compiles it quantised (8-bit weights and inputs,
``isaac-like`` cells on 64x64 arrays) and programs it onto ``--maps`` chips per ``program_sigma`` in
0..0.3, once without compensation and once with write-verify (``compensation.write_verify_pulses``,
tolerance 0.5 levels); measures the test accuracy in device mode (mean and 95% interval over the
chips) and the write pulses given. Writes ``variation.md`` into ``--out`` and prints, as the last
stdout line, one JSON object with ``integer_accuracy`` and per compensation the mean accuracy at each
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
from examples.fault_tolerance import chip_accuracy, interval, log
from tests.models import digits_cnn
from xbcompiler.datasets import accuracy, digits, train_classifier

TARGET = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64, "precision.weight_bits": 8,
                         "precision.input_bits": 8})
SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def run(args) -> dict:
    torch.manual_seed(args.seed)
    data = digits(args.seed)
    model = digits_cnn(seed=args.seed)
    train_classifier(model, data, epochs=args.epochs, seed=args.seed)
    compiled = xb.compile(model, data.x_train[:2], xb.load_target(*TARGET), calibration=data.x_train[:128])
    net = compiled.netlist
    clean = accuracy(lambda x: xb.emulate(net, x, mode="integer"), data.x_test, data.y_test)
    log(f"integer accuracy {clean:.2f} %")
    compensations = {"none": {}, f"write-verify ({args.pulses} pulses)": {"compensation.write_verify_pulses": args.pulses}}
    rows, result = [], {}
    for name, extra in compensations.items():
        result[name] = {}
        for sigma in args.sigmas:
            chips = [xb.program(net, seed=s, overrides={"device.program_sigma": sigma, **extra})
                     for s in range(1 if sigma == 0 else args.maps)]
            mean, half = interval([chip_accuracy(chip, data) for chip in chips])
            pulses = sum(c.write_pulses for c in chips) / len(chips)
            rows.append((name, sigma, mean, half, len(chips), pulses))
            result[name][str(sigma)] = round(mean, 3)
            log(f"{name}: sigma {sigma:.2f}  accuracy {mean:6.2f} ± {half:.2f} %  pulses/chip {pulses:.0f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"Digits CNN, integer (variation-free) accuracy {clean:.2f} %", "",
             "| compensation | program_sigma | accuracy (mean ± 95% CI) | chips | write pulses per chip |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {s:g} | {m:.2f} ± {h:.2f} % | {c} | {p:.0f} |" for n, s, m, h, c, p in rows]
    (out / "variation.md").write_text("\n".join(lines) + "\n")
    return {"integer_accuracy": round(clean, 3), "accuracy": result, "maps": args.maps}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for variation.md")
    p.add_argument("--maps", type=int, default=10, help="chips (programming seeds) per sigma")
    p.add_argument("--pulses", type=int, default=5, help="write-verify pulses")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 chips, sigmas 0 and 0.3, short training")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.sigmas = SIGMAS
    if args.quick:
        args.maps, args.sigmas, args.epochs = 2, (0.0, 0.3), 3
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
