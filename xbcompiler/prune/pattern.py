"""Pattern pruning (PCNN, Tan et al. DAC 2020; background §4.3) for fully-folded crossbars.

Every ``kh x kw`` kernel ``W[o, i]`` of a pruned conv layer keeps exactly ``n`` weights, at the positions of
one pattern of a small set ``P`` (the Sparsity Pattern Mask names which). [P]: equal non-zeros per kernel,
patterns from a small per-layer set. [E] (the source's selection procedure is not available):

- the set: the ``|P|`` most frequent top-``n`` magnitude masks over all kernels of that shape of the
  pruned layers (:func:`extract_patterns`; ties to the lower mask code);
- the projection onto "every kernel in a pattern of ``P``" keeps, per kernel, the pattern holding the most
  energy ``sum w^2`` (:func:`project_patterns`), which is the exact Euclidean projection: the distance to
  a pattern's subspace is the energy outside it. With ``shared`` the kernels of one sharing group
  (the output channels one crossbar holds, for one input channel) take one pattern together, the one
  with the most energy summed over the group: again exact, over the group's kernels jointly;
- training: ADMM with that projection (:class:`PatternConstraint`, the Z-update), hard projection, masked
  fine-tuning (:func:`xbcompiler.prune.admm.train_admm`);
- crossbars: a crossbar row ``(i, dy, dx)`` leaves a crossbar only when all its columns have a zero there,
  so rows per input channel drop from ``kh kw`` to ``n`` only where the columns sharing a crossbar share
  the pattern of that input channel. ``shared=True`` (default) trains for that: the output channels are
  grouped into crossbar tiles by their magnitude patterns first (:func:`sharing_tiles`, the same greedy
  grouping ``group-pattern-columns`` applies at compile time), and each (tile, input channel) takes one
  pattern. ``shared=False`` is PCNN's per-kernel choice; the compiler then groups what coincides.

Compile a pruned model with :data:`PATTERN_PIPELINE` (``fully-folded-pattern``: map fully folded, then
``group-pattern-columns`` groups columns and compacts rows, writing the pattern table and per-crossbar SPM).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .admm import train_admm
from .flow import (
    LayerPruning,
    PruneOutcome,
    accuracy_of,
    distillation_loss,
    epoch_batches,
    with_teacher,
)
from .train import run_schedule

#: The named pipeline that compiles a pattern-pruned model (xbcompiler/pipeline/named.py).
PATTERN_PIPELINE = "fully-folded-pattern"


@dataclass(frozen=True)
class PatternSettings:
    """Options of :func:`prune_patterns`."""

    nonzeros: tuple[int, ...] = (4, 3, 2)
    """Non-zeros per kernel, tried in order; the fewest whose accuracy is within ``max_drop`` wins."""
    n_patterns: int = 8
    """Patterns in the set (``|P|``)."""
    max_drop: float = 1.0
    """Accuracy budget in points, against the dense model given the same training schedule."""
    admm_epochs: int = 5
    finetune_epochs: int = 10
    lr: float = 0.01
    rho: float = 1e-3
    skip_first_last: bool = True
    """Leave the first and the last crossbar layer dense."""
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    shared: bool = True
    """The kernels of the output channels one crossbar holds share their pattern per input channel
    (crossbar-aware; False: PCNN's free per-kernel choice)."""
    distill: float = 0.5
    """Weight of knowledge distillation from the dense model (0: cross-entropy on labels only)."""
    temperature: float = 4.0


@dataclass(frozen=True)
class PatternSet:
    """Patterns of ``kernel``-shaped kernels: ``masks`` ``bool [P, kh * kw]``, each with ``n`` positions."""

    kernel: tuple[int, int]
    masks: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.masks[0].sum()) if len(self.masks) else 0

    def positions(self) -> list[tuple[int, ...]]:
        """Each pattern's kernel positions ``dy * kw + dx``, ascending."""
        return [tuple(torch.nonzero(m).flatten().tolist()) for m in self.masks]


def topn_masks(weight: torch.Tensor, n: int) -> torch.Tensor:
    """``bool [O, I, kh * kw]``: the ``n`` largest-magnitude positions of each kernel (ties to the lower position)."""
    flat = weight.detach().reshape(weight.shape[0], weight.shape[1], -1).abs()
    order = torch.sort(-flat, dim=-1, stable=True).indices[..., :n]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, order, True)


def mask_codes(masks: torch.Tensor) -> torch.Tensor:
    """``int64`` code ``sum 2**position`` of each mask (last dimension the kernel positions)."""
    return (masks.long() << torch.arange(masks.shape[-1])).sum(-1)


def extract_patterns(weights: Sequence[torch.Tensor], n: int, n_patterns: int) -> PatternSet:
    """The ``n_patterns`` most frequent top-``n`` masks over every kernel of ``weights`` (all of one kernel
    shape), most frequent first, ties to the lower code."""
    kernel = tuple(weights[0].shape[2:]) if weights[0].dim() == 4 else (1, weights[0].shape[-1])
    kk = kernel[0] * kernel[1]
    if not 1 <= n <= kk:
        raise ValueError(f"{n} non-zeros do not fit a {kernel[0]}x{kernel[1]} kernel")
    counts: Counter = Counter()
    for w in weights:
        counts.update(mask_codes(topn_masks(w, n)).flatten().tolist())
    best = sorted(counts, key=lambda c: (-counts[c], c))[:n_patterns]
    masks = torch.tensor([[bool(c >> p & 1) for p in range(kk)] for c in best], dtype=torch.bool)
    return PatternSet(kernel, masks.reshape(len(best), kk))


def pattern_energy(weight: torch.Tensor, patterns: PatternSet, share: torch.Tensor | None = None) -> torch.Tensor:
    """Energy each pattern keeps: ``[O, I, P]``, or ``[T, I, P]`` summed over the output channels of each sharing
    group when ``share`` (``int64 [O]``, the group of each output channel, ``0..T-1``) is given."""
    sq = weight.detach().reshape(weight.shape[0], weight.shape[1], -1).double() ** 2
    energy = sq @ patterns.masks.double().T
    if share is None:
        return energy
    out = torch.zeros((int(share.max()) + 1, *energy.shape[1:]), dtype=energy.dtype)
    return out.index_add_(0, share, energy)


def pattern_ids(weight: torch.Tensor, patterns: PatternSet, share: torch.Tensor | None = None) -> torch.Tensor:
    """``int64 [O, I]``: the pattern of the projection of each kernel (the first of equal energies)."""
    ids = pattern_energy(weight, patterns, share).argmax(-1)
    return ids if share is None else ids[share]


def pattern_mask(weight: torch.Tensor, patterns: PatternSet, share: torch.Tensor | None = None) -> torch.Tensor:
    """The boolean mask (``weight``'s shape) of the projection of ``weight`` onto the pattern set."""
    return patterns.masks[pattern_ids(weight, patterns, share)].reshape(weight.shape)


def project_patterns(weight: torch.Tensor, patterns: PatternSet, share: torch.Tensor | None = None) -> torch.Tensor:
    """The exact Euclidean projection of ``weight`` onto "every kernel (every sharing group's kernels) in one
    pattern of the set": keep the pattern holding the most energy. ``weight`` is not modified."""
    return weight.detach() * pattern_mask(weight, patterns, share).to(weight.dtype)


def group_columns(masks: np.ndarray, cols: int) -> list[list[int]]:
    """Output channels in tiles of at most ``cols`` (the columns of a crossbar), ascending within a tile.

    ``masks`` ``bool [N, C_in, kk]`` are the kernels' supports (or patterns). Greedy: a tile starts at the
    lowest free channel and adds, one at a time, the free channel that adds the fewest rows (the sum over
    input channels of the size of the union), ties to the lower index. Channels with equal masks end up
    together, so weights trained with shared patterns (:func:`sharing_tiles`) get back their tiles.
    """
    free = np.ones(len(masks), dtype=bool)
    tiles = []
    while free.any():
        seed = int(np.flatnonzero(free)[0])
        free[seed] = False
        tile, union = [seed], masks[seed].copy()
        base = int(union.sum())
        while len(tile) < cols and free.any():
            cand = np.flatnonzero(free)
            if len(cand) <= cols - len(tile):  # every free channel fits: no choice left
                chosen = cand
            else:
                grow = (union[None] | masks[cand]).sum((1, 2)) - base
                chosen = cand[[int(np.argmin(grow))]]
            for o in chosen.tolist():
                tile.append(o)
                free[o] = False
                union |= masks[o]
            base = int(union.sum())
        tiles.append(sorted(tile))
    return tiles


def sharing_tiles(weight: torch.Tensor, patterns: PatternSet, cols: int) -> torch.Tensor:
    """``int64 [O]``: output channels grouped ``cols`` per crossbar tile (:func:`group_columns`) by the patterns
    of their per-kernel projections: the tile of each output channel."""
    masks = patterns.masks[pattern_ids(weight, patterns)].numpy()  # [O, I, kk]
    tile = np.zeros(len(masks), dtype=np.int64)
    for t, members in enumerate(group_columns(masks, cols)):
        tile[members] = t
    return torch.from_numpy(tile)


class PatternConstraint:
    """The pattern set of each pruned parameter as an ADMM constraint (an :class:`.admm.Constraint`)."""

    def __init__(self, patterns: dict[str, PatternSet], share: dict[str, torch.Tensor] | None = None):
        self.patterns = dict(patterns)
        self.share = dict(share or {})

    def project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return project_patterns(w, self.patterns[name], self.share.get(name))

    def freeze(self, name: str, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        mask = pattern_mask(w, self.patterns[name], self.share.get(name)).to(w.dtype)
        return lambda v: v * mask

    def metrics(self) -> dict:
        return {}


def prunable_convs(model: torch.nn.Module, example: torch.Tensor, target, skip_first_last: bool = True):
    """``(layer, param, dense crossbars)`` of the conv layers pattern pruning applies to (ungrouped, a kernel of
    more than one position, a module parameter), from the fully-folded compile of ``target``."""
    from ..driver import compile

    compiled = compile(model, (example,), target, "fully-folded")
    params = dict(model.named_parameters())
    layers = [compiled.program.matrices[n.target] for n in compiled.program.nodes if n.op == "xbar"]
    chosen = layers[1:-1] if skip_first_last else layers
    out = []
    for m in chosen:
        param = f"{m.source}.weight"
        kh, kw = m.geometry.kernel
        if m.kind in ("conv1d", "conv2d") and m.geometry.groups == 1 and kh * kw > 1 and param in params \
                and params[param].dim() in (3, 4):
            out.append((m.name, param, compiled.program.plans[m.name].crossbars))
    return out, {m.name: compiled.program.plans[m.name].crossbars for m in layers}


class _Dense:
    """A no-op schedule: the dense reference trained with the same epochs."""

    frozen = True

    def epoch_start(self, epoch: int) -> None: ...

    def sparse(self):
        return nullcontext()

    def step(self) -> None: ...

    def finish(self) -> None: ...

    def keep(self) -> dict:
        return {}


def prune_patterns(model: torch.nn.Module, target, train: tuple[torch.Tensor, torch.Tensor],
                   val: tuple[torch.Tensor, torch.Tensor], settings: PatternSettings = PatternSettings(), *,
                   log: Callable[[str], None] | None = None) -> PruneOutcome:
    """Pattern-prune ``model`` in place for ``target`` (fully-folded); ``train``/``val`` are ``(images, labels)``.

    For each ``n`` of ``settings.nonzeros`` in order, from the same starting weights: extract the pattern
    set, ADMM, hard projection and masked fine-tuning; the fewest non-zeros whose validation accuracy is
    within ``max_drop`` of the dense model trained with the same schedule wins (none: the model is left
    as it was). Crossbars per layer are counted from the netlist compiled with :data:`PATTERN_PIPELINE`.
    """
    from ..driver import compile
    from ..target import load_target

    s = settings
    target = load_target(target) if isinstance(target, str) else target
    say = log or (lambda _: None)
    example = train[0][:1]
    convs, dense_counts = prunable_convs(model, example, target, s.skip_first_last)
    params = dict(model.named_parameters())
    teacher = copy.deepcopy(model).eval() if s.distill > 0 else None
    runs = iter(range(1, 1 << 30))

    def loader():
        batches = epoch_batches(*train, s.batch_size, s.seed * 1009 + next(runs))
        return batches if teacher is None else with_teacher(batches, teacher)

    def loss(logits, y):
        return F.cross_entropy(logits, y) if teacher is None else distillation_loss(logits, *y, s.distill,
                                                                                  s.temperature)

    def evaluate(m):
        return accuracy_of(m, *val)

    start = copy.deepcopy(model.state_dict())
    baseline = evaluate(model)
    torch.manual_seed(s.seed)
    run_schedule(model, _Dense(), [], loader(), epochs=s.admm_epochs + s.finetune_epochs, lr=s.lr, loss_fn=loss,
                 evaluate=evaluate, progress=False, keep_best=False)
    reference = evaluate(model)
    say(f"dense: {baseline:.2f} % before, {reference:.2f} % after the same {s.admm_epochs + s.finetune_epochs} epochs")
    best = None
    for n in s.nonzeros:
        model.load_state_dict(start)
        torch.manual_seed(s.seed)
        by_kernel: dict[tuple, list[str]] = {}
        for _, param, _ in convs:
            by_kernel.setdefault(tuple(params[param].shape[2:]), []).append(param)
        patterns, share = {}, {}
        for kernel, names in by_kernel.items():
            if n >= int(np.prod(kernel)):
                continue
            pset = extract_patterns([params[p] for p in names], n, s.n_patterns)
            for p in names:
                patterns[p] = pset
                if s.shared:
                    share[p] = sharing_tiles(params[p], pset, target.logical_cols)
        if not patterns:
            continue
        result, _ = train_admm(model, {p: params[p] for p in patterns}, PatternConstraint(patterns, share), loader(),
                               admm_epochs=s.admm_epochs, finetune_epochs=s.finetune_epochs, lr=s.lr, rho=s.rho,
                               loss_fn=loss, evaluate=evaluate, progress=s.progress, title=f"pattern n={n}")
        accuracy = evaluate(model)
        ok = reference - accuracy <= s.max_drop
        say(f"n={n}: {accuracy:.2f} % ({'within' if ok else 'over'} {s.max_drop} points of {reference:.2f} %)")
        if not ok:
            break
        best = (n, copy.deepcopy(model.state_dict()), accuracy, result.history, patterns)
    if best is None:
        model.load_state_dict(start)
        say("no pattern size within the budget: the model is left dense")
        history, chosen_n, pruned_params = [], None, {}
    else:
        chosen_n, state, _, history, pruned_params = best
        model.load_state_dict(state)
    model.eval()
    counts = dense_counts
    if pruned_params:
        compiled = compile(model, (example,), target, PATTERN_PIPELINE)
        counts = {layer.name: layer.crossbars for layer in compiled.netlist.layers}
    rows = []
    for layer, param, dense in convs:
        size = params[param].numel()
        kk = int(np.prod(params[param].shape[2:]))
        kept = size // kk * chosen_n if param in pruned_params else size
        rows.append(LayerPruning(layer, param, size, kept, dense, counts[layer]))
    return PruneOutcome(rows, baseline, evaluate(model), history=history)
