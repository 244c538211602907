"""Knapsack pruning search: sensitivity, allocation, joint run, budget judged after it, back-off.

Generic over callbacks (like :mod:`.search`):

1. ``reference()``: accuracy of the dense model after the steps each sensitivity point gets (a short
   fine-tune, BatchNorm re-estimation);
2. for every layer and candidate ratio, ``sensitivity(layer, ratio)``: that layer alone pruned from the
   dense model, the same steps, accuracy; the drop against 1. (made non-decreasing in the ratio,
   :func:`.allocate.monotone_drops`);
3. ``judge_reference()``: accuracy of the dense model after the same schedule as the joint run;
4. :func:`.allocate_solver.allocate` under ``budget`` (CP-SAT, exact DP fallback), ``joint(ratios)`` from the
   dense state, and the loss judged against 3. and ``max_drop``;
5. back-off, at most ``backoff_tries`` times while the loss exceeds ``max_drop``: restore the dense state,
   re-solve with the budget times ``backoff_factor`` and strictly fewer crossbars than the last try, rerun.
   The last try stands (``budget_met`` says whether it is within the budget);
6. grow, once, when the first try is judged with at least half of ``max_drop`` unused (``grow_factor`` > 1):
   save that try, restore the dense state, re-solve with the budget times ``grow_factor``; if that frees more
   crossbars, rerun, and keep the larger try only if it is judged no worse than the saved one (a judged
   loss is what says the allocation went too far), else restore the saved one (``standing`` indexes the
   try that stands).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..progress import progress as progress_of
from .allocate import Allocation, Choice, LayerSensitivity, monotone_drops
from .allocate_solver import allocate
from .search import LayerOutcome, SearchPoint, SearchResult

TryKind = Literal["first", "back-off", "grow"]
"""Why a joint run was tried: the first allocation, a back-off after a try over budget, or a grow after a
try with at least half the budget unused."""


def _no_state() -> None:
    return None


def _ignore(_state: Any) -> None:
    return None


@dataclass(frozen=True)
class KnapsackCallbacks:
    """What the knapsack search needs from the model, the mapping and the training routine."""

    crossbars: Callable[[str, float], int]
    """Crossbars of a layer at a group sparsity."""
    ratios: Callable[[str], Sequence[float]]
    """Candidate ratios of a layer (each should free a crossbar), ascending."""
    sensitivity: Callable[[str, float], float]
    """Accuracy with this layer alone pruned to the ratio (the flow: projection, BatchNorm re-estimated,
    expected accuracy); leaves the model dense."""
    reference: Callable[[], float]
    """The same measure of the dense model put through the same steps; leaves the model as it was."""
    judge_reference: Callable[[], float]
    """Accuracy of the dense model after the joint run's schedule; leaves the model as it was."""
    joint: Callable[[dict[str, float]], float]
    """Prune all layers of the ratios jointly (the full run); the accuracy after it."""
    save: Callable[[], Any] = _no_state
    restore: Callable[[Any], None] = _ignore


@dataclass(frozen=True)
class Attempt:
    """One joint run of the search."""

    allocation: Allocation
    accuracy: float
    """Accuracy after the joint run."""
    loss: float
    """``judge reference - accuracy`` (points)."""
    met: bool
    """``loss <= max_drop``."""
    kind: TryKind = "first"


@dataclass
class KnapsackResult:
    baseline_accuracy: float
    """The model's accuracy as given."""
    sensitivity_reference: float
    """The dense model after the sensitivity fine-tune (what each drop is measured against)."""
    judge_reference: float
    """The dense model after the joint run's schedule (what the final loss is measured against)."""
    max_drop: float
    layers: list[LayerSensitivity] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    standing: int = 0
    """Index into ``attempts`` of the try the model ends pruned by (the last, unless a grow was undone)."""

    @property
    def final(self) -> Attempt:
        """The try that stands."""
        return self.attempts[self.standing]

    @property
    def not_kept(self) -> list[Attempt]:
        """The tries the search moved away from (backed off from, or a grow it undid)."""
        return [a for i, a in enumerate(self.attempts) if i != self.standing]

    @property
    def budget_met(self) -> bool:
        return bool(self.attempts) and self.final.met

    def table(self) -> str:
        """Plain-text sensitivity table, the chosen ratio of each layer starred, and the tries."""
        chosen = dict(self.final.allocation.ratios) if self.attempts else {}
        lines = [f"{'layer':<24} {'ratio':>6} {'freed':>6} {'acc':>8} {'drop':>6}"]
        for layer in self.layers:
            for c in layer.choices[1:]:
                mark = " *" if chosen.get(layer.layer) == c.ratio else ""
                lines.append(f"{layer.layer:<24} {c.ratio:>6.3f} {c.freed:>6} {c.accuracy:>8.4g} {c.drop:>6.2f}{mark}")
        for i, a in enumerate(self.attempts):
            al = a.allocation
            stands = ", stands" if i == self.standing else ""
            lines.append(f"try {i} ({a.kind}{stands}): budget {al.budget:.3g} -> {al.freed} crossbars freed "
                         f"({al.method} {al.status}, gap {al.gap:.3g}); accuracy {a.accuracy:.4g}, loss {a.loss:.3g} "
                         f"({'within' if a.met else 'over'} {self.max_drop:.3g})")
        return "\n".join(lines)

    def as_search(self) -> SearchResult:
        """The sensitivity points as a :class:`SearchResult` (for the Pareto plot and ``prune.json``'s
        ``search``): one visited point per (layer, ratio), ``freed`` by that layer alone, ``accepted`` when
        the final allocation chose it; per layer the chosen ratio with stop ``allocated``."""
        result = SearchResult(self.baseline_accuracy)
        chosen = dict(self.final.allocation.ratios) if self.attempts else {}
        for layer in self.layers:
            for c in layer.choices[1:]:
                result.visited.append(SearchPoint(layer.layer, c.ratio, c.freed, c.accuracy, chosen.get(layer.layer)
                                                  == c.ratio))
            pick = next((c for c in layer.choices if c.ratio == chosen.get(layer.layer, 0.0)), layer.choices[0])
            accuracy = self.sensitivity_reference if pick.accuracy is None else pick.accuracy
            result.layers.append(LayerOutcome(layer.layer, pick.ratio, layer.dense_crossbars,
                                              layer.dense_crossbars - pick.freed, accuracy, len(layer.choices) - 1,
                                              "allocated"))
        result.accuracy = self.final.accuracy if self.attempts else None
        return result


def _say(enabled: bool, line: str) -> None:
    if enabled:
        print(line, file=sys.stderr, flush=True)


def measure_sensitivity(layers: Sequence[str], callbacks: KnapsackCallbacks, reference: float, *,
                        progress: bool = True) -> list[LayerSensitivity]:
    """Every layer's choices: ratio 0, then each candidate ratio with its freed crossbars and drop."""
    cb = callbacks
    grid = {layer: list(cb.ratios(layer)) for layer in layers}
    out = []
    with progress_of("sensitivity", sum(len(r) for r in grid.values()), enabled=progress) as advance:
        for layer in layers:
            dense = cb.crossbars(layer, 0.0)
            measured = []
            for ratio in grid[layer]:
                accuracy = cb.sensitivity(layer, ratio)
                measured.append(Choice(ratio, dense - cb.crossbars(layer, ratio), reference - accuracy, accuracy))
                advance(info=f"{layer} ratio {ratio:.3f} accuracy {accuracy:.4g}")
            out.append(LayerSensitivity(layer, dense, (Choice(0.0, 0, 0.0), *monotone_drops(measured))))
    return out


def knapsack_search(layers: Sequence[str], callbacks: KnapsackCallbacks, *, baseline: float, max_drop: float,
                    budget: float | None = None, backoff_tries: int = 2, backoff_factor: float = 0.5,
                    grow_factor: float = 2.0, time_limit_s: float = 5.0, seed: int = 0,
                    progress: bool = True) -> KnapsackResult:
    """Run the search (module docstring); the model ends pruned by the standing try's allocation.

    ``budget`` (default ``max_drop``) is what the first allocation may spend in summed sensitivity drops;
    the loss after each joint run is judged against ``max_drop``."""
    if not 0.0 <= backoff_factor < 1.0:
        raise ValueError(f"backoff_factor must lie in [0, 1), got {backoff_factor}")
    if grow_factor < 1.0:
        raise ValueError(f"grow_factor must be at least 1 (1: no grow), got {grow_factor}")
    cb = callbacks
    reference = cb.reference()
    sens = measure_sensitivity(layers, cb, reference, progress=progress)
    judge = cb.judge_reference()
    result = KnapsackResult(baseline, reference, judge, max_drop, sens)
    state = cb.save()
    budget = max_drop if budget is None else budget
    allocation = allocate(sens, budget, time_limit_s=time_limit_s, seed=seed)
    for attempt in range(backoff_tries + 1):
        if attempt:
            cb.restore(state)
        _joint(result, cb, allocation, "back-off" if attempt else "first", progress)
        if result.final.met or allocation.freed == 0 or attempt == backoff_tries:
            break
        budget *= backoff_factor
        allocation = allocate(sens, budget, max_freed=allocation.freed - 1, time_limit_s=time_limit_s, seed=seed)
    first = result.final
    if grow_factor > 1.0 and len(result.attempts) == 1 and first.loss <= max_drop / 2:
        grown = allocate(sens, budget * grow_factor, time_limit_s=time_limit_s, seed=seed)
        if grown.freed <= allocation.freed:
            _say(progress, f"no grow: a budget of {grown.budget:.3g} points frees no more crossbars")
        else:
            kept = cb.save()
            cb.restore(state)
            _joint(result, cb, grown, "grow", progress)
            if (loss := result.final.loss) > first.loss:
                cb.restore(kept)
                result.standing = 0
                _say(progress, f"grow undone (loss {loss:.3g} over the first try's {first.loss:.3g}): back to try 0 "
                               f"({allocation.freed} crossbars freed)")
    return result


def _joint(result: KnapsackResult, cb: KnapsackCallbacks, allocation: Allocation, kind: TryKind,
           progress: bool) -> None:
    """One joint run of ``allocation`` from the current state, judged and appended as the standing try."""
    _say(progress, f"allocation ({kind}, budget {allocation.budget:.3g} points): {allocation.freed} crossbars freed, "
                   f"predicted drop {allocation.drop:.3g} ({allocation.method} {allocation.status})")
    accuracy = cb.joint(allocation.pruned())
    loss = result.judge_reference - accuracy
    met = loss <= result.max_drop
    result.attempts.append(Attempt(allocation, accuracy, loss, met, kind))
    result.standing = len(result.attempts) - 1
    _say(progress, f"joint run: accuracy {accuracy:.4g}, loss {loss:.3g} against {result.judge_reference:.4g} "
                   f"({'within' if met else 'over'} the budget {result.max_drop:.3g})")
