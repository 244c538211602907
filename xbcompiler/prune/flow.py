"""Crossbar-aware pruning of a classifier, end to end (background §1.5-1.8; the library behind ``xbc prune``).

:func:`prune_classifier` takes a trained model, a target and labelled data and:

1. optionally reorders input channels (:func:`.reorder_pass.reorder_model`, function-preserving);
2. derives the groups of ``grain`` from the mapping plan of the target (:func:`.plan_groups.plan_groups`);
3. prunes either to fixed per-layer sparsities, or by a search over per-layer ratios:

   - ``knapsack`` (default, :mod:`.knapsack`): each layer pruned alone at each ratio of a grid (projection,
     optional short fine-tune, BatchNorm re-estimated, expected accuracy), then the ratios that free the
     most crossbars with the summed drops within ``max_drop / (1 - recovery)`` (CP-SAT), the joint run,
     its loss judged against the dense model given the same schedule and ``max_drop``, and a back-off
     while it is over;
   - ``greedy`` (the paper's procedure, :mod:`.search`, background §1.7): layer by layer, each step to the
     smallest ratio at least ``step`` further that frees whole crossbars, a short pruning run per step,
     accuracy on the validation data against the dense model given the same step run, the three stops;
4. fine-tunes all pruned layers jointly with one of :data:`METHODS`: LGD/RPP (``relax_epochs`` of relaxed
   projection; 0 projects once), zerorize-recover, ADMM (:mod:`.admm`), reweighted group-L1 block pruning
   (:mod:`.group_l1`) or grow-and-prune (:mod:`.gap`), with frozen masks at the end: the final group
   sparsity is exact.

Compile the result with a pipeline that recombines pruned columns (:data:`PRUNED_PIPELINES`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..diagnostics import CompileError
from .admm import prune_admm
from .dead_channels import DeadChannels, fold_dead_channels
from .gap import prune_gap
from .group_l1 import prune_group_l1
from .groups import CrossbarCurve, GroupSet, crossbar_curve
from .knapsack import KnapsackCallbacks, KnapsackResult, knapsack_search
from .lgd import LGDPruner, prune_lgd
from .plan_groups import LayerGroups, crossbars_read_off, kept_groups, plan_groups
from .search import SearchCallbacks, SearchResult, network_search
from .ties import tie_depthwise
from .zerorize import prune_zerorize

#: The named pipeline to compile a pruned model with, per mapping pipeline (xbcompiler/pipeline/named.py).
PRUNED_PIPELINES = {"semi-folded": "semi-folded-pruned", "fully-unfolded": "fully-unfolded-pruned",
                    "fully-folded": "fully-folded-pruned"}


#: The joint-run methods (``PruneSettings.method``, ``xbc prune --method``).
METHODS = ("lgd", "zerorize", "admm", "group-l1", "gap")
#: The methods that keep a tied depthwise layer's channels with its producer's (``tie_depthwise``).
TIED_METHODS = ("lgd", "zerorize")


@dataclass(frozen=True)
class PruneSettings:
    """Options of :func:`prune_classifier` (the ``xbc prune`` flags)."""

    pipeline: str = "semi-folded"
    """Mapping whose plan defines the groups: ``semi-folded``, ``fully-unfolded`` or ``fully-folded``."""
    grain: str = "column"
    """``column`` or ``crossbar`` (semi-folded / fully-unfolded), ``kernel`` or ``tile`` (fully-folded)."""
    sparsity: float | None = None
    """Group sparsity of every pruned layer; None: the ``search`` chooses per layer."""
    search: str = "knapsack"
    """``knapsack`` (sensitivity + CP-SAT allocation + back-off) or ``greedy`` (the paper's layer-by-layer search)."""
    ratios: tuple[float, ...] = (0.25, 0.5, 0.625, 0.75, 0.875)
    """Knapsack: the ratio grid of the sensitivity (each snapped down to fill whole crossbars, at most ``max_ratio``)."""
    sensitivity_batches: int = 0
    """Knapsack: mini-batches of fine-tuning after each sensitivity projection (0: projection only)."""
    recalibrate: bool = True
    """Knapsack: re-estimate BatchNorm statistics after each sensitivity projection (and its reference)."""
    recovery: float = 0.9
    """Knapsack: the fraction of the summed single-layer drops the joint run is taken to recover: the first
    allocation spends ``max_drop / (1 - recovery)`` of them (ten times the budget; the back-off halves it)."""
    backoff_tries: int = 2
    """Knapsack: joint reruns, each with half the budget and fewer crossbars, while the loss exceeds ``max_drop``."""
    grow_factor: float = 2.0
    """Knapsack: when the first try is judged with at least half of ``max_drop`` unused, one more joint run
    with the budget times this, kept only if judged no worse than the first (1: never grow)."""
    solver_time_limit_s: float = 5.0
    """Knapsack: CP-SAT time limit of each allocation."""
    judge_fraction: float = 0.5
    """Knapsack: the share of the held-out images kept apart to judge the budget (the dense reference and
    every joint run). The sensitivity and the choice of the best fine-tuning epoch see only the others, so
    the judge is not measured on the images the choices were made on (0: one set for everything)."""
    method: str = "lgd"
    """The joint run (:data:`METHODS`): ``lgd`` (LGD/RPP), ``zerorize`` (CRIMP's zerorize-recover), ``admm``
    (ADMM with the exact group top-``s`` projection), ``group-l1`` (reweighted group-L1 block pruning) or
    ``gap`` (grow-and-prune); the last three spend ``relax_epochs`` before the hard projection."""
    from_scratch: bool = False
    """``gap`` only: re-initialise the pruned layers before the final joint run (no dense model needed)."""
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
    max_drop: float = 1.0
    """Search: the accuracy budget in points (greedy: the drop that stops a layer; knapsack: the loss judged
    after the joint run, and with ``recovery`` the summed per-layer drops the first allocation spends)."""
    drop_from: str = "network"
    """Search: measure the drop from the dense baseline (``network``) or from the layer's start (``layer``)."""
    max_ratio: float = 0.9
    """Search: per-layer ratio limit."""
    crossbar_threshold: int = 1
    """Search: stop a layer before it would keep this many crossbars or fewer."""
    skip_first_last: bool = True
    """Leave the first and the last crossbar layer dense (background §1.7's default)."""
    tie_depthwise: bool = True
    """Column grain, ``lgd`` and ``zerorize``: prune each depthwise layer fed by one pruned layer with it,
    channel for channel, and price the pair as one layer in the search (:mod:`.ties`)."""
    fold_dead_channels: bool = True
    """After the joint run, fold the channels pruning emptied into their 1x1 consumers' biases and pack
    them out of the consumers' crossbars where that frees crossbars (:mod:`.dead_channels`;
    function-preserving)."""
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
    follows: str | None = None
    """The layer this one is tied to (its kept channels are that layer's, :mod:`.ties`), if any."""

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.groups if self.groups else 0.0


@dataclass
class PruneOutcome:
    """What :func:`prune_classifier` did."""

    layers: list[LayerPruning]
    baseline_accuracy: float
    """Validation accuracy (percent) before pruning, on the judge images when the knapsack sets them apart."""
    accuracy: float
    """Validation accuracy after the joint run (on the same images as ``baseline_accuracy``)."""
    search: SearchResult | None = None
    """Greedy: the search; knapsack: its sensitivity points (:meth:`.knapsack.KnapsackResult.as_search`)."""
    knapsack: KnapsackResult | None = None
    reorder: dict | None = None
    history: list[dict] = field(default_factory=list)
    """Per epoch of the joint run: loss, accuracy, sparsity."""
    dead_channels: list[DeadChannels] = field(default_factory=list)
    """The channel spaces whose emptied channels were folded into their consumers (:mod:`.dead_channels`)."""

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


def expected_accuracy_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Mean softmax probability of the true label in percent (eval mode): the accuracy of sampling the
    prediction. Unlike top-1 accuracy it moves with every image's confidence, so small damage shows on a
    small validation set (one image of 270 is 0.37 points of top-1 accuracy)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        total = sum(float(model(x[i:i + batch_size]).softmax(-1).gather(1, y[i:i + batch_size, None]).sum())
                    for i in range(0, len(x), batch_size))
    model.train(was)
    return 100.0 * total / max(1, len(x))


@dataclass(frozen=True)
class _Saved:
    """A :meth:`_Pruner.save`: what a search restores to undo joint runs."""

    weights: dict[str, torch.Tensor]
    ratios: dict[str, float]
    runs: int
    keep: dict[str, torch.Tensor]
    history: list[dict]


class _Pruner:
    """The model, its groups and the current ratios; runs the pruning schedules."""

    def __init__(self, model, groups: list[LayerGroups], train, val, s: PruneSettings, judge=None):
        self.model, self.s = model, s
        self.groups = {g.layer: g for g in groups}
        self.train, self.val = train, val
        self.judge = val if judge is None else judge
        """The images the budget is judged on (:meth:`judged`); ``val`` unless the knapsack sets them apart."""
        self.ratios: dict[str, float] = {}
        self.curves = {}
        self.runs = 0
        self.history: list[dict] = []
        self.keep: dict[str, torch.Tensor] = {}
        """The final masks (parameter -> keep vector) of the last run that prunes the model for good."""
        self._short: list | None = None
        self.teacher = copy.deepcopy(model).eval() if s.distill > 0 else None
        by_param = {g.param: g.layer for g in groups}
        self.followers: dict[str, list[str]] = {}
        """Leader layer -> the layers tied to it (:mod:`.ties`), which are pruned and priced with it."""
        for g in groups:
            follows = g.group_set.follows
            if follows is not None and follows.leader in by_param:
                self.followers.setdefault(by_param[follows.leader], []).append(g.layer)

    def searched(self) -> list[str]:
        """The layers the search sets ratios for: every layer but the tied followers."""
        tied = {f for fs in self.followers.values() for f in fs}
        return [layer for layer in self.groups if layer not in tied]

    def targets(self, ratios: dict[str, float]) -> tuple[list[GroupSet], dict[str, float]]:
        """The group sets a run at ``ratios`` projects, each leader's followers with it (their keep vectors
        come from the leader's), and the sparsity of each by parameter."""
        ratios = dict(ratios)
        for layer in list(ratios):
            for f in self.followers.get(layer, ()):
                ratios.setdefault(f, 0.0)
        return ([self.groups[layer].group_set for layer in ratios],
                {self.groups[layer].param: r for layer, r in ratios.items()})

    def evaluate(self) -> float:
        return accuracy_of(self.model, *self.val)

    def judged(self) -> float:
        """Top-1 accuracy on the judge images."""
        return accuracy_of(self.model, *self.judge)

    def loader(self) -> list:
        """One shuffled epoch; with distillation the labels are ``(y, teacher logits)`` pairs."""
        self.runs += 1
        batches = epoch_batches(*self.train, self.s.batch_size, self.s.seed * 1009 + self.runs)
        return batches if self.teacher is None else with_teacher(batches, self.teacher)

    def loss(self, logits: torch.Tensor, target) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, target)
        return distillation_loss(logits, *target, self.s.distill, self.s.temperature)

    def curve(self, layer: str) -> CrossbarCurve:
        """Crossbars of ``layer`` and its followers when it keeps its best ``s`` groups, for every ``s``."""
        if layer not in self.curves:
            g = self.groups[layer]
            norms = g.group_set.norms(dict(self.model.named_parameters())[g.param])
            curve = crossbar_curve(g.group_set, norms)
            followers = [self.groups[f].group_set for f in self.followers.get(layer, ())]
            if followers:
                order, keep = g.group_set.ranking(norms), np.zeros(g.group_set.n_groups, dtype=bool)
                extra = [sum(f.crossbars(f.follows.keep(keep)) for f in followers)]
                for i in order:
                    keep[i] = True
                    extra.append(sum(f.crossbars(f.follows.keep(keep)) for f in followers))
                curve = CrossbarCurve(g.group_set, curve.counts + np.asarray(extra, np.int64))
            self.curves[layer] = curve
        return self.curves[layer]

    def crossbars(self, layer: str, ratio: float) -> int:
        return self.curve(layer).crossbars(ratio)

    def full(self, layer: str, s: int) -> int:
        """The most groups that keep the crossbars of keeping ``s`` (every group those crossbars hold)."""
        counts = self.curve(layer).counts
        return s + int(np.searchsorted(counts[s:], counts[s], side="right")) - 1  # counts never decrease in s

    def next_ratio(self, layer: str, ratio: float) -> float | None:
        """At least ``step`` above ``ratio``, then back down to keep as many groups as those crossbars hold;
        the next ratio that frees a crossbar when the step frees none (background §1.7-1.8)."""
        curve, gs = self.curve(layer), self.groups[layer].group_set
        now = gs.n_keep(ratio)
        s = min(gs.n_keep(min(1.0, ratio + self.s.step)), now - 1)
        if s < 0:
            return None
        full = self.full(layer, s)
        if curve.counts[full] >= curve.counts[now]:
            return curve.next_ratio(ratio)
        return 1.0 - full / gs.n_groups

    def run(self, ratios: dict[str, float], *, epochs: int, relax_epochs: int = 0, title: bool = False) -> None:
        sets, sparsity = self.targets(ratios)
        loader = self.loader()
        s = self.s
        common = {"lr": s.lr, "evaluate": lambda m: accuracy_of(m, *self.val), "progress": s.progress and title,
                  "loss_fn": self.loss}
        if s.method == "zerorize":
            result = prune_zerorize(self.model, sets, sparsity, loader, epochs=max(1, epochs + relax_epochs),
                                    ramp_epochs=relax_epochs, **common)
        elif s.method in JOINT_METHODS:
            options = {"from_scratch": True} if s.from_scratch and title else {}
            result = JOINT_METHODS[s.method](self.model, sets, sparsity, loader, relax_epochs=relax_epochs,
                                             finetune_epochs=epochs, seed=s.seed, **options, **common)
        else:
            result = prune_lgd(self.model, sets, sparsity, loader, relax_epochs=relax_epochs, finetune_epochs=epochs,
                               rpp=s.rpp, lambda0=s.lambda0, seed=s.seed, **common)
        if title:
            self.history = result.history
        self.keep = result.keep

    def grid(self, layer: str) -> list[float]:
        """Knapsack candidates: the grid snapped to whole crossbars, each freeing a crossbar, at most
        ``max_ratio`` and leaving more than ``crossbar_threshold`` crossbars, ascending, no repeats."""
        dense = self.crossbars(layer, 0.0)
        out = set()
        for r in self.s.ratios:
            if r > self.s.max_ratio:
                continue
            gs = self.groups[layer].group_set
            snapped = 1.0 - self.full(layer, gs.n_keep(r)) / gs.n_groups  # the same crossbars, more groups
            xbars = self.crossbars(layer, snapped)
            if snapped > 0 and xbars < dense and xbars > self.s.crossbar_threshold:
                out.add(snapped)
        return sorted(out)

    def short_batches(self) -> list:
        """The same few batches for every sensitivity point and its reference (made once)."""
        if self._short is None:
            order = torch.randperm(len(self.train[0]), generator=torch.Generator().manual_seed(self.s.seed + 7919))
            n = min(len(order), self.s.sensitivity_batches * self.s.batch_size)
            batches = epoch_batches(self.train[0][order[:n]], self.train[1][order[:n]], self.s.batch_size, self.s.seed)
            self._short = batches if self.teacher is None else with_teacher(batches, self.teacher)
        return self._short

    def short_run(self, ratios: dict[str, float]) -> float:
        """Project to ``ratios``, fine-tune on :meth:`short_batches`, recalibrate BatchNorm, expected
        accuracy (:func:`expected_accuracy_of`); the model is restored."""
        state = copy.deepcopy(self.model.state_dict())
        sets, sparsity = self.targets(ratios)
        batches = self.short_batches()
        if batches:
            prune_lgd(self.model, sets, sparsity, batches, relax_epochs=0, finetune_epochs=1, lr=self.s.lr,
                      progress=False, loss_fn=self.loss, seed=self.s.seed)
        else:
            LGDPruner(self.model, sets, sparsity, t_relax=0)
        if self.s.recalibrate:
            recalibrate_batchnorm(self.model, [x for x, _ in batches or self.short_batches_for_statistics()])
        accuracy = expected_accuracy_of(self.model, *self.val)
        self.model.load_state_dict(state)
        return accuracy

    def short_batches_for_statistics(self) -> list:
        """Four batches of training images (BatchNorm statistics when no fine-tuning batches are set)."""
        n = min(len(self.train[0]), 4 * self.s.batch_size)
        return epoch_batches(self.train[0][:n], self.train[1][:n], self.s.batch_size, self.s.seed)

    def dense_run(self, *, epochs: int, relax_epochs: int = 0, judged: bool = False) -> float:
        """Accuracy (on the judge images if ``judged``) of the dense model after a pruning run's schedule
        (the reference of the same training budget); the model is restored."""
        state = self.save()
        self.run({layer: 0.0 for layer in self.groups}, epochs=epochs, relax_epochs=relax_epochs)
        accuracy = self.judged() if judged else self.evaluate()
        self.restore(state)
        return accuracy

    def joint(self, ratios: dict[str, float]) -> float:
        """The joint run of the knapsack search (from the current state); the accuracy on the judge images
        after it."""
        self.keep = {}
        if ratios:
            self.run(ratios, epochs=self.s.epochs, relax_epochs=self.s.relax_epochs, title=True)
        self.ratios = dict(ratios)
        return self.judged()

    def prune_step(self, layer: str, ratio: float) -> None:
        self.ratios[layer] = ratio
        self.run(dict(self.ratios), epochs=self.s.step_epochs)

    def save(self) -> _Saved:
        """The weights, the ratios, the run count (which seeds the next run's data order), the masks and the
        history of the last joint run."""
        return _Saved(copy.deepcopy(self.model.state_dict()), dict(self.ratios), self.runs, dict(self.keep),
                      list(self.history))

    def restore(self, state: _Saved) -> None:
        """Back to a :meth:`save`: a run from here sees the same data order as the first run from there."""
        self.model.load_state_dict(state.weights)
        self.ratios, self.runs = dict(state.ratios), state.runs
        self.keep, self.history = dict(state.keep), list(state.history)


#: The methods with prune_lgd's signature (``relax_epochs``, ``finetune_epochs``, ``seed``), by name.
JOINT_METHODS = {"admm": prune_admm, "group-l1": prune_group_l1, "gap": prune_gap}


def prune_classifier(model: torch.nn.Module, target, train: tuple[torch.Tensor, torch.Tensor],
                     val: tuple[torch.Tensor, torch.Tensor], settings: PruneSettings = PruneSettings(), *,
                     log: Callable[[str], None] | None = None) -> PruneOutcome:
    """Prune ``model`` in place for ``target``; ``train``/``val`` are ``(images, labels)`` tensors.

    ``from_scratch`` re-initialises the pruned layers before the final joint run (a search, if any, still
    runs on the given weights)."""
    s = settings
    if s.method not in METHODS:
        raise CompileError("XB003", f"unknown pruning method '{s.method}'", hint=f"use one of {', '.join(METHODS)}")
    if s.from_scratch and s.method != "gap":
        raise CompileError("XB003", f"from_scratch needs method 'gap' (got '{s.method}')",
                           hint="grow-and-prune is the method that trains a sparse model from scratch")
    example = train[0][:1]
    reorder = None
    if s.reorder:
        from .reorder_pass import reorder_model

        reorder = reorder_model(model, example, target, sparsity=s.reorder_sparsity, solver=s.reorder_solver,
                                time_limit_s=s.reorder_time_limit_s, seed=s.seed,
                                grain="crossbar" if s.grain == "crossbar" else "column",
                                strategy=s.pipeline)
    groups = plan_groups(model, example, target, pipeline=s.pipeline, grain=s.grain)
    if s.tie_depthwise and s.method in TIED_METHODS:
        groups = tie_depthwise(model, example, groups)
    prunable = groups[1:-1] if s.skip_first_last else groups
    judge = None
    if s.sparsity is None and s.search == "knapsack" and 0 < round(s.judge_fraction * len(val[0])) < len(val[0]):
        val, judge = holdout(*val, s.judge_fraction, s.seed + 1)
    pruner = _Pruner(model, prunable, train, val, s, judge)
    baseline = pruner.judged()
    search = knapsack = None
    model.train()
    layers = pruner.searched()
    if s.sparsity is None and s.search == "knapsack":
        callbacks = KnapsackCallbacks(pruner.crossbars, pruner.grid,
                                      lambda layer, r: pruner.short_run({layer: r}),
                                      lambda: pruner.short_run({}),
                                      lambda: pruner.dense_run(epochs=s.epochs, relax_epochs=s.relax_epochs,
                                                               judged=True),
                                      pruner.joint, save=pruner.save, restore=pruner.restore)
        knapsack = knapsack_search(layers, callbacks, baseline=baseline, max_drop=s.max_drop,
                                   budget=s.max_drop / (1.0 - s.recovery), backoff_tries=s.backoff_tries,
                                   grow_factor=s.grow_factor, time_limit_s=s.solver_time_limit_s, seed=s.seed,
                                   progress=s.progress)
        search = knapsack.as_search()
    elif s.sparsity is None:
        callbacks = SearchCallbacks(pruner.crossbars, pruner.next_ratio, pruner.prune_step, pruner.evaluate,
                                    save=pruner.save, restore=pruner.restore)
        reference = pruner.dense_run(epochs=s.step_epochs)
        search = network_search(layers, callbacks, max_drop=s.max_drop, max_ratio=s.max_ratio,
                                crossbar_threshold=s.crossbar_threshold, drop_from=s.drop_from, progress=s.progress,
                                reference=reference)
        ratios = {layer: r for layer, r in pruner.ratios.items() if r > 0}
        pruner.keep = {}  # the steps' masks (an undone step's too) are not the result
        if ratios:
            pruner.run(ratios, epochs=s.epochs, relax_epochs=s.relax_epochs, title=True)
    elif prunable:
        pruner.run({g.layer: s.sparsity for g in prunable}, epochs=s.epochs, relax_epochs=s.relax_epochs, title=True)
    keep = pruner.keep
    dead = (fold_dead_channels(model, train[0][:64], cost=lambda m: crossbars_read_off(m, groups))
            if s.fold_dead_channels and keep else [])
    if dead:  # the consumers lost input rows and packed spaces moved: read the groups off the weights
        keep = kept_groups(model, groups)
    leaders = {f: leader for leader, fs in pruner.followers.items() for f in fs}
    rows = []
    for g in groups:
        kept = keep.get(g.param)
        n_kept = g.group_set.n_groups if kept is None else int(kept.sum())
        xbars = g.dense_crossbars if kept is None else g.group_set.crossbars(kept)
        rows.append(LayerPruning(g.layer, g.param, g.group_set.n_groups, n_kept, g.dense_crossbars, xbars,
                                 leaders.get(g.layer)))
    model.eval()
    outcome = PruneOutcome(rows, baseline, pruner.judged(), search, knapsack, reorder, pruner.history, dead)
    if log is not None:
        log(outcome.table())
    return outcome


def recalibrate_batchnorm(model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``images`` (batches),
    in train mode without gradients; the model's mode and the layers' momenta are restored. A pruned
    layer shifts the statistics of the layers after it, and a few training steps update running
    statistics only by ``momentum`` each: without this the short sensitivity runs would charge a stale
    normalisation to the pruning."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not images:
        return
    was, momenta = model.training, [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():
        for x in images:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was)


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
