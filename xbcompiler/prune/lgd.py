"""L0-constrained gradient descent with relaxant probabilistic projection (LGD/RPP, background §1.5).

Dense "shadow" weights are always updated; the forward and backward passes run in sparse space
(``W * M``) and the gradient reaches every entry of ``W`` (straight-through), so pruned groups may
regrow. Every ``tau`` iterations until ``t_relax`` the masks are re-projected: the top-``s`` groups by
``n_j = ||W_j|| / sqrt(|W_j|)`` are kept and every other group survives with probability
``lambda(t) * n_j / theta`` (``theta`` = the ``s``-th largest ``n_j``, ``lambda`` linear from ``lambda0``
to 0 at ``t_relax``). At ``t_relax`` the projection is the exact top-``s``, ``W <- W * M`` and the
masks freeze; the remaining iterations fine-tune with frozen masks. ``rpp=False`` is the deterministic
ablation (iterative hard thresholding, ``lambda = 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .groups import GroupSet, top_s
from .train import MaskedParams, PruneResult, run_schedule


def relaxed_keep(norms: torch.Tensor, s: int, lam: float, generator: torch.Generator,
                 project: Callable[[torch.Tensor, int], torch.Tensor] = top_s) -> torch.Tensor:
    """One relaxant probabilistic projection: ``project(norms, s)`` (top-``s``, or a group set's
    :meth:`~xbcompiler.prune.groups.GroupSet.project`) plus Bernoulli(``lam * n_j / theta``) for the rest."""
    keep = project(norms, s)
    if s == 0 or lam <= 0.0:
        return keep
    theta = float(norms[keep].min())
    if theta <= 0.0:
        return keep
    p = (lam * norms / theta).clamp(0.0, 1.0)
    draw = torch.rand(len(norms), generator=generator, dtype=torch.float64) < p
    return keep | draw


class LGDPruner(MaskedParams):
    """LGD/RPP on the parameters named by ``group_sets``; drive it from any training loop::

        with pruner.sparse():              # forward AND backward inside: they see W * M
            loss_fn(model(x), y).backward()
        optimizer.step()
        pruner.step()

    ``sparsity`` maps each group set's parameter name to its target group sparsity ``rho``
    (``s = ceil((1 - rho) * |G|)`` groups are kept). ``t_relax`` and ``tau`` count iterations
    (calls of :meth:`step`); ``t_relax = 0`` projects and freezes at once.
    """

    def __init__(self, model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], *,
                 t_relax: int, tau: int = 1, lambda0: float = 0.5, rpp: bool = True, seed: int = 0):
        if tau < 1 or t_relax < 0:
            raise ValueError("need tau >= 1 and t_relax >= 0")
        super().__init__(model, group_sets)
        self.s = [gs.n_keep(sparsity[gs.param]) for gs in self.group_sets]
        self.t_relax, self.tau = t_relax, tau
        self.lambda0 = lambda0 if rpp else 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self.t = 0
        self.frozen = False
        self._set_keep([gs.project(n, s) for gs, n, s in zip(self.group_sets, self.norms(), self.s)])
        if t_relax == 0:
            self._freeze()

    def lam(self) -> float:
        """``lambda(t)``: linear from ``lambda0`` at t = 0 to 0 at ``t_relax``."""
        return self.lambda0 * max(0.0, 1.0 - self.t / self.t_relax) if self.t_relax else 0.0

    def epoch_start(self, epoch: int) -> None:
        """Nothing: LGD counts iterations."""

    @contextmanager
    def sparse(self):
        """Swap in ``W * M`` for the forward/backward; the dense weights come back on exit."""
        if self.frozen:
            yield
            return
        dense = [w.detach().clone() for w in self.params]
        self._apply_masks()
        try:
            yield
        finally:
            with torch.no_grad():
                for w, d in zip(self.params, dense):
                    w.copy_(d)
            self._quiet_dead_channels()

    def step(self) -> None:
        """Call after each optimizer step: project every ``tau`` iterations, freeze at ``t_relax``."""
        self.t += 1
        if self.frozen:
            self._apply_masks()
        elif self.t >= self.t_relax:
            self._freeze()
        elif self.t % self.tau == 0:
            self.project()

    def project(self) -> None:
        """Relaxant probabilistic projection at the current ``lambda(t)``."""
        lam = self.lam()
        self._set_keep([relaxed_keep(n, s, lam, self.generator, gs.project)
                        for gs, n, s in zip(self.group_sets, self.norms(), self.s)])

    def finish(self) -> None:
        """Freeze now if ``t_relax`` was not reached (the final sparsity is always exact)."""
        if not self.frozen:
            self._freeze()

    def _freeze(self) -> None:
        self._set_keep([gs.project(n, s) for gs, n, s in zip(self.group_sets, self.norms(), self.s)])
        self.frozen = True
        self._apply_masks()


def prune_lgd(model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], loader, *,
              relax_epochs: int, finetune_epochs: int, lr: float, tau: int | None = None,
              lambda0: float = 0.5, rpp: bool = True, seed: int = 0, momentum: float = 0.9,
              weight_decay: float = 0.0, loss_fn: Callable = F.cross_entropy,
              evaluate: Callable[[torch.nn.Module], float] | None = None,
              progress: bool = True) -> PruneResult:
    """Prune ``model`` in place with LGD/RPP: ``relax_epochs`` of relaxed projection, then ``finetune_epochs``
    with frozen masks. ``tau`` defaults to one epoch (``len(loader)`` iterations)."""
    steps = len(loader)
    pruner = LGDPruner(model, group_sets, sparsity, t_relax=relax_epochs * steps, tau=tau or steps,
                       lambda0=lambda0, rpp=rpp, seed=seed)
    return run_schedule(model, pruner, group_sets, loader, epochs=relax_epochs + finetune_epochs, lr=lr,
                        momentum=momentum, weight_decay=weight_decay, loss_fn=loss_fn, evaluate=evaluate,
                        progress=progress, title="LGD/RPP" if rpp else "LGD/IHT")
