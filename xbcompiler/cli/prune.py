"""``xbc prune``: crossbar-aware pruning of a classifier, then the pruned netlist (docs/cli.md).

Loads the model from ``FILE.py:FACTORY``, the data (``digits[:HxW[xC]]`` or an ``.npz`` with ``x_train``,
``y_train``, ``x_test``, ``y_test``), optionally trains it, prunes it with
:func:`xbcompiler.prune.flow.prune_classifier` (groups from the target's mapping plan), compiles it
with the matching ``recombine-pruned-columns`` / ``compact-pruned-rows`` pipeline (``--grain pattern``:
:func:`xbcompiler.prune.pattern.prune_patterns` and ``fully-folded-pattern``), verifies the netlist in ideal
mode and a calibrated quantised compile of it bit for bit in integer mode, and writes
``netlist.json``, ``weights.npz``, ``prune.json`` and ``pareto.png`` into ``-o DIR``. Progress bars
and search lines go to stderr; the per-layer table and the summary to stdout (``--json``: one JSON
object).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zipfile
from pathlib import Path

from ..diagnostics import CompileError
from ..prune.flow import METHODS, PRUNED_PIPELINES, PruneSettings, accuracy_of, holdout, prune_classifier
from ..prune.pattern import PATTERN_PIPELINE, PatternSettings, prune_patterns
from ..prune.plan_groups import GRAINS
from ..report.plots import pyplot
from .args import add_set, command_parser, parse_overrides
from .models import load_model

#: The flags' defaults where they mirror a :class:`PruneSettings` field (one place for each value).
DEFAULTS = PruneSettings()


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "prune", run,
                       "prune a classifier for the target's crossbars and write the pruned netlist")
    p.add_argument("model", metavar="FILE.py:FACTORY", help="Python file and the function in it returning the model")
    p.add_argument("--target", required=True, metavar="NAME|PATH", help="built-in target name or .toml file")
    p.add_argument("--data", default="digits", metavar="digits[:HxW[xC]]|FILE.npz",
                   help="scikit-learn's digits (resized to HxW, C channels, e.g. digits:32x32x3), or arrays "
                        "x_train, y_train, x_test, y_test (default digits: 8x8x1)")
    p.add_argument("--train-epochs", type=int, default=0, metavar="N",
                   help="train the model first for N epochs (default 0: it is trained already)")
    p.add_argument("--pipeline", default="semi-folded", choices=sorted(PRUNED_PIPELINES),
                   help="mapping whose plan defines the groups (default semi-folded)")
    p.add_argument("--grain", default="column", choices=[*GRAINS, "pattern"],
                   help="pruning groups (default column; kernel/tile need --pipeline fully-folded); pattern: "
                        "PCNN kernel patterns (--pipeline fully-folded), compiled with fully-folded-pattern")
    p.add_argument("--nonzeros", default="4,3,2", metavar="N[,N...]",
                   help="--grain pattern: weights kept per kernel, tried in order; the fewest within --max-drop "
                        "wins (default 4,3,2)")
    p.add_argument("--sparsity", type=float, metavar="R",
                   help="group sparsity of every pruned layer; default: the --search chooses")
    p.add_argument("--search", default="knapsack", choices=["knapsack", "greedy"],
                   help="knapsack: per-layer sensitivity, CP-SAT allocation of the --max-drop budget, back-off "
                        "(default); greedy: the paper's layer-by-layer search")
    p.add_argument("--sensitivity-batches", type=int, default=DEFAULTS.sensitivity_batches, metavar="N",
                   help="knapsack: fine-tuning mini-batches after each sensitivity projection (default %(default)s)")
    p.add_argument("--recovery", type=float, default=DEFAULTS.recovery, metavar="F",
                   help="knapsack: fraction of the summed per-layer drops the joint run is taken to recover; the "
                        "first allocation spends --max-drop / (1 - F) of them (default %(default)s)")
    p.add_argument("--backoff-tries", type=int, default=DEFAULTS.backoff_tries, metavar="N",
                   help="knapsack: joint reruns with a halved budget while the loss exceeds --max-drop "
                        "(default %(default)s)")
    p.add_argument("--grow-factor", type=float, default=DEFAULTS.grow_factor, metavar="F",
                   help="knapsack: when the first try leaves at least half of --max-drop unused, one more joint run "
                        "with the budget times F, kept only if judged no worse than the first (1: never; "
                        "default %(default)s)")
    p.add_argument("--judge-fraction", type=float, default=DEFAULTS.judge_fraction, metavar="F",
                   help="knapsack: share of the held-out images kept apart to judge the budget; the sensitivity "
                        "and the best-epoch choice use the rest (default %(default)s; 0: one set for everything)")
    p.add_argument("--method", default="lgd", choices=METHODS,
                   help="joint pruning run: lgd (LGD/RPP, default), zerorize (zerorize-recover), admm (ADMM, exact "
                        "group projection), group-l1 (reweighted group-L1 block pruning; blocks = --grain crossbar, "
                        "tile or column) or gap (grow-and-prune); the last three spend --relax-epochs before the hard "
                        "projection")
    p.add_argument("--from-scratch", action="store_true",
                   help="gap only: re-initialise the pruned layers before the joint run (no trained model needed)")
    p.add_argument("--no-rpp", dest="rpp", action="store_false", help="deterministic projection (IHT ablation)")
    p.add_argument("--no-tie-depthwise", dest="tie_depthwise", action="store_false",
                   help="search and prune each depthwise layer on its own (default: column grain, lgd and zerorize "
                        "prune a depthwise layer fed by one pruned layer with it, channel for channel)")
    p.add_argument("--no-fold-dead-channels", dest="fold_dead_channels", action="store_false",
                   help="leave the channels pruning emptied in their 1x1 consumers (default: fold them into the "
                        "consumers' biases and pack them out of their crossbars where that frees crossbars)")
    p.add_argument("--relax-epochs", type=int, default=DEFAULTS.relax_epochs, metavar="N",
                   help="epochs of relaxed projection in the joint run, before --epochs (default %(default)s; 0: project once)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, metavar="N",
                   help="joint fine-tuning epochs (default %(default)s)")
    p.add_argument("--step-epochs", type=int, default=DEFAULTS.step_epochs, metavar="N",
                   help="search: epochs per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr,
                   help="initial learning rate, cosine-annealed (default %(default)s)")
    p.add_argument("--distill", type=float, default=DEFAULTS.distill, metavar="W",
                   help="weight of distillation from the dense model in [0, 1] (default %(default)s; 0: labels only)")
    p.add_argument("--step", type=float, default=DEFAULTS.step, help="search: ratio step (default %(default)s)")
    p.add_argument("--max-drop", type=float, default=DEFAULTS.max_drop,
                   help="search: accuracy budget in points, judged after the joint run by knapsack "
                        "(default %(default)s)")
    p.add_argument("--max-ratio", type=float, default=DEFAULTS.max_ratio,
                   help="search: per-layer ratio limit (default %(default)s)")
    p.add_argument("--crossbar-threshold", type=int, default=DEFAULTS.crossbar_threshold,
                   help="search: crossbar threshold (default %(default)s)")
    p.add_argument("--reorder", action="store_true", help="reorder input channels before pruning")
    p.add_argument("--solver", default="ortools", choices=["heuristic", "ortools"], help="reorder solver")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seed of data split, training and solvers (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the pruned netlist")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set(p)
    return p


def load_data(spec: str, seed: int):
    """``(x_train, y_train, x_test, y_test)`` tensors."""
    import numpy as np
    import torch

    if spec == "digits" or spec.startswith("digits:"):
        from ..datasets import digits_from_spec

        d = digits_from_spec(spec, seed)
        return d.x_train, d.y_train, d.x_test, d.y_test
    path = Path(spec)
    if not path.is_file():
        raise CompileError("XB001", f"data file {path} not found", hint="use --data digits[:HxWxC] or an .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise CompileError("XB003", f"{path} lacks arrays {missing}")
            x_tr, y_tr, x_te, y_te = (npz[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CompileError("XB003", f"cannot read {path} as an .npz of arrays: {exc}") from None
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if len(x) != len(y) or not len(x) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise CompileError("XB003", f"{path}: x_{split} and y_{split} must be as many samples (at least one) "
                                        f"and y_{split} one integer label each (got {x.shape}, {y.shape} {y.dtype})")
    return (torch.from_numpy(x_tr.astype(np.float32)), torch.from_numpy(y_tr.astype(np.int64)),
            torch.from_numpy(x_te.astype(np.float32)), torch.from_numpy(y_te.astype(np.int64)))


INF = float("inf")
#: flag -> (attribute, lowest, highest, lowest allowed, highest allowed): the numeric flags' ranges.
RANGES = {
    "--sparsity": ("sparsity", 0.0, 1.0, True, False), "--max-ratio": ("max_ratio", 0.0, 1.0, False, True),
    "--step": ("step", 0.0, 1.0, False, True), "--max-drop": ("max_drop", 0.0, 100.0, True, True),
    "--distill": ("distill", 0.0, 1.0, True, True), "--lr": ("lr", 0.0, INF, False, False),
    "--epochs": ("epochs", 0, INF, True, False), "--train-epochs": ("train_epochs", 0, INF, True, False),
    "--step-epochs": ("step_epochs", 0, INF, True, False), "--relax-epochs": ("relax_epochs", 0, INF, True, False),
    "--crossbar-threshold": ("crossbar_threshold", 0, INF, True, False),
    "--sensitivity-batches": ("sensitivity_batches", 0, INF, True, False),
    "--backoff-tries": ("backoff_tries", 0, INF, True, False), "--recovery": ("recovery", 0.0, 1.0, True, False),
    "--judge-fraction": ("judge_fraction", 0.0, 1.0, True, False),
    "--grow-factor": ("grow_factor", 1.0, INF, True, False),
}


def knapsack_summary(result) -> dict | None:
    """``prune.json``'s ``knapsack``: references, budget, whether it was met, the sensitivity of every
    layer, every try (kind, allocation with solver status, objective, bound and gap; accuracy; loss) and the
    index of the try that stands."""
    if result is None:
        return None
    tries = [{**dataclasses.asdict(a), "gap": a.allocation.gap} for a in result.attempts]
    return {"baseline_accuracy": result.baseline_accuracy, "sensitivity_reference": result.sensitivity_reference,
            "judge_reference": result.judge_reference, "max_drop": result.max_drop,
            "budget_met": result.budget_met, "layers": [dataclasses.asdict(r) for r in result.layers],
            "tries": tries, "standing": result.standing}


def parse_nonzeros(spec: str) -> tuple[int, ...]:
    """``--nonzeros 4,3,2`` as ``(4, 3, 2)``; XB003 unless every entry is a positive integer."""
    try:
        values = tuple(int(v) for v in spec.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise CompileError("XB003", f"bad --nonzeros {spec!r}: expected positive integers separated by commas, "
                                    "e.g. 4,3,2")
    return values


def check_ranges(args: argparse.Namespace) -> None:
    """XB003 for a numeric flag outside its range (``--sparsity 1`` would keep nothing, ...)."""
    for flag, (attr, lo, hi, lo_ok, hi_ok) in RANGES.items():
        value = getattr(args, attr)
        if value is None:
            continue
        above = lo <= value if lo_ok else lo < value
        below = value <= hi if hi_ok else value < hi
        if not (above and below):
            bounds = f"{'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"
            raise CompileError("XB003", f"bad {flag} {value}: expected a value in {bounds}")


def run(args: argparse.Namespace) -> int:
    import xbcompiler as xb

    from ..datasets import Split, accuracy, train_classifier
    from ..prune.report import run_series, write_pareto

    check_ranges(args)
    if args.from_scratch and args.method != "gap":
        raise CompileError("XB003", f"--from-scratch needs --method gap (got --method {args.method})",
                           hint="grow-and-prune is the method that trains a sparse model from scratch")
    pyplot()  # before any training: the run ends with pareto.png
    pattern = args.grain == "pattern"
    if args.pipeline not in GRAINS.get(args.grain, ("fully-folded",)):
        allowed = GRAINS.get(args.grain, ("fully-folded",))
        raise CompileError("XB003", f"--grain {args.grain} needs --pipeline {' or '.join(allowed)}",
                           hint="column and crossbar grains are semi-folded groups; kernel, tile and pattern "
                                "fully-folded")
    if pattern and args.sparsity is not None:
        raise CompileError("XB003", "--sparsity does not apply to --grain pattern (it keeps --nonzeros per kernel)",
                           hint="give the weights per kernel to try with --nonzeros, e.g. --nonzeros 4,3")
    nonzeros = parse_nonzeros(args.nonzeros) if pattern else ()
    model, _ = load_model(args.model)
    target = xb.load_target(args.target, parse_overrides(args.overrides) or None)
    x_train, y_train, x_test, y_test = load_data(args.data, args.seed)
    train, val = holdout(x_train, y_train, 0.2, args.seed)
    if args.train_epochs:
        train_classifier(model, Split(*train, x_test, y_test), epochs=args.train_epochs, seed=args.seed)
    model.eval()
    example = x_train[:1]
    dense = xb.compile(model, example, target, args.pipeline)
    settings: PruneSettings | PatternSettings = PruneSettings(pipeline=args.pipeline, grain=args.grain, sparsity=args.sparsity, search=args.search,
                             sensitivity_batches=args.sensitivity_batches, backoff_tries=args.backoff_tries,
                             grow_factor=args.grow_factor,
                             recovery=args.recovery, judge_fraction=args.judge_fraction,
                             method=args.method, from_scratch=args.from_scratch,
                             rpp=args.rpp, tie_depthwise=args.tie_depthwise, relax_epochs=args.relax_epochs,
                             fold_dead_channels=args.fold_dead_channels, epochs=args.epochs,
                             step_epochs=args.step_epochs, lr=args.lr, distill=args.distill, step=args.step,
                             max_drop=args.max_drop, max_ratio=args.max_ratio, crossbar_threshold=args.crossbar_threshold,
                             reorder=args.reorder, reorder_solver=args.solver, seed=args.seed,
                             progress=not args.quiet)
    float_accuracy = accuracy_of(model, x_test, y_test)
    if pattern:
        settings = PatternSettings(nonzeros=nonzeros, max_drop=args.max_drop, admm_epochs=args.relax_epochs,
                                   finetune_epochs=args.epochs, lr=args.lr, distill=args.distill, seed=args.seed,
                                   progress=not args.quiet)
        outcome = prune_patterns(model, target, train, val, settings,
                                 log=None if args.quiet else lambda line: print(line, file=sys.stderr))
    else:
        outcome = prune_classifier(model, target, train, val, settings)
    pipeline = PATTERN_PIPELINE if pattern else PRUNED_PIPELINES[args.pipeline]
    pruned = xb.compile(model, example, target, pipeline)
    out = Path(args.output)
    pruned.save(out)
    netlist = xb.load_netlist(out)
    pruned_accuracy = accuracy(lambda x: xb.emulate(netlist, x), x_test, y_test)
    check = xb.verify(netlist, model, x_test[:4])
    quantised = xb.compile(model, example, target, pipeline, calibration=x_train[:64])
    integer = xb.verify(quantised, model, x_test[:4])  # bit-exact against the integer reference
    write_pareto(out / "pareto.png", run_series(outcome), title=f"{args.model}: {args.grain}-grain pruning "
                 "(validation accuracy)", front="all")
    summary = {
        "dense_crossbars": dense.summary["crossbars"], "pruned_crossbars": netlist.summary["crossbars"],
        "saving_percent": round(100.0 * (1 - netlist.summary["crossbars"] / dense.summary["crossbars"]), 2),
        "float_accuracy": round(float_accuracy, 3), "pruned_accuracy": round(pruned_accuracy, 3),
        "verify_ok": check.ok, "verify_integer_exact": integer.exact,
        "integer_float_rel": integer.float_rel, "settings": dataclasses.asdict(settings),
        "layers": [{**dataclasses.asdict(r), "sparsity": round(r.sparsity, 4)} for r in outcome.layers],
        "search": None if outcome.search is None else [dataclasses.asdict(r) for r in outcome.search.layers],
        "search_visited": None if outcome.search is None else [dataclasses.asdict(p) for p in outcome.search.visited],
        "knapsack": knapsack_summary(outcome.knapsack), "reorder": outcome.reorder, "history": outcome.history,
        "dead_channels": [dataclasses.asdict(d) for d in outcome.dead_channels],
    }
    (out / "prune.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "reorder")}, sort_keys=True,
                         default=str))
    else:
        print(outcome.table())
        print(f"compute crossbars {summary['dense_crossbars']} -> {summary['pruned_crossbars']} "
              f"({summary['saving_percent']:.1f} % fewer); accuracy {summary['float_accuracy']:.2f} -> "
              f"{summary['pruned_accuracy']:.2f} % (emulator); wrote {out}")
    sys.stdout.flush()
    return 0 if check.ok and integer.exact else 1
