"""Grains and reorder at equal crossbar count, averaged over seeds (the table of docs/pruning.md).

For each model and seed: train on digits (80 % of the training split), then for each sparsity prune
the layers between the first and the last to the same number of crossbars per layer with

- ``crossbar``: crossbar-grain blocks ``(a, b)``, ``s`` blocks kept (``n_w * s`` crossbars);
- ``column``: column-grain slabs ``(o, a)``, ``s * Kout`` slabs kept by the whole-crossbar projection
  (the same ``n_w * s`` crossbars after ``recombine-pruned-columns``);
- ``column+reorder``: the same after ``reorder-input-channels``' algorithm on the trained model;

each with one projection and LGD fine-tuning with frozen masks. Reports per variant the compute
crossbars (the pruned netlist's ``summary.crossbars`` for the first seed, checked against the group
count), test accuracy of the pruned model, and the kept importance (background §1.6's objective: kernel energy
kept by the projection, as a fraction of the layer's energy, before fine-tuning). Writes
``study.json``, ``study.md`` and ``pareto.png`` into ``--out``.

Run: ``python examples/prune_study.py --out DIR`` (about 20-40 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from tests.models import resnet_digits, vgg_digits
from xbcompiler.datasets import Split, accuracy, digits, train_classifier
from xbcompiler.prune import prune_lgd
from xbcompiler.prune.flow import PRUNED_PIPELINES, distillation_loss, epoch_batches, holdout, with_teacher
from xbcompiler.prune.plan_groups import plan_groups
from xbcompiler.prune.reorder_pass import reorder_model
from xbcompiler.prune.report import write_pareto

MODELS = {"vgg": vgg_digits, "resnet": resnet_digits}
TARGET = ("isaac-like", {"crossbar.rows": 64, "crossbar.cols": 64})
VARIANTS = ("crossbar", "column", "column+reorder")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def kept_counts(model, target, example, sparsity: float) -> dict[str, int]:
    """Kept crossbar-grain blocks per pruned layer at ``sparsity``."""
    layers = plan_groups(model, example, target, grain="crossbar")[1:-1]
    return {g.layer: g.group_set.n_keep(sparsity) for g in layers}


def prune_variant(model, target, example, grain: str, blocks: dict[str, int], train, *, epochs: int,
                  seed: int) -> dict:
    """Project and fine-tune ``model`` in place (distilling from a copy of the dense model, as
    :func:`~xbcompiler.prune.flow.prune_classifier` does); crossbars, kept importance, per-layer crossbars."""
    teacher = copy.deepcopy(model)
    layers = {g.layer: g for g in plan_groups(model, example, target, grain=grain)}
    params = dict(model.named_parameters())
    sets, sparsity, kept_energy, total_energy, per_layer = [], {}, 0.0, 0.0, {}
    for name, n_blocks in blocks.items():
        g = layers[name]
        gs = g.group_set
        s = n_blocks if grain == "crossbar" else n_blocks * g.plan.kout
        sparsity[g.param] = 1.0 - s / gs.n_groups
        assert gs.n_keep(sparsity[g.param]) == s
        keep = gs.project(gs.norms(params[g.param]), s)
        energy = params[g.param].detach().double() ** 2
        kept_energy += float((energy * gs.mask(keep)).sum() / energy.sum())
        total_energy += 1.0
        sets.append(gs)
    loader = with_teacher(epoch_batches(*train, 64, seed), teacher)
    result = prune_lgd(model, sets, sparsity, loader, relax_epochs=0, finetune_epochs=epochs, lr=0.01,
                       loss_fn=lambda out, target: distillation_loss(out, *target, 0.5, 4.0), progress=False)
    crossbars = 0
    for name, g in layers.items():
        n = g.group_set.crossbars(result.keep[g.param]) if g.param in result.keep else g.dense_crossbars
        per_layer[name] = n
        crossbars += n
    return {"crossbars": crossbars, "kept_importance": kept_energy / total_energy, "layers": per_layer}


def run(args) -> dict:
    target = xb.load_target(*TARGET)
    rows = []
    for model_name in args.models:
        for seed in args.seeds:
            t0 = time.perf_counter()
            data = digits(seed)
            train, _ = holdout(data.x_train, data.y_train, 0.2, seed)
            base = MODELS[model_name](seed=seed)
            train_classifier(base, Split(*train, data.x_test, data.y_test), epochs=args.epochs, seed=seed)
            example = data.x_train[:1]
            dense_layers = {g.layer: g.dense_crossbars for g in plan_groups(base, example, target)}
            float_acc = accuracy(base, data.x_test, data.y_test)
            for sparsity in args.sparsities:
                blocks = kept_counts(base, target, example, sparsity)
                reordered = copy.deepcopy(base)
                report = reorder_model(reordered, example, target, sparsity=sparsity, time_limit_s=args.time_limit,
                                       seed=seed)
                for variant in VARIANTS:
                    model = copy.deepcopy(reordered if variant.endswith("reorder") else base).train()
                    out = prune_variant(model, target, example, variant.split("+")[0], blocks, train,
                                        epochs=args.finetune_epochs, seed=seed)
                    model.eval()
                    out.update(model=model_name, seed=seed, sparsity=sparsity, variant=variant,
                               accuracy=accuracy(model, data.x_test, data.y_test), float_accuracy=float_acc,
                               dense=sum(dense_layers.values()), dense_layers=dense_layers)
                    if variant.endswith("reorder"):
                        out["reorder_objective"] = report["objective"] / max(report["identity_objective"], 1e-300)
                    if seed == args.seeds[0]:  # the netlist's count equals the group count
                        compiled = xb.compile(model, example, target, PRUNED_PIPELINES["semi-folded"])
                        assert compiled.summary["crossbars"] == out["crossbars"], (compiled.summary, out["crossbars"])
                        out["netlist_crossbars"] = compiled.summary["crossbars"]
                    rows.append(out)
                    log(f"{model_name} seed {seed} sparsity {sparsity} {variant:15s} crossbars {out['crossbars']:4d}/"
                        f"{out['dense']} accuracy {out['accuracy']:.2f} (float {float_acc:.2f}) kept importance "
                        f"{out['kept_importance']:.4f}")
            log(f"{model_name} seed {seed}: {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "args": vars(args)}


def summarise(result: dict) -> str:
    """Markdown: per model and sparsity, the mean over seeds of each variant; per-layer crossbars."""
    rows = result["rows"]
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        seeds = sorted({r["seed"] for r in mine})
        dense = mine[0]["dense"]
        float_acc = np.mean([r["float_accuracy"] for r in mine if r["variant"] == "crossbar"])
        lines += [(f"**{model}** (dense {dense} compute crossbars, float accuracy {float_acc:.2f} %, "
                   f"mean of seeds {', '.join(map(str, seeds))})"), "",
                  "| sparsity | variant | crossbars | saving | accuracy | loss vs float | kept importance |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for sparsity in dict.fromkeys(r["sparsity"] for r in mine):
            for variant in VARIANTS:
                sel = [r for r in mine if r["sparsity"] == sparsity and r["variant"] == variant]
                xb_ = np.mean([r["crossbars"] for r in sel])
                acc = np.mean([r["accuracy"] for r in sel])
                loss = np.mean([r["float_accuracy"] - r["accuracy"] for r in sel])
                kept = np.mean([r["kept_importance"] for r in sel])
                lines.append(f"| {sparsity} | {variant} | {xb_:.0f} | {100 * (1 - xb_ / dense):.1f} % | {acc:.2f} % | "
                             f"{loss:+.2f} | {kept:.4f} |")
        lines.append("")
        first = [r for r in mine if r["seed"] == seeds[0] and r["sparsity"] == mine[0]["sparsity"]]
        layers = first[0]["dense_layers"]
        lines += [f"Per layer ({model}, seed {seeds[0]}, sparsity {mine[0]['sparsity']}):", "",
                  "| layer | dense | " + " | ".join(r["variant"] for r in first) + " |",
                  "| --- " * (len(first) + 2) + "|"]
        lines += [f"| {name} | {n} | " + " | ".join(str(r["layers"][name]) for r in first) + " |"
                  for name, n in layers.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=["vgg", "resnet"], choices=sorted(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.7, 0.8, 0.9])
    p.add_argument("--epochs", type=int, default=30, help="float training epochs")
    p.add_argument("--finetune-epochs", type=int, default=20)
    p.add_argument("--time-limit", type=float, default=5.0, help="reorder time limit per space (s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: fastest for these tiny models, and robust on busy cores)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(result, indent=1) + "\n")
    table = summarise(result)
    (out / "study.md").write_text(table + "\n")
    series = {}
    for r in result["rows"]:
        series.setdefault(f"{r['model']} {r['variant']}", []).append((r["crossbars"], r["accuracy"]))
    write_pareto(out / "pareto.png", series, title="digits: accuracy vs compute crossbars (isaac-like 64x64)")
    print(table)


if __name__ == "__main__":
    main()
