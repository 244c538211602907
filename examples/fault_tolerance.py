"""Stuck-at faults on a pruned digits CNN: plain ``differential`` against ``differential-zero-high`` (issue 12).

Trains the digits CNN on scikit-learn's digits, prunes it with the pruning flow (column groups of its
semi-folded plan, every pruned layer at ``--sparsity``), and compiles it quantised (8-bit weights and
inputs, ``isaac-like`` cells on 64x64 arrays, no column flipping) with the *default* pipeline, so the
pruned weights stay on the cells as zeros (the setting of background §4.2: recombining the pruned columns
away would leave no zeros to protect). Each encoding is programmed onto ``--maps`` chips per SA1 rate
(SA0 = SA1 / 5.2, seeds 0..maps-1) and its test accuracy measured in device mode: mean and 95%
interval (Student t) over the maps.

Writes ``faults.md`` (the table) and ``faults.png`` (accuracy against the SA1 rate) into ``--out``;
prints progress on stderr and, as the last stdout line, one JSON object with ``float_accuracy``,
``sparsity`` and ``tolerated_sa1_rate``: per encoding, the highest rate of the grid whose mean accuracy
stays within 1 point of that encoding's fault-free integer accuracy.

Run: ``python examples/fault_tolerance.py --out DIR`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from tests.models import digits_cnn
from xbcompiler.datasets import Split, accuracy, digits, train_classifier
from xbcompiler.prune.flow import PruneSettings, holdout, prune_classifier
from xbcompiler.report import interval, plot_accuracy

TARGET = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64, "precision.weight_bits": 8,
                         "precision.input_bits": 8, "encoding.flip_columns": False})
ENCODINGS = ("differential", "differential-zero-high")
RATES = (0.0, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
SA0_PER_SA1 = 1 / 5.2
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def chip_accuracy(chip, data) -> float:
    """Test accuracy (%) of a programmed chip in device mode."""
    return accuracy(lambda x: xb.emulate(chip, x), data.x_test, data.y_test)


def sparsity_of(model: torch.nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))


def run(args) -> dict:
    torch.manual_seed(args.seed)
    target = xb.load_target(*TARGET)
    data = digits(args.seed)
    train, val = holdout(data.x_train, data.y_train, 0.2, args.seed)
    model = digits_cnn(seed=args.seed)
    train_classifier(model, Split(*train, data.x_test, data.y_test), epochs=args.epochs, seed=args.seed)
    float_accuracy = accuracy(model, data.x_test, data.y_test)
    log(f"trained: float test accuracy {float_accuracy:.2f} %")
    settings = PruneSettings(sparsity=args.sparsity, epochs=args.finetune_epochs, relax_epochs=args.relax_epochs,
                             seed=args.seed, progress=False)
    prune_classifier(model, target, train, val, settings, log=log)
    sparsity = sparsity_of(model)
    pruned_accuracy = accuracy(model, data.x_test, data.y_test)
    log(f"pruned to {100 * sparsity:.1f} % zero weights: float test accuracy {pruned_accuracy:.2f} %")
    rows, tolerated, clean = [], {}, {}
    for encoding in ENCODINGS:
        compiled = xb.compile(model, data.x_train[:2], target, "default", calibration=data.x_train[:128],
                              overrides={"encoding.signed": encoding})
        net = compiled.netlist
        clean[encoding] = accuracy(lambda x, net=net: xb.emulate(net, x, mode="integer"), data.x_test, data.y_test)
        for rate in args.rates:
            overrides = {"device.sa1_rate": rate, "device.sa0_rate": rate * SA0_PER_SA1}
            maps = 1 if rate == 0 else args.maps
            accs = [chip_accuracy(xb.program(net, seed=s, overrides=overrides), data) for s in range(maps)]
            result = interval(accs)
            rows.append((encoding, rate, result))
            log(f"{encoding}: SA1 {100 * rate:g} %  accuracy {result} % over {maps} map(s)")
        tolerated[encoding] = tolerated_rate(rows, encoding, clean[encoding])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "faults.md", rows, clean, float_accuracy, pruned_accuracy, sparsity)
    write_plot(out / "faults.png", rows, clean)
    ratio = tolerated[ENCODINGS[1]] / tolerated[ENCODINGS[0]] if tolerated[ENCODINGS[0]] else None
    return {"float_accuracy": round(float_accuracy, 3), "pruned_float_accuracy": round(pruned_accuracy, 3),
            "sparsity": round(sparsity, 4), "integer_accuracy": {k: round(v, 3) for k, v in clean.items()},
            "tolerated_sa1_rate": tolerated, "tolerance_ratio": ratio, "maps": args.maps,
            "seconds": round(time.perf_counter() - START, 1)}


def tolerated_rate(rows, encoding: str, clean: float) -> float:
    """The highest rate of the grid up to which every mean accuracy stays within 1 point of ``clean``."""
    best = 0.0
    for _, rate, result in sorted((r for r in rows if r[0] == encoding), key=lambda r: r[1]):
        if result.mean < clean - 1.0:
            break
        best = rate
    return best


def write_table(path: Path, rows, clean, float_accuracy, pruned_accuracy, sparsity) -> None:
    lines = [f"Digits CNN, float test accuracy {float_accuracy:.2f} %, pruned to {100 * sparsity:.1f} % zero weights "
             f"({pruned_accuracy:.2f} %); integer (fault-free) accuracy: "
             + ", ".join(f"{k} {v:.2f} %" for k, v in clean.items()), "",
             "| encoding | SA1 rate | SA0 rate | accuracy (mean ± 95% CI) | maps |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {enc} | {100 * rate:g} % | {100 * rate * SA0_PER_SA1:.3g} % | {result} % | {result.n} |"
              for enc, rate, result in rows]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, rows, clean) -> None:
    series = {enc: [(100 * rate, result) for e, rate, result in rows if e == enc] for enc in ENCODINGS}
    plot_accuracy(path, series, "SA1 rate (%), SA0 = SA1 / 5.2", "Pruned digits CNN under stuck-at faults",
                  reference=max(clean.values()), log_x=True)


def study_arguments(doc: str, out_help: str, quick_help: str, argv=None) -> argparse.Namespace:
    """The command line of the pruned-digits fault studies (this one and ``remap_faults.py``), parsed;
    sets torch's threads."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--sparsity", type=float, default=0.7, help="group sparsity of every pruned layer")
    p.add_argument("--maps", type=int, default=10, help="fault maps (programming seeds) per rate")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--relax-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.maps, args.epochs, args.finetune_epochs, args.relax_epochs = 2, 3, 1, 0
    return args


def main(argv=None) -> None:
    args = study_arguments(__doc__, "directory for faults.md and faults.png",
                           "a smoke run: 2 maps, rates 0 and 20 %, short training", argv)
    args.rates = (0.0, 0.2) if args.quick else RATES
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
