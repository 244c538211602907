"""Block pruning by reweighted group-L1 (block-based pruning with reweighted regularization, "BLK-REW",
Ma et al. 2020; the reweighting of Candes, Wakin and Boyd 2008; background §4.6).

The blocks are the group sets' groups: crossbar tiles (``crossbar_groups``, ``tile_groups``) or column
blocks (``column_groups``). For ``relax_epochs`` epochs SGD minimises

    L(W) + lambda(e) * sum_layers 1/|G| sum_g alpha_g ||W_g||_2,   alpha_g = 1 / (||W_g||_2 + eps)

with ``alpha_g`` re-weighted from the current weights at the start of every epoch (the reweighting turns
the group-L1 into an approximation of the number of nonzero groups: small groups are pushed hard, large
ones barely; divided by the layer's ``|G|`` groups, a layer's term approximates its fraction of nonzero
groups, so ``lam`` means the same for a layer of 30 groups and one of 3000) and ``lambda(e) = lam *
(e + 1) / relax_epochs`` ramped linearly; ``eps = eps_rel`` times the layer's mean group norm at that
epoch. The penalty's (sub)gradient ``lambda alpha_g W_g / (|G| ||W_g||)`` is added after each backward pass. Then the hard top-``s`` projection (:class:`.admm.GroupConstraint`: the exact
Euclidean projection onto ``s`` groups) and ``finetune_epochs`` of masked fine-tuning: the final group
sparsity is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .admm import GroupConstraint, HardProjection
from .groups import GroupSet
from .train import PruneResult, resolve, run_schedule


class GroupL1Schedule(HardProjection):
    """Reweighted group-L1, then hard projection and masked fine-tuning (a :class:`.train.Schedule`)."""

    phase = "group-l1"

    def __init__(self, model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], *,
                 relax_epochs: int, lam: float = 1.0, eps_rel: float = 0.1):
        if relax_epochs < 0 or lam < 0 or eps_rel <= 0:
            raise ValueError("need relax_epochs >= 0, lam >= 0 and eps_rel > 0")
        self.group_sets = list(group_sets)
        self.params = resolve(model, self.group_sets)
        self.constraint = GroupConstraint(self.group_sets, sparsity)
        self.relax_epochs, self.lam, self.eps_rel = relax_epochs, lam, eps_rel
        self.strength = 0.0
        """``lambda(e)`` of the current epoch."""
        self.alpha = [torch.zeros(gs.n_groups, dtype=torch.float64) for gs in self.group_sets]
        """Per group set: ``alpha_g / |G|`` of the current epoch."""

    def group_norms(self) -> list[torch.Tensor]:
        """Plain ``||W_g||_2`` of every group, per group set."""
        return [gs.norms(w) * gs.sizes().double().sqrt() for gs, w in zip(self.group_sets, self.params)]

    def epoch_start(self, epoch: int) -> None:
        if self.frozen:
            return
        if epoch >= self.relax_epochs:
            self.finish()
            return
        self.strength = self.lam * (epoch + 1) / self.relax_epochs
        for i, norms in enumerate(self.group_norms()):
            eps = self.eps_rel * float(norms.mean()) if len(norms) else 1.0
            self.alpha[i] = 1.0 / (norms + max(eps, 1e-12)) / max(1, len(norms))

    @contextmanager
    def sparse(self):
        """Forward and backward inside; then the penalty's gradient joins the loss's."""
        yield
        if self.frozen or self.strength == 0 or not torch.is_grad_enabled():
            return
        with torch.no_grad():
            for gs, w, alpha, norms in zip(self.group_sets, self.params, self.alpha, self.group_norms()):
                if w.grad is None:
                    continue
                scale = torch.where(norms > 0, self.strength * alpha / norms.clamp(min=1e-30), 0.0)
                w.grad.add_(w * gs.per_entry(scale, 0.0).to(w))

    def finish(self) -> None:
        """Hard top-``s`` projection; the masks freeze (idempotent)."""
        if not self.frozen:
            self.freeze_all(self.constraint, {gs.param: w for gs, w in zip(self.group_sets, self.params)})

    def keep(self) -> dict[str, torch.Tensor]:
        """The frozen keep vectors, or those of the top-``s`` projection of the current weights."""
        if self.frozen:
            return {gs.param: self.constraint.keep(gs.param) for gs in self.group_sets}
        return {gs.param: self.constraint.keep_of(gs.param, w) for gs, w in zip(self.group_sets, self.params)}

    def metrics(self) -> dict:
        if self.frozen:
            return {}
        penalty = sum(float((a * n).sum()) for a, n in zip(self.alpha, self.group_norms()))
        return {"lambda": round(self.strength, 6), "penalty": round(self.strength * penalty, 6)}


def prune_group_l1(model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], loader, *,
                   relax_epochs: int, finetune_epochs: int, lr: float, seed: int = 0,
                   loss_fn: Callable = F.cross_entropy, evaluate: Callable[[torch.nn.Module], float] | None = None,
                   progress: bool = True, lam: float = 1.0, eps_rel: float = 0.1) -> PruneResult:
    """Prune ``model`` in place: ``relax_epochs`` of reweighted group-L1 (strength ramped to ``lam``), the hard
    top-``s`` projection, ``finetune_epochs`` with frozen masks. ``seed`` is unused (deterministic)."""
    schedule = GroupL1Schedule(model, group_sets, sparsity, relax_epochs=relax_epochs, lam=lam, eps_rel=eps_rel)
    return run_schedule(model, schedule, list(group_sets), loader, epochs=relax_epochs + finetune_epochs, lr=lr,
                        loss_fn=loss_fn, evaluate=evaluate, progress=progress, title="group-L1")
