"""Network-level pruning search (background §1.7), generic over callbacks.

Layer by layer, the ratio steps to the next value that frees a whole crossbar; each step prunes and
evaluates. A layer stops when the next step would exceed the per-layer ratio limit, would leave at
most ``crossbar_threshold`` crossbars (both checked before pruning, from the crossbar callbacks), or
drops the accuracy by more than ``max_drop`` (then the step is undone). A joint fine-tune follows.
Every evaluated step, accepted or undone, is kept as a :class:`SearchPoint` (the Pareto plot shows them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _no_state() -> None:
    return None


def _ignore(_state: Any) -> None:
    return None


@dataclass(frozen=True)
class SearchCallbacks:
    """What the search needs from the model, the mapping and the training routine."""

    crossbars: Callable[[str, float], int]
    """Crossbars of a layer at a group sparsity (e.g. :meth:`CrossbarCurve.crossbars`)."""
    next_ratio: Callable[[str, float], float | None]
    """Smallest sparsity above the given one that frees a crossbar, or None
    (e.g. :meth:`CrossbarCurve.next_ratio`)."""
    prune: Callable[[str, float], None]
    """Prune the layer to the sparsity (e.g. a short :func:`prune_lgd` run), keeping earlier layers' masks."""
    evaluate: Callable[[], float]
    """Accuracy of the current model on a held-out split (same unit as ``max_drop``)."""
    save: Callable[[], Any] = _no_state
    """Snapshot of the model state, restored when a step is rejected."""
    restore: Callable[[Any], None] = _ignore
    finetune: Callable[[], None] | None = None
    """Joint fine-tune of all layers with frozen masks, after the search."""


@dataclass(frozen=True)
class LayerOutcome:
    """One row of the search table."""

    layer: str
    ratio: float
    crossbars_dense: int
    crossbars: int
    accuracy: float
    steps: int
    """Accepted steps."""
    stop: str
    """``accuracy``, ``ratio-limit``, ``crossbars`` or ``exhausted`` (no step frees another crossbar)."""


@dataclass(frozen=True)
class SearchPoint:
    """One evaluated step of the search."""

    layer: str
    ratio: float
    freed: int
    """Crossbars freed at this step over all searched layers (this one at ``ratio``, the earlier ones at the
    ratios they kept), from the crossbar callback."""
    accuracy: float
    accepted: bool
    """False: the accuracy dropped too far and the step was undone."""


@dataclass
class SearchResult:
    baseline_accuracy: float
    layers: list[LayerOutcome] = field(default_factory=list)
    visited: list[SearchPoint] = field(default_factory=list)
    """Every evaluated step in order, accepted or undone."""
    accuracy: float | None = None
    """After the joint fine-tune (or after the last layer if there is none)."""
    reference_accuracy: float | None = None
    """What the drops were measured from at the start (the caller's ``reference``, else the baseline)."""

    def table(self) -> str:
        """Plain-text per-layer table."""
        lines = [f"{'layer':<24} {'ratio':>6} {'xbars':>6} {'dense':>6} {'acc':>8} {'steps':>5}  stop"]
        lines += [f"{r.layer:<24} {r.ratio:>6.3f} {r.crossbars:>6} {r.crossbars_dense:>6} {r.accuracy:>8.4g} "
                  f"{r.steps:>5}  {r.stop}" for r in self.layers]
        return "\n".join(lines)


def _say(enabled: bool, line: str) -> None:
    """One whole line on stderr (never wrapped or cut, terminal or not)."""
    if enabled:
        print(line, file=sys.stderr, flush=True)


def network_search(layers: Sequence[str], callbacks: SearchCallbacks, *, max_drop: float = 0.5,
                   max_ratio: float = 0.9, crossbar_threshold: int = 1, drop_from: str = "layer",
                   progress: bool = True, reference: float | None = None) -> SearchResult:
    """Run the search over ``layers`` in order (callers skip the first conv and the classifier).

    ``drop_from="layer"`` measures the accuracy drop from the accuracy at the start of each layer
    (``max_drop`` is a per-layer threshold, background §1.7); ``"network"`` from the dense baseline.
    ``reference`` replaces the baseline as that starting accuracy: the dense model's accuracy after the
    same training as one step (a step's accuracy compared with a converged model's would charge the
    short run's own loss to the pruning).
    """
    if drop_from not in ("layer", "network"):
        raise ValueError(f"drop_from must be 'layer' or 'network', got {drop_from!r}")
    cb = callbacks
    result = SearchResult(cb.evaluate())
    result.reference_accuracy = result.baseline_accuracy if reference is None else reference
    current, freed = result.reference_accuracy, 0
    for layer in layers:
        start = current if drop_from == "layer" else result.reference_accuracy
        ratio, steps, stop = 0.0, 0, "exhausted"
        dense = cb.crossbars(layer, 0.0)
        while True:
            nxt = cb.next_ratio(layer, ratio)
            if nxt is None:
                break
            if nxt > max_ratio:
                stop = "ratio-limit"
                break
            if cb.crossbars(layer, nxt) <= crossbar_threshold:
                stop = "crossbars"
                break
            state = cb.save()
            cb.prune(layer, nxt)
            accuracy = cb.evaluate()
            _say(progress, f"search {layer}: ratio {nxt:.3f} crossbars {cb.crossbars(layer, nxt)} "
                           f"accuracy {accuracy:.4g}")
            accepted = start - accuracy <= max_drop
            result.visited.append(SearchPoint(layer, nxt, freed + dense - cb.crossbars(layer, nxt), accuracy,
                                              accepted))
            if not accepted:
                cb.restore(state)
                stop = "accuracy"
                break
            ratio, current, steps = nxt, accuracy, steps + 1
        result.layers.append(LayerOutcome(layer, ratio, dense, cb.crossbars(layer, ratio), current, steps, stop))
        freed += dense - cb.crossbars(layer, ratio)
        _say(progress, f"search {layer}: stop ({stop}) at ratio {ratio:.3f}")
    if cb.finetune is not None:
        cb.finetune()
        current = cb.evaluate()
    result.accuracy = current
    return result
