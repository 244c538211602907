"""Scheduled grow-and-prune (GaP; Ma et al., "Effective model sparsification by scheduled grow-and-prune
methods", ICLR 2022; background §4.7): structured sparsity without a dense pre-trained model.

The group sets (one per layer) are split into ``K`` contiguous parts (``parts``, default 4; fewer when there
are fewer layers). Every layer starts pruned to its target by group norm (:class:`.admm.GroupConstraint`,
the exact projection onto ``s`` groups). Cycle ``c`` (``cycle_epochs`` epochs each, over the first
``relax_epochs`` epochs) *grows* part ``c mod K`` dense, i.e. lifts its masks so its pruned groups train
again from zero, while every other layer trains under its mask; at the end of the cycle the part is
*pruned back* to its target by group norm and the next part grows. After the last cycle the masks freeze
for ``finetune_epochs`` of masked fine-tuning: the final group sparsity is exact. Every part grows once
when ``relax_epochs >= K * cycle_epochs``.

``from_scratch=True`` re-initialises the pruned layers (``module.reset_parameters()``, seeded) first,
so no dense training is needed beforehand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .admm import GroupConstraint
from .groups import GroupSet
from .train import PruneResult, resolve, run_schedule


@dataclass(frozen=True)
class GapCycle:
    """One grow-and-prune cycle of one part."""

    cycle: int
    part: int
    params: tuple[str, ...]
    """The parameters grown dense in this cycle."""
    nonzero: dict[str, int]
    """Parameter -> groups with a nonzero entry at the end of the cycle, before the prune-back."""
    regrown: dict[str, int]
    """Parameter -> groups kept after the prune-back that were pruned when the cycle started."""


class GapSchedule:
    """The grow-and-prune schedule (a :class:`.train.Schedule`); :attr:`cycles` records every cycle."""

    phase = "gap"

    def __init__(self, model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], *,
                 relax_epochs: int, parts: int = 4, cycle_epochs: int = 1):
        if relax_epochs < 0 or parts < 1 or cycle_epochs < 1:
            raise ValueError("need relax_epochs >= 0, parts >= 1 and cycle_epochs >= 1")
        self.group_sets = list(group_sets)
        self.params = resolve(model, self.group_sets)
        self.constraint = GroupConstraint(self.group_sets, sparsity)
        self.relax_epochs, self.cycle_epochs = relax_epochs, cycle_epochs
        k = min(parts, len(self.group_sets))
        split = np.array_split(np.arange(len(self.group_sets)), k) if k else []
        self.parts: list[list[int]] = [[int(i) for i in p] for p in split]
        """Indices into the group sets, per part (contiguous layers)."""
        self.grown: int | None = None
        """The part that is dense now (None: none)."""
        self.cycles: list[GapCycle] = []
        self._start_keep: list[torch.Tensor] = []
        self._keep = [self._project(i) for i in range(len(self.group_sets))]
        self._masks = [gs.mask(keep).to(w) for gs, w, keep in zip(self.group_sets, self.params, self._keep)]
        self.frozen = False
        self._apply()

    def _project(self, i: int) -> torch.Tensor:
        return self.constraint.keep_of(self.group_sets[i].param, self.params[i].detach())

    def _masked(self) -> list[int]:
        dense = set(self.parts[self.grown]) if self.grown is not None else set()
        return [i for i in range(len(self.group_sets)) if i not in dense]

    def epoch_start(self, epoch: int) -> None:
        if self.frozen:
            return
        if epoch >= self.relax_epochs:
            self.finish()
        elif epoch % self.cycle_epochs == 0 and self.parts:
            self._prune_back()
            self._grow(epoch // self.cycle_epochs)

    def _grow(self, cycle: int) -> None:
        self.grown = cycle % len(self.parts)
        self._cycle = cycle
        self._start_keep = [self._keep[i].clone() for i in self.parts[self.grown]]

    def _prune_back(self) -> None:
        """Prune the grown part back to its target by group norm (nothing if no part is grown)."""
        if self.grown is None:
            return
        part = self.parts[self.grown]
        nonzero, regrown = {}, {}
        for i, before in zip(part, self._start_keep):
            gs, w = self.group_sets[i], self.params[i]
            nonzero[gs.param] = int((gs.norms(w) > 0).sum())
            keep = self._project(i)
            regrown[gs.param] = int((keep & ~before).sum())
            self._keep[i] = keep
            self._masks[i] = gs.mask(keep).to(w)
        self.cycles.append(GapCycle(self._cycle, self.grown, tuple(self.group_sets[i].param for i in part), nonzero,
                                    regrown))
        self.grown = None
        self._apply()

    @contextmanager
    def sparse(self):
        """Forward and backward inside; then the gradients of masked entries are dropped (masked training:
        no momentum builds up on them, so a part grows from zero)."""
        yield
        with torch.no_grad():
            for i in self._masked():
                w = self.params[i]
                if w.grad is not None:
                    w.grad.mul_(self._masks[i])

    def step(self) -> None:
        self._apply()

    def finish(self) -> None:
        """Prune the grown part back; the masks freeze (idempotent)."""
        if self.frozen:
            return
        self._prune_back()
        self.frozen = True
        self._apply()

    def _apply(self) -> None:
        with torch.no_grad():
            for i in self._masked():
                self.params[i].mul_(self._masks[i])

    def keep(self) -> dict[str, torch.Tensor]:
        """Keep vectors: the masks, all groups for the part grown now."""
        out = {gs.param: k.clone() for gs, k in zip(self.group_sets, self._keep)}
        if self.grown is not None:
            for i in self.parts[self.grown]:
                out[self.group_sets[i].param] = torch.ones(self.group_sets[i].n_groups, dtype=torch.bool)
        return out

    def metrics(self) -> dict:
        return {} if self.frozen or self.grown is None else {"grown": self.grown}


def reinitialise(model: torch.nn.Module, group_sets: list[GroupSet], seed: int) -> None:
    """``reset_parameters()`` of every module owning a group set's parameter, seeded (the global RNG is
    left as it was)."""
    modules = []
    for gs in group_sets:
        owner = gs.param.rpartition(".")[0]
        module = model.get_submodule(owner)
        if not hasattr(module, "reset_parameters"):
            raise ValueError(f"module '{owner}' of '{gs.param}' has no reset_parameters()")
        if module not in modules:
            modules.append(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in modules:
            module.reset_parameters()


def prune_gap(model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], loader, *,
              relax_epochs: int, finetune_epochs: int, lr: float, seed: int = 0,
              loss_fn: Callable = F.cross_entropy, evaluate: Callable[[torch.nn.Module], float] | None = None,
              progress: bool = True, parts: int = 4, cycle_epochs: int = 1, from_scratch: bool = False) -> PruneResult:
    """Prune ``model`` in place by grow-and-prune: cycles over the first ``relax_epochs`` epochs, then
    ``finetune_epochs`` with frozen masks. The history's ``grown`` column is the part grown in each epoch."""
    if from_scratch:
        reinitialise(model, list(group_sets), seed)
    schedule = GapSchedule(model, group_sets, sparsity, relax_epochs=relax_epochs, parts=parts,
                           cycle_epochs=cycle_epochs)
    return run_schedule(model, schedule, list(group_sets), loader, epochs=relax_epochs + finetune_epochs, lr=lr,
                        loss_fn=loss_fn, evaluate=evaluate, progress=progress, title="GaP")
