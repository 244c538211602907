"""Pruning schemes at an equal accuracy budget: compute crossbars and accuracy of each (issue 16).

Trains the model once (or loads ``--weights``), then for every scheme starts from a copy of the same
trained weights, prunes it with the same accuracy budget ``--max-drop`` (points of validation accuracy,
judged by the knapsack search after the joint run; :func:`~xbcompiler.prune.flow.prune_classifier`),
compiles it with the scheme's pruned pipeline, checks a quantised compile in integer mode
(``xb.verify``), measures test accuracy through the emulator and counts compute crossbars in the
netlist. The schemes:

- ``column``: LGD/RPP on column groups of the semi-folded plan (``xbc prune``'s default);
- ``crossbar``: LGD/RPP on whole semi-folded crossbar tiles;
- ``block``: block pruning, blocks = semi-folded crossbar tiles, reweighted group-L1 then hard projection
  and masked fine-tuning (``--method group-l1 --grain crossbar``);
- ``ADMM``: ADMM with the exact column-group top-s projection (``--method admm``);
- ``GaP``: grow-and-prune on column groups (``--method gap``), from the same trained weights as the others;
- ``GaP-scratch``: the same with the pruned layers re-initialised before the joint run (``from_scratch``),
  labels only (no distillation from the dense model), ``relax_epochs + epochs`` = the dense training's
  epochs; the search still chooses the ratios on the trained model, and the first and last layers
  (never pruned) keep their trained weights;
- ``pattern``: PCNN pattern pruning (:func:`xbcompiler.prune.pattern.prune_patterns`, its own budget
  search over non-zeros per kernel), compiled fully-folded with pattern-compacted rows.

A scheme this installation lacks (a method the flow does not dispatch, no pattern module) is a "not
available" row: nothing is made up for it. Each pruned netlist goes to ``--out``/<scheme>/. Writes
``schemes.md``, ``schemes.json`` and ``schemes_pareto.png`` into ``--out`` (``time s``: pruning, the two
compiles and the integer verify, not the test-set emulation); the last stdout line is one JSON object.

Run: ``python examples/prune_schemes.py --out DIR`` (digits CNN; ``--model resnet20`` for pytorchcv's
``resnet20_cifar10`` on digits:32x32x3; ``--quick`` for a smoke run). Long studies can be split: train
once, then ``--weights DIR/trained.pt --schemes ...`` per part, and ``--reuse DIR...`` to merge the earlier
parts' rows into one table and plot (only runs of the same weights, seed and budget are accepted).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from tests.models import vgg_digits
from xbcompiler.datasets import Split, accuracy, digits_from_spec, train_classifier
from xbcompiler.prune import flow
from xbcompiler.prune.flow import PRUNED_PIPELINES, PruneSettings, holdout, prune_classifier
from xbcompiler.report.plots import pyplot

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", file=sys.stderr, flush=True)


def resnet20(seed: int = 0) -> torch.nn.Module:
    """pytorchcv's ``resnet20_cifar10`` (examples/pytorchcv_models.py: its own fixed initialisation seed;
    ``seed`` seeds the data split and the training)."""
    from examples.pytorchcv_models import resnet20 as factory

    return factory()


@dataclass(frozen=True)
class ModelSpec:
    """A model of the study: factory, data, target and training budget."""

    factory: Callable[..., torch.nn.Module]
    data: str
    """``digits[:HxWxC]`` (:func:`xbcompiler.datasets.digits_from_spec`)."""
    target: tuple[str, dict]
    epochs: int
    description: str


MODELS = {
    "digits": ModelSpec(vgg_digits, "digits", ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64}), 30,
                        "VGG-style digits CNN (tests/models.py), isaac-like 64x64"),
    "resnet20": ModelSpec(resnet20, "digits:32x32x3", ("isaac-like", {}), 30,
                          "pytorchcv resnet20_cifar10 on digits:32x32x3, isaac-like 128x128"),
}


@dataclass(frozen=True)
class Scheme:
    """One pruning scheme: the flow's method and grain, or pattern pruning."""

    name: str
    settings: str
    """What the table says about it."""
    method: str = "lgd"
    grain: str = "column"
    pattern: bool = False
    """Pattern pruning (needs ``xbcompiler/prune/pattern.py``) instead of the flow's ``method``."""
    from_scratch: bool = False
    """GaP from scratch: the pruned layers re-initialised, as many epochs as the dense training, labels only."""


SCHEMES = (
    Scheme("column", "LGD/RPP, column groups, semi-folded"),
    Scheme("crossbar", "LGD/RPP, crossbar tiles, semi-folded", grain="crossbar"),
    Scheme("block", "group-L1 blocks = crossbar tiles, semi-folded", method="group-l1", grain="crossbar"),
    Scheme("ADMM", "ADMM, column groups, semi-folded", method="admm"),
    Scheme("GaP", "grow-and-prune from the trained weights, column groups, semi-folded", method="gap"),
    Scheme("GaP-scratch", "grow-and-prune from scratch (pruned layers re-initialised, no distillation), column "
           "groups, semi-folded", method="gap", from_scratch=True),
    Scheme("pattern", "PCNN patterns (fewest non-zeros within budget), fully-folded", pattern=True),
)


@dataclass
class SchemeRow:
    """One row of the table."""

    scheme: str
    settings: str
    available: bool
    note: str = ""
    pipeline: str = ""
    dense_crossbars: int | None = None
    pruned_crossbars: int | None = None
    float_accuracy: float | None = None
    """Test accuracy of the dense model through the emulator (its mapping)."""
    pruned_accuracy: float | None = None
    """Test accuracy of the pruned netlist through the emulator."""
    val_baseline: float | None = None
    val_accuracy: float | None = None
    """Validation accuracy before and after pruning (what the budget is judged on)."""
    verified: bool | None = None
    """Integer-mode ``xb.verify`` of the quantised pruned compile."""
    integer_mismatches: int | None = None
    joint_runs: int | None = None
    """Knapsack search: joint runs (1 + back-offs); None for pattern pruning (its own search)."""
    budget_met: bool | None = None
    seconds: float | None = None
    measured_in: str = ""
    """The ``--out`` of the run that measured the row when it is reused (``--reuse``) from an earlier run."""

    @property
    def saving(self) -> float | None:
        if self.dense_crossbars is None or self.pruned_crossbars is None:
            return None
        return 100.0 * (1.0 - self.pruned_crossbars / self.dense_crossbars)

    @property
    def loss(self) -> float | None:
        if self.float_accuracy is None or self.pruned_accuracy is None:
            return None
        return self.float_accuracy - self.pruned_accuracy

    @property
    def val_loss(self) -> float | None:
        """The loss the budget is judged on (validation accuracy before and after pruning)."""
        if self.val_baseline is None or self.val_accuracy is None:
            return None
        return self.val_baseline - self.val_accuracy

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "saving_percent": _round(self.saving), "loss": _round(self.loss),
                "val_loss": _round(self.val_loss)}


def _points(value: float) -> str:
    return f"{value:g} point{'' if value == 1 else 's'}"


def _round(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def missing(scheme: Scheme) -> str | None:
    """Why the scheme cannot run with this installation, or None: pattern pruning needs its module, a
    joint-run method must be one the flow dispatches (``flow.METHODS``; without it only LGD and zerorize)."""
    if scheme.pattern:
        if importlib.util.find_spec("xbcompiler.prune.pattern") is None:
            return "not available: xbcompiler/prune/pattern.py is not there"
        return None
    methods = getattr(flow, "METHODS", ("lgd", "zerorize"))
    if scheme.method not in methods:
        return f"not available: the pruning flow has no method {scheme.method!r} (it has {', '.join(methods)})"
    return None


class Study:
    """The trained model, its data and target; runs each scheme from a copy of the trained weights."""

    def __init__(self, args, spec: ModelSpec, model: torch.nn.Module, data: Split, train, val):
        self.args, self.spec, self.trained, self.data = args, spec, model.eval(), data
        self.train, self.val = train, val
        self.target = xb.load_target(spec.target[0], spec.target[1] or None)
        self.example = data.x_train[:1]
        self.dense: dict[str, tuple[int, float]] = {}

    def test_accuracy(self, netlist) -> float:
        return accuracy(lambda x: xb.emulate(netlist, x), self.data.x_test, self.data.y_test)

    def dense_point(self, pipeline: str) -> tuple[int, float]:
        """(compute crossbars, emulator test accuracy) of the dense model mapped by ``pipeline``."""
        if pipeline not in self.dense:
            compiled = xb.compile(self.trained, self.example, self.target, pipeline)
            self.dense[pipeline] = (compiled.summary["crossbars"], self.test_accuracy(compiled))
            log(f"dense {pipeline}: {self.dense[pipeline][0]} compute crossbars, emulator test accuracy "
                f"{self.dense[pipeline][1]:.2f} %")
        return self.dense[pipeline]

    def settings(self, scheme: Scheme) -> PruneSettings:
        a = self.args
        s = PruneSettings(method=scheme.method, grain=scheme.grain, max_drop=a.max_drop, seed=a.seed,
                          progress=not a.quiet)
        if a.quick:
            s = dataclasses.replace(s, epochs=1, relax_epochs=1, ratios=(0.5, 0.75))
        if scheme.from_scratch:  # grow-and-prune cycles, then fine-tuning: the dense training's epochs in all
            s = dataclasses.replace(s, from_scratch=True, distill=0.0, relax_epochs=max(1, a.epochs - s.epochs))
        return s

    def prune(self, scheme: Scheme, model: torch.nn.Module):
        """Prune ``model`` in place; (outcome, pruned pipeline, dense pipeline)."""
        if scheme.pattern:
            from xbcompiler.prune.pattern import PATTERN_PIPELINE, PatternSettings, prune_patterns

            ps = PatternSettings(max_drop=self.args.max_drop, seed=self.args.seed, progress=not self.args.quiet)
            if self.args.quick:
                ps = dataclasses.replace(ps, nonzeros=(4,), admm_epochs=1, finetune_epochs=1)
            return prune_patterns(model, self.target, self.train, self.val, ps, log=log), PATTERN_PIPELINE, "fully-folded"
        s = self.settings(scheme)
        outcome = prune_classifier(model, self.target, self.train, self.val, s, log=log)
        return outcome, PRUNED_PIPELINES[s.pipeline], s.pipeline

    def run(self, scheme: Scheme) -> SchemeRow:
        row = SchemeRow(scheme.name, scheme.settings, available=False)
        reason = missing(scheme)
        if reason is not None:
            row.note = reason
            log(f"{scheme.name}: {reason}")
            return row
        row.available = True
        if scheme.from_scratch:
            s = self.settings(scheme)
            row.settings += (f"; {s.relax_epochs} grow-and-prune + {s.epochs} fine-tuning epochs (the dense "
                             f"training's {self.args.epochs}); ratios from the search on the trained model")
        log(f"{scheme.name}: {row.settings}")
        start = time.perf_counter()
        model = copy.deepcopy(self.trained).train()
        try:
            outcome, pipeline, dense_pipeline = self.prune(scheme, model)
            model.eval()
            row.pipeline = pipeline
            row.dense_crossbars, row.float_accuracy = self.dense_point(dense_pipeline)
            row.val_baseline, row.val_accuracy = outcome.baseline_accuracy, outcome.accuracy
            if getattr(outcome, "knapsack", None) is not None:
                row.joint_runs, row.budget_met = len(outcome.knapsack.attempts), outcome.knapsack.budget_met
            out = Path(self.args.out) / scheme.name.lower()
            xb.compile(model, self.example, self.target, pipeline).save(out)
            netlist = xb.load_netlist(out)
            row.pruned_crossbars = netlist.summary["crossbars"]
            quantised = xb.compile(model, self.example, self.target, pipeline, calibration=self.data.x_train[:64])
            check = xb.verify(quantised, model, self.data.x_test[:4])
            row.verified = bool(check.ok)
            row.integer_mismatches = sum(c.mismatches for c in check.layers)
            row.seconds = round(time.perf_counter() - start, 1)  # pruning, compiles and verify, not the test pass
            row.pruned_accuracy = self.test_accuracy(netlist)
        except Exception as exc:  # noqa: BLE001 - one scheme's failure is a row of the table, not the end of the study
            traceback.print_exc(file=sys.stderr)
            row.note = " ".join(f"failed: {type(exc).__name__}: {exc}".split()).replace("|", "/")[:200]
            row.verified = False
            row.seconds = round(time.perf_counter() - start, 1)
        log(f"{scheme.name}: {row.dense_crossbars} -> {row.pruned_crossbars} crossbars, test accuracy "
            f"{row.float_accuracy} -> {row.pruned_accuracy}, verified {row.verified}, {row.seconds} s {row.note}")
        return row


def _cell(value, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown(rows: list[SchemeRow], title: str) -> str:
    """The table of ``schemes.md``."""
    header = ("| scheme | settings | dense crossbars | pruned crossbars | saving % | float acc | pruned acc | loss | "
              "val loss | verified | time s |")
    lines = [title, "", header, "| --- " * 11 + "|"]
    for r in rows:
        if not r.available:
            lines.append(f"| {r.scheme} | {r.note} |" + " — |" * 9)
            continue
        settings = r.settings + (f" ({r.note})" if r.note else "")
        verified = {True: "yes (integer)", False: "NO", None: "—"}[r.verified]
        lines.append(f"| {r.scheme} | {settings} | {_cell(r.dense_crossbars, '{}')} | {_cell(r.pruned_crossbars, '{}')} "
                     f"| {_cell(r.saving, '{:.1f}')} | {_cell(r.float_accuracy)} | {_cell(r.pruned_accuracy)} | "
                     f"{_cell(r.loss, '{:+.2f}')} | {_cell(r.val_loss, '{:+.2f}')} | {verified} | "
                     f"{_cell(r.seconds, '{:.0f}')} |")
    return "\n".join(lines)


MARKERS = "osD^vPXhp"  # no star: the dense points are stars


def pareto_plot(path: Path, rows: list[SchemeRow], dense: dict[str, tuple[int, float]], *, title: str,
                max_drop: float) -> Path:
    """Test accuracy against compute crossbars, one labelled point per measured scheme and per dense mapping."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.5, 5.5), layout="constrained")
    widest = max([n for n, _ in dense.values()] + [r.pruned_crossbars or 0 for r in rows])
    for pipeline, (n, acc) in dense.items():
        ax.scatter([n], [acc], marker="*", s=220, color="black", zorder=5)
        ha = "left" if n < 0.2 * widest else "right" if n > 0.8 * widest else "center"  # inside the axes
        ax.annotate(f"dense ({pipeline})", (n, acc), textcoords="offset points", xytext=(0, 10), ha=ha,
                    fontsize=10)
    ax.margins(y=0.12)
    measured = [r for r in rows if r.pruned_crossbars is not None and r.pruned_accuracy is not None]
    for i, r in enumerate(measured):
        ax.scatter([r.pruned_crossbars], [r.pruned_accuracy], marker=MARKERS[i % len(MARKERS)], s=110, zorder=6,
                   label=f"{r.scheme}: {r.pruned_crossbars} crossbars, {r.pruned_accuracy:.2f} %",
                   edgecolors="black", linewidths=0.6)
    points = [(r.pruned_crossbars, r.pruned_accuracy) for r in measured] + list(dense.values())
    groups = _clusters([((r.pruned_crossbars, r.pruned_accuracy), r.scheme) for r in measured], points)
    for (x, y), names in groups:
        side = _free_side((x, y), points)
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", fontsize=10,
                    xytext={"right": (9, -4), "left": (-9, -4), "above": (0, 9)}[side],
                    ha={"right": "left", "left": "right", "above": "center"}[side])
    if dense:
        best = max(acc for _, acc in dense.values())
        ax.axhline(best, color="grey", linestyle=":", linewidth=1)
        if best - max_drop > 0:
            ax.axhline(best - max_drop, color="firebrick", linestyle="--", linewidth=1,
                       label=f"dense − {_points(max_drop)} (the budget, on validation accuracy)")
    ax.set_xlim(left=0)
    ax.set_xlabel("compute crossbars (pruned netlist)", fontsize=11)
    ax.set_ylabel("test accuracy through the emulator (%)", fontsize=11)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _clusters(labelled: list[tuple[tuple[float, float], str]], points: list[tuple[float, float]],
              near: float = 0.03) -> list[tuple[tuple[float, float], list[str]]]:
    """Labelled points grouped when closer than ``near`` of the plot's span on both axes (one label each group)."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    dx, dy = max(max(xs) - min(xs), 1e-9) * near, max(max(ys) - min(ys), 1e-9) * near
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for (x, y), name in labelled:
        for (gx, gy), names in groups:
            if abs(x - gx) <= dx and abs(y - gy) <= dy:
                names.append(name)
                break
        else:
            groups.append(((x, y), [name]))
    return groups


def _free_side(point: tuple[float, float], points: list[tuple[float, float]], reach: float = 0.18,
               near: float = 0.04) -> str:
    """Where a label of ``point`` meets no other point: ``right`` (first choice), ``left`` or ``above``."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    dx, dy = max(max(xs) - min(xs), 1e-9) * reach, max(max(ys) - min(ys), 1e-9) * near
    x, y = point

    def crowded(lo: float, hi: float) -> bool:
        return any(lo < px - x <= hi and abs(py - y) <= dy for px, py in points if (px, py) != point)

    if not crowded(0, dx):
        return "right"
    near_left_edge = x < 0.3 * max(xs)  # the x axis starts at 0: a left label would leave the axes
    return "left" if not crowded(-dx, 0) and not near_left_edge else "above"


def trained_model(args, spec: ModelSpec, data: Split, train) -> torch.nn.Module:
    model = spec.factory(seed=args.seed)
    if args.weights:
        model.load_state_dict(torch.load(args.weights))
        log(f"loaded {args.weights}")
    else:
        start = time.perf_counter()
        train_classifier(model, Split(*train, data.x_test, data.y_test), epochs=args.epochs, seed=args.seed)
        log(f"trained {args.model} for {args.epochs} epochs in {time.perf_counter() - start:.0f} s")
        torch.save(model.state_dict(), Path(args.out) / "trained.pt")
    return model.eval()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the trained weights (``--reuse`` takes rows only from a run of the same weights)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def reused_rows(args, fingerprint: str) -> dict[str, SchemeRow]:
    """The measured rows of ``--reuse``'s ``schemes.json`` files (the first that has a scheme wins) for the
    schemes this run does not measure; failed and unavailable rows are not reused."""
    names = {f.name for f in dataclasses.fields(SchemeRow)}
    rows: dict[str, SchemeRow] = {}
    for directory in args.reuse:
        path = Path(directory) / "schemes.json"
        earlier = json.loads(path.read_text())
        same = {"model": args.model, "seed": args.seed, "max_drop": args.max_drop, "quick": args.quick,
                "weights": fingerprint}
        differ = {k: (earlier.get(k), v) for k, v in same.items() if earlier.get(k) != v}
        if differ:
            raise SystemExit(f"--reuse {path}: another study (earlier, now: {differ})")
        for r in earlier["rows"]:
            if r["scheme"] in args.schemes or r["scheme"] in rows or r["pruned_accuracy"] is None:
                continue
            row = SchemeRow(**{k: v for k, v in r.items() if k in names})
            row.measured_in = row.measured_in or str(directory)
            rows[row.scheme] = row
    return rows


def run(args) -> dict:
    spec = MODELS[args.model]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = digits_from_spec(spec.data, args.seed)
    train, val = holdout(data.x_train, data.y_train, 0.2, args.seed)
    study = Study(args, spec, trained_model(args, spec, data, train), data, train, val)
    fingerprint = weights_fingerprint(study.trained)
    earlier = reused_rows(args, fingerprint) if args.reuse else {}
    study.dense_point("semi-folded")
    for r in earlier.values():  # the plot's dense points of the reused rows' mappings
        study.dense_point("fully-folded" if r.scheme == "pattern" else "semi-folded")
    rows: list[SchemeRow] = []

    def write() -> dict:
        """schemes.md and schemes.json of the rows so far (after every scheme: a stopped study keeps them)."""
        title = (f"{args.model}: {spec.description}; seed {args.seed}; budget {_points(args.max_drop)} of "
                 f"validation accuracy{'; QUICK smoke run' if args.quick else ''}")
        reused = sorted({r.measured_in for r in rows if r.measured_in})
        if reused:
            title += (f"\n\nMeasured by earlier runs from the same trained weights ({', '.join(reused)}): "
                      f"{', '.join(r.scheme for r in rows if r.measured_in)}.")
        (out / "schemes.md").write_text(markdown(rows, title) + "\n")
        result = {"model": args.model, "description": spec.description, "data": spec.data, "seed": args.seed,
                  "max_drop": args.max_drop, "quick": args.quick,
                  "train_epochs": None if args.weights else args.epochs, "weights": fingerprint,
                  "dense": {p: {"crossbars": n, "accuracy": round(a, 3)} for p, (n, a) in study.dense.items()},
                  "rows": [r.as_dict() for r in rows], "seconds": round(time.perf_counter() - START, 1)}
        (out / "schemes.json").write_text(json.dumps(result, indent=1) + "\n")
        return result

    for scheme in SCHEMES:
        if scheme.name in args.schemes:
            rows.append(study.run(scheme))
            write()
        elif scheme.name in earlier:
            rows.append(earlier[scheme.name])
    result = write()
    pareto_plot(out / "schemes_pareto.png", rows, study.dense, max_drop=args.max_drop,
                title=f"{spec.description}:\npruning schemes, budget {_points(args.max_drop)}, seed {args.seed}")
    log("\n" + (out / "schemes.md").read_text())
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for the tables, the plot and each scheme's netlist")
    p.add_argument("--model", choices=sorted(MODELS), default="digits")
    p.add_argument("--weights", help="state dict of the trained model (skips training)")
    p.add_argument("--epochs", type=int,
                   help="training epochs (default: the model's, 30), also GaP-scratch's epochs in all")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget of every scheme, points (default 1)")
    p.add_argument("--schemes", nargs="*", default=[s.name for s in SCHEMES], choices=[s.name for s in SCHEMES],
                   help="the schemes to measure (default all; none with --reuse: only merge earlier runs' rows)")
    p.add_argument("--reuse", metavar="DIR", nargs="+", default=[],
                   help="take the measured rows of the schemes not in --schemes from DIR/schemes.json (earlier "
                        "runs of the same model, weights, seed and budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 training epochs, 1 fine-tuning epoch, no budget")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.epochs is None:
        args.epochs = MODELS[args.model].epochs
    if args.quick:
        args.epochs, args.max_drop = min(args.epochs, 2), 100.0
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
