"""Crossbar-aware pruning of a classifier, end to end (background §1.5-1.8; the library behind ``xbc prune``).

:func:`prune_classifier` takes a trained model, a target and labelled data and:

1. optionally reorders input channels (:func:`.reorder_pass.reorder_model`, function-preserving);
2. derives the groups of ``grain`` from the mapping plan of the target (:func:`.plan_groups.plan_groups`);
3. prunes either to fixed per-layer sparsities, or by the network-level search (background §1.7: layer by
   layer, each step to the smallest ratio at least ``step`` further that frees whole crossbars, a short
   pruning run per step, accuracy on the validation data, the three stop conditions);
4. fine-tunes all pruned layers jointly with LGD/RPP (``relax_epochs`` of relaxed projection; 0
   projects once) or zerorize-recover, with frozen masks at the end: the final group sparsity is exact.

Compile the result with a pipeline that recombines pruned columns (:data:`PRUNED_PIPELINES`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .groups import crossbar_curve
from .lgd import prune_lgd
from .plan_groups import LayerGroups, plan_groups
from .search import SearchCallbacks, SearchResult, network_search
from .zerorize import prune_zerorize

#: The named pipeline to compile a pruned model with, per mapping pipeline (xbcompiler/pipeline/named.py).
PRUNED_PIPELINES = {"semi-folded": "semi-folded-pruned", "fully-unfolded": "fully-unfolded-pruned",
                    "fully-folded": "fully-folded-pruned"}


@dataclass(frozen=True)
class PruneSettings:
    """Options of :func:`prune_classifier` (the ``xbc prune`` flags)."""

    pipeline: str = "semi-folded"
    """Mapping whose plan defines the groups: ``semi-folded``, ``fully-unfolded`` or ``fully-folded``."""
    grain: str = "column"
    """``column`` or ``crossbar`` (semi-folded / fully-unfolded), ``kernel`` or ``tile`` (fully-folded)."""
    sparsity: float | None = None
    """Group sparsity of every pruned layer; None: the network-level search chooses per layer."""
    method: str = "lgd"
    """``lgd`` (LGD/RPP) or ``zerorize`` (CRIMP's zerorize-recover) for the joint run."""
    rpp: bool = True
    """Relaxant probabilistic projection; False is the deterministic ablation (IHT)."""
    lambda0: float = 0.5
    """Initial keep-probability scale of RPP."""
    relax_epochs: int = 5
    """Epochs of relaxed projection in the joint run before the ``epochs`` of fine-tuning (0: project once)."""
    epochs: int = 10
    """Epochs of the joint run after the search (fine-tuning with frozen masks)."""
    step_epochs: int = 1
    """Epochs of each search step (projection, then fine-tuning)."""
    lr: float = 0.01
    """SGD learning rate of pruning and fine-tuning (momentum 0.9)."""
    step: float = 0.1
    """Search step: the ratio grows by at least this, up to the next value that frees a crossbar."""
    max_drop: float = 0.5
    """Search: accuracy drop (points) that stops a layer."""
    drop_from: str = "network"
    """Search: measure the drop from the dense baseline (``network``) or from the layer's start (``layer``)."""
    max_ratio: float = 0.9
    """Search: per-layer ratio limit."""
    crossbar_threshold: int = 1
    """Search: stop a layer before it would keep this many crossbars or fewer."""
    skip_first_last: bool = True
    """Leave the first and the last crossbar layer dense (background §1.7's default)."""
    reorder: bool = False
    """Reorder input channels first (``reorder-input-channels``'s algorithm on the model)."""
    reorder_sparsity: float = 0.75
    """Sparsity the reorder's kept budget assumes."""
    reorder_solver: str = "ortools"
    """``heuristic`` or ``ortools``."""
    reorder_time_limit_s: float = 5.0
    """Time limit of each reorder solve."""
    distill: float = 0.5
    """Weight of knowledge distillation from the dense model in every pruning run (0: plain cross-entropy)."""
    temperature: float = 4.0
    """Softmax temperature of the distillation."""
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    """Progress bars and search lines on stderr."""


@dataclass
class LayerPruning:
    """One row of the per-layer table."""

    layer: str
    param: str
    groups: int
    kept: int
    crossbars_dense: int
    crossbars: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.groups if self.groups else 0.0


@dataclass
class PruneOutcome:
    """What :func:`prune_classifier` did."""

    layers: list[LayerPruning]
    baseline_accuracy: float
    """Validation accuracy (percent) before pruning."""
    accuracy: float
    """Validation accuracy after the joint run."""
    search: SearchResult | None = None
    reorder: dict | None = None
    history: list[dict] = field(default_factory=list)
    """Per epoch of the joint run: loss, accuracy, sparsity."""

    @property
    def crossbars_dense(self) -> int:
        return sum(r.crossbars_dense for r in self.layers)

    @property
    def crossbars(self) -> int:
        return sum(r.crossbars for r in self.layers)

    def table(self) -> str:
        lines = [f"{'layer':<24} {'groups':>6} {'kept':>6} {'sparsity':>8} {'dense':>6} {'pruned':>6}"]
        lines += [f"{r.layer:<24} {r.groups:>6} {r.kept:>6} {r.sparsity:>8.3f} {r.crossbars_dense:>6} {r.crossbars:>6}"
                  for r in self.layers]
        lines.append(f"{'total':<24} {'':>6} {'':>6} {'':>8} {self.crossbars_dense:>6} {self.crossbars:>6}")
        return "\n".join(lines)


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> list:
    """One shuffled epoch of ``(x, y)`` mini-batches."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, len(x), batch_size)]


def accuracy_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent (eval mode, no gradients)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
                      for i in range(0, len(x), batch_size))
    model.train(was)
    return 100.0 * correct / max(1, len(x))


class _Pruner:
    """The model, its groups and the current ratios; runs the pruning schedules."""

    def __init__(self, model, groups: list[LayerGroups], train, val, s: PruneSettings):
        self.model, self.s = model, s
        self.groups = {g.layer: g for g in groups}
        self.train, self.val = train, val
        self.ratios: dict[str, float] = {}
        self.curves = {}
        self.runs = 0
        self.history: list[dict] = []
        self.teacher = copy.deepcopy(model).eval() if s.distill > 0 else None

    def evaluate(self) -> float:
        return accuracy_of(self.model, *self.val)

    def loader(self) -> list:
        """One shuffled epoch; with distillation the labels are ``(y, teacher logits)`` pairs."""
        self.runs += 1
        batches = epoch_batches(*self.train, self.s.batch_size, self.s.seed * 1009 + self.runs)
        return batches if self.teacher is None else with_teacher(batches, self.teacher)

    def loss(self, logits: torch.Tensor, target) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, target)
        return distillation_loss(logits, *target, self.s.distill, self.s.temperature)

    def curve(self, layer: str):
        if layer not in self.curves:
            g = self.groups[layer]
            weight = dict(self.model.named_parameters())[g.param]
            self.curves[layer] = crossbar_curve(g.group_set, g.group_set.norms(weight))
        return self.curves[layer]

    def crossbars(self, layer: str, ratio: float) -> int:
        return self.curve(layer).crossbars(ratio)

    def next_ratio(self, layer: str, ratio: float) -> float | None:
        """At least ``step`` above ``ratio``, then back down to keep as many groups as those crossbars hold;
        the next ratio that frees a crossbar when the step frees none (background §1.7-1.8)."""
        curve, gs = self.curve(layer), self.groups[layer].group_set
        counts, now = curve.counts, gs.n_keep(ratio)
        s = min(gs.n_keep(min(1.0, ratio + self.s.step)), now - 1)
        if s < 0:
            return None
        full = s + int(np.searchsorted(counts[s:], counts[s], side="right")) - 1  # counts never decrease in s
        if counts[full] >= counts[now]:
            return curve.next_ratio(ratio)
        return 1.0 - full / gs.n_groups

    def run(self, ratios: dict[str, float], *, epochs: int, relax_epochs: int = 0, title: bool = False) -> None:
        sets = [self.groups[layer].group_set for layer in ratios]
        sparsity = {self.groups[layer].param: r for layer, r in ratios.items()}
        loader = self.loader()
        s = self.s
        common = {"lr": s.lr, "evaluate": lambda m: accuracy_of(m, *self.val), "progress": s.progress and title,
                  "loss_fn": self.loss}
        if s.method == "zerorize":
            result = prune_zerorize(self.model, sets, sparsity, loader, epochs=max(1, epochs + relax_epochs),
                                    ramp_epochs=relax_epochs, **common)
        else:
            result = prune_lgd(self.model, sets, sparsity, loader, relax_epochs=relax_epochs, finetune_epochs=epochs,
                               rpp=s.rpp, lambda0=s.lambda0, seed=s.seed, **common)
        if title:
            self.history = result.history
        self.keep = result.keep

    def prune_step(self, layer: str, ratio: float) -> None:
        self.ratios[layer] = ratio
        self.run(dict(self.ratios), epochs=self.s.step_epochs)

    def save(self):
        return copy.deepcopy(self.model.state_dict()), dict(self.ratios)

    def restore(self, state) -> None:
        self.model.load_state_dict(state[0])
        self.ratios = dict(state[1])


def prune_classifier(model: torch.nn.Module, target, train: tuple[torch.Tensor, torch.Tensor],
                     val: tuple[torch.Tensor, torch.Tensor], settings: PruneSettings = PruneSettings(), *,
                     log: Callable[[str], None] | None = None) -> PruneOutcome:
    """Prune ``model`` in place for ``target``; ``train``/``val`` are ``(images, labels)`` tensors."""
    s = settings
    example = train[0][:1]
    reorder = None
    if s.reorder:
        from .reorder_pass import reorder_model

        reorder = reorder_model(model, example, target, sparsity=s.reorder_sparsity, solver=s.reorder_solver,
                                time_limit_s=s.reorder_time_limit_s, seed=s.seed,
                                grain="crossbar" if s.grain == "crossbar" else "column",
                                strategy=s.pipeline)
    groups = plan_groups(model, example, target, pipeline=s.pipeline, grain=s.grain)
    prunable = groups[1:-1] if s.skip_first_last else groups
    pruner = _Pruner(model, prunable, train, val, s)
    baseline = pruner.evaluate()
    search = None
    model.train()
    if s.sparsity is None:
        callbacks = SearchCallbacks(pruner.crossbars, pruner.next_ratio, pruner.prune_step, pruner.evaluate,
                                    save=pruner.save, restore=pruner.restore)
        search = network_search([g.layer for g in prunable], callbacks, max_drop=s.max_drop, max_ratio=s.max_ratio,
                                crossbar_threshold=s.crossbar_threshold, drop_from=s.drop_from, progress=s.progress)
        ratios = {layer: r for layer, r in pruner.ratios.items() if r > 0}
    else:
        ratios = {g.layer: s.sparsity for g in prunable}
    if ratios:
        pruner.run(ratios, epochs=s.epochs, relax_epochs=s.relax_epochs, title=True)
    keep = getattr(pruner, "keep", {})
    rows = []
    for g in groups:
        kept = keep.get(g.param)
        n_kept = g.group_set.n_groups if kept is None else int(kept.sum())
        xbars = g.dense_crossbars if kept is None else g.group_set.crossbars(kept)
        rows.append(LayerPruning(g.layer, g.param, g.group_set.n_groups, n_kept, g.dense_crossbars, xbars))
    model.eval()
    outcome = PruneOutcome(rows, baseline, pruner.evaluate(), search, reorder, pruner.history)
    if log is not None:
        log(outcome.table())
    return outcome


def with_teacher(batches: list, teacher: torch.nn.Module) -> list:
    """``(x, (y, teacher(x)))`` for every batch, for :func:`distillation_loss` (teacher in eval mode)."""
    teacher.eval()
    with torch.no_grad():
        return [(x, (y, teacher(x))) for x, y in batches]


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, weight: float,
                      temperature: float) -> torch.Tensor:
    """``(1 - weight) * CE(logits, labels) + weight * T^2 * KL(teacher_T || student_T)`` (Hinton et al. 2015)."""
    soft = F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    log_target=True, reduction="batchmean")
    return (1.0 - weight) * F.cross_entropy(logits, labels) + weight * temperature ** 2 * soft


def holdout(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = 0):
    """``((x, y) kept, (x, y) held out)``: a seeded random ``fraction`` held out (e.g. for the search)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = round(fraction * len(x))
    return (x[order[n:]], y[order[n:]]), (x[order[:n]], y[order[:n]])
