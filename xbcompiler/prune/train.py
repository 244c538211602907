"""The training loop the pruning schedules share, with its progress on stderr (:mod:`xbcompiler.progress`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from ..progress import progress as progress_of
from .groups import GroupSet, tie_keep


class Schedule(Protocol):
    """What :func:`run_schedule` drives: LGD/RPP (:mod:`.lgd`) or zerorize-recover (:mod:`.zerorize`)."""

    frozen: bool

    # optional: ``phase`` (the history's phase name before freezing, default "prune") and ``metrics()``
    # (extra per-epoch history values, shown on the progress line)
    def epoch_start(self, epoch: int) -> None: ...
    def sparse(self) -> AbstractContextManager: ...
    def step(self) -> None: ...
    def finish(self) -> None: ...
    def keep(self) -> dict[str, torch.Tensor]: ...


@dataclass
class PruneResult:
    """Final masks and the per-epoch history of a pruning run."""

    masks: dict[str, torch.Tensor]
    """Parameter name -> boolean mask of the parameter's shape (True = kept)."""
    keep: dict[str, torch.Tensor]
    """Parameter name -> boolean keep vector over its groups."""
    history: list[dict] = field(default_factory=list)
    """Per epoch: ``epoch``, ``phase``, ``loss``, ``accuracy`` (or None), ``sparsity`` (all groups)."""


def group_sparsity(group_sets: Iterable[GroupSet], keep: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned groups over all group sets."""
    total = sum(gs.n_groups for gs in group_sets)
    kept = sum(int(k.sum()) for k in keep.values())
    return 1.0 - kept / total if total else 0.0


def run_schedule(model: torch.nn.Module, schedule: Schedule, group_sets: list[GroupSet], loader, *,
                 epochs: int, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 loss_fn: Callable = F.cross_entropy,
                 evaluate: Callable[[torch.nn.Module], float] | None = None,
                 progress: bool = True, title: str = "prune", cosine: bool = True,
                 keep_best: bool = True) -> PruneResult:
    """SGD over ``loader`` (batches ``(x, y)``) for ``epochs`` epochs under ``schedule``; exact masks at
    the end.

    ``evaluate(model)`` (accuracy, any unit, higher is better) runs once per epoch in eval mode, in sparse
    space. ``cosine`` anneals the learning rate from ``lr`` to 0 over all iterations. ``keep_best``
    (with ``evaluate``) restores, at the end, the weights of the best-scoring epoch among those with
    frozen masks (the masks, so the sparsity, are the same in all of them).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * len(loader))) if cosine else None
    best: tuple[float, dict] | None = None
    history = []
    with progress_of(title, epochs * len(loader), enabled=progress) as advance:
        for epoch in range(epochs):
            schedule.epoch_start(epoch)
            phase = "finetune" if schedule.frozen else getattr(schedule, "phase", "prune")
            model.train()
            total, batches = 0.0, 0
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                with schedule.sparse():
                    loss = loss_fn(model(x), y)
                    loss.backward()
                optimizer.step()
                if annealing is not None:
                    annealing.step()
                schedule.step()
                total, batches = total + loss.item(), batches + 1
                advance()
            accuracy = _evaluate(model, schedule, evaluate)
            row = {"epoch": epoch, "phase": phase, "loss": total / max(batches, 1), "accuracy": accuracy,
                   "sparsity": group_sparsity(group_sets, schedule.keep())}
            extra = schedule.metrics() if hasattr(schedule, "metrics") else {}
            row.update(extra)
            history.append(row)
            acc = "" if accuracy is None else f" acc {accuracy:.4g}"
            more = "".join(f" {k} {v}" for k, v in extra.items())
            info = f"ep {epoch} {phase} loss {row['loss']:.4g}{acc} sparsity {row['sparsity']:.3f}{more}"
            advance(0, info=info)
            if keep_best and phase == "finetune" and accuracy is not None and (best is None or accuracy >= best[0]):
                best = (accuracy, copy.deepcopy(model.state_dict()))
    if best is not None and history[-1]["accuracy"] < best[0]:
        model.load_state_dict(best[1])
    schedule.finish()
    keep = schedule.keep()
    masks = {gs.param: gs.mask(keep[gs.param]) for gs in group_sets}
    return PruneResult(masks, keep, history)


def _evaluate(model, schedule: Schedule, evaluate) -> float | None:
    if evaluate is None:
        return None
    model.eval()
    with torch.no_grad(), schedule.sparse():
        value = float(evaluate(model))
    model.train()
    return value


class MaskedParams:
    """The parameters named by ``group_sets``, one keep vector each, and the masks derived from them."""

    def __init__(self, model: torch.nn.Module, group_sets: list[GroupSet]):
        self.group_sets = list(group_sets)
        self.params = resolve(model, self.group_sets)
        self._set_keep([torch.ones(gs.n_groups, dtype=torch.bool) for gs in self.group_sets])

    def keep(self) -> dict[str, torch.Tensor]:
        """Current keep vector of every group set."""
        return {gs.param: k.clone() for gs, k in zip(self.group_sets, self._keep)}

    def norms(self) -> list[torch.Tensor]:
        return [gs.norms(w) for gs, w in zip(self.group_sets, self.params)]

    def _set_keep(self, keep: list[torch.Tensor]) -> None:
        """Set the keep vectors (a follower's is derived from its leader's, :func:`tie_keep`) and masks."""
        keep = tie_keep(self.group_sets, keep)
        self._keep = keep
        self._masks = [gs.mask(k).to(w) for gs, w, k in zip(self.group_sets, self.params, keep)]

    def _quiet_dead_channels(self) -> None:
        """Zero the gradient of every output channel whose weights are all masked.

        Such a channel computes a constant, so a BatchNorm after it sees zero variance and scales the
        channel's gradient by ``1 / sqrt(eps)``: the straight-through update would throw its masked
        weights far off in one step (measured: group norms 20x the kept ones after one epoch).
        """
        with torch.no_grad():
            for w, m in zip(self.params, self._masks):
                if w.grad is not None:
                    w.grad[m.reshape(len(m), -1).sum(1) == 0] = 0

    def _apply_masks(self) -> None:
        with torch.no_grad():
            for w, m in zip(self.params, self._masks):
                w.mul_(m)


def resolve(model: torch.nn.Module, group_sets: list[GroupSet]) -> list[torch.nn.Parameter]:
    """The parameters the group sets name, one group set per parameter."""
    params = dict(model.named_parameters())
    names = [gs.param for gs in group_sets]
    if len(set(names)) != len(names):
        raise ValueError("one group set per parameter")
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"no parameters named {missing}")
    for gs in group_sets:
        if tuple(gs.labels.shape) != tuple(params[gs.param].shape):
            raise ValueError(f"group set of '{gs.param}' has shape {tuple(gs.labels.shape)}, "
                             f"the parameter {tuple(params[gs.param].shape)}")
    return [params[n] for n in names]
