"""``xbc polarize``: FORMS polarization of a classifier by ADMM, then the polarized netlist (docs/cli.md).

Loads the model from ``FILE.py:FACTORY`` and the data like ``xbc prune``, optionally trains it,
polarizes it with :func:`xbcompiler.prune.polarize.polarize` for the target (``encoding.signed =
"polarized"``, ``crossbar.fragment_rows``), compiles it quantised (calibrated on training images)
and writes ``netlist.json``, ``weights.npz`` and ``polarize.json`` into ``-o DIR``. The progress bar
goes to stderr; the per-layer table and the summary to stdout (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..diagnostics import CompileError
from ..prune.polarize import PolarizeSettings, polarize
from .args import add_set, command_parser, parse_overrides
from .models import load_model
from .prune import load_data

#: flag -> (attribute, lowest allowed, strictly above): the numeric flags' ranges.
RANGES = {"--admm-epochs": ("admm_epochs", 0, False), "--epochs": ("epochs", 0, False),
          "--train-epochs": ("train_epochs", 0, False), "--rho": ("rho", 0.0, True), "--lr": ("lr", 0.0, True),
          "--rho-growth": ("rho_growth", 1.0, False), "--calibrate": ("calibrate", 1, False)}


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "polarize", run,
                       "polarize a classifier's crossbar fragments (FORMS, ADMM) and write the polarized netlist")
    p.add_argument("model", metavar="FILE.py:FACTORY", help="Python file and the function in it returning the model")
    p.add_argument("--target", required=True, metavar="NAME|PATH",
                   help="built-in target name or .toml file; needs encoding.signed = polarized and "
                        "crossbar.fragment_rows (e.g. --set encoding.signed=polarized --set crossbar.fragment_rows=8)")
    p.add_argument("--data", default="digits", metavar="digits|FILE.npz",
                   help="scikit-learn's digits, or arrays x_train, y_train, x_test, y_test (default digits)")
    p.add_argument("--train-epochs", type=int, default=0, metavar="N",
                   help="train the model first for N epochs (default 0: it is trained already)")
    p.add_argument("--admm-epochs", type=int, default=10, metavar="N", help="ADMM epochs (default 10)")
    p.add_argument("--epochs", type=int, default=5, metavar="N",
                   help="masked fine-tuning epochs after the hard projection (default 5)")
    p.add_argument("--rho", type=float, default=0.5, help="initial ADMM penalty (default 0.5)")
    p.add_argument("--rho-growth", type=float, default=1.5, help="rho factor per Z, U update (default 1.5)")
    p.add_argument("--lr", type=float, default=0.01, help="initial learning rate, cosine-annealed (default 0.01)")
    p.add_argument("--distill", type=float, default=0.5, metavar="W",
                   help="weight of distillation from the unpolarized model in [0, 1] (default 0.5)")
    p.add_argument("--calibrate", type=int, default=256, metavar="N",
                   help="training images that calibrate the quantised compile (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of data split and training (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the polarized netlist")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set(p)
    return p


def check_ranges(args: argparse.Namespace) -> None:
    """XB003 for a numeric flag outside its range."""
    for flag, (attr, lo, strict) in RANGES.items():
        value = getattr(args, attr)
        if value < lo or (strict and value == lo):
            raise CompileError("XB003", f"bad {flag} {value}: expected a value {'>' if strict else '>='} {lo}")
    if not 0.0 <= args.distill <= 1.0:
        raise CompileError("XB003", f"bad --distill {args.distill}: expected a value in [0, 1]")


def run(args: argparse.Namespace) -> int:
    import xbcompiler as xb

    from ..datasets import Split, accuracy, train_classifier
    from ..prune.flow import holdout

    check_ranges(args)
    target = xb.load_target(args.target, parse_overrides(args.overrides) or None)
    if target.encoding.signed != "polarized":
        raise CompileError("XB250", f"target '{target.name}' has encoding.signed = '{target.encoding.signed}'",
                           hint="add --set encoding.signed=polarized --set crossbar.fragment_rows=N")
    model, _ = load_model(args.model)
    x_train, y_train, x_test, y_test = load_data(args.data, args.seed)
    train, val = holdout(x_train, y_train, 0.2, args.seed)
    if args.train_epochs:
        train_classifier(model, Split(*train, x_test, y_test), epochs=args.train_epochs, seed=args.seed)
    model.eval()
    float_accuracy = accuracy(model, x_test, y_test)
    settings = PolarizeSettings(admm_epochs=args.admm_epochs, finetune_epochs=args.epochs, rho=args.rho,
                                rho_growth=args.rho_growth, lr=args.lr, distill=args.distill, seed=args.seed,
                                progress=not args.quiet)
    _, report = polarize(model, target, train, val=val, settings=settings)
    compiled = xb.compile(model, x_train[:1], target, calibration=x_train[:args.calibrate])
    out = Path(args.output)
    compiled.save(out)
    netlist = xb.load_netlist(out)
    polarized_accuracy = accuracy(lambda x: xb.emulate(netlist, x), x_test, y_test)
    check = xb.verify(netlist, model, x_test[:4])
    summary = {
        "fragment_rows": report.fragment_rows, "fragments": report.fragments,
        "mixed_before": report.violations_before, "mixed_after": report.violations_after,
        "float_accuracy": round(float_accuracy, 3), "polarized_float_accuracy": round(accuracy(model, x_test, y_test), 3),
        "integer_accuracy": round(polarized_accuracy, 3), "verify_ok": check.ok,
        "validation_accuracy": {k: round(v, 3) for k, v in report.accuracy.items()},
        "settings": dataclasses.asdict(settings), "layers": [dataclasses.asdict(r) for r in report.layers],
        "history": report.history,
    }
    (out / "polarize.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, sort_keys=True, default=str))
    else:
        print(report.table())
        print(f"test accuracy {summary['float_accuracy']:.2f} % -> {summary['polarized_float_accuracy']:.2f} % "
              f"(polarized, float), {summary['integer_accuracy']:.2f} % (emulator, integer); wrote {out}")
    sys.stdout.flush()
    return 0 if check.ok else 1
