"""CRIMP's zerorize-recover schedule (background §3.4, reconstruction [E]).

Every ``every`` epochs before ``ramp_epochs`` the lowest ``p(e)`` fraction of groups (by
``||W_g|| / sqrt(|W_g|)``) is set to zero but stays trainable, so it may recover;
``p(e) = rho * (1 - (1 - e / E_r)^3)`` ramps from 0 to the target ``rho``. At epoch ``E_r`` the lowest
``rho`` are pruned for good (exactly ``ceil((1 - rho) * |G|)`` groups kept) and the masks freeze for
the fine-tuning epochs. Unlike LGD/RPP there is no probabilistic keep, and zeroed groups restart from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .groups import GroupSet
from .train import MaskedParams, PruneResult, run_schedule


class ZerorizeRecover(MaskedParams):
    """The schedule as an object with epoch hooks (see :class:`xbcompiler.prune.train.Schedule`)."""

    def __init__(self, model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], *,
                 ramp_epochs: int, every: int = 1):
        if every < 1 or ramp_epochs < 0:
            raise ValueError("need every >= 1 and ramp_epochs >= 0")
        super().__init__(model, group_sets)
        self.target = [float(sparsity[gs.param]) for gs in self.group_sets]
        self.ramp_epochs, self.every = ramp_epochs, every
        self.frozen = False

    def fraction(self, epoch: int, target: float) -> float:
        """``p(e)``: the cubic ramp from 0 at epoch 0 to ``target`` at ``ramp_epochs``."""
        if epoch >= self.ramp_epochs:
            return target
        return target * (1.0 - (1.0 - epoch / self.ramp_epochs) ** 3)

    def epoch_start(self, epoch: int) -> None:
        if self.frozen:
            return
        if epoch >= self.ramp_epochs:
            self.finish()
        elif epoch % self.every == 0:
            self._zerorize(epoch)

    @contextmanager
    def sparse(self):
        """Nothing to swap (zeroed groups are really zero); the gradients of dead channels are dropped."""
        yield
        self._quiet_dead_channels()

    def step(self) -> None:
        if self.frozen:
            self._apply_masks()

    def finish(self) -> None:
        """Hard-prune to the target and freeze (idempotent)."""
        if not self.frozen:
            self._zerorize(self.ramp_epochs)
            self.frozen = True

    def _zerorize(self, epoch: int) -> None:
        self._set_keep([gs.project(n, gs.n_keep(self.fraction(epoch, rho)))
                        for gs, n, rho in zip(self.group_sets, self.norms(), self.target)])
        self._apply_masks()


def prune_zerorize(model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float],
                   loader, *, epochs: int, lr: float, ramp_epochs: int | None = None, every: int = 1,
                   momentum: float = 0.9,
                   weight_decay: float = 0.0, loss_fn: Callable = F.cross_entropy,
                   evaluate: Callable[[torch.nn.Module], float] | None = None,
                   progress: bool = True) -> PruneResult:
    """Prune ``model`` in place with zerorize-recover over ``epochs`` epochs (``ramp_epochs``: 0.6 E)."""
    ramp = round(0.6 * epochs) if ramp_epochs is None else ramp_epochs
    schedule = ZerorizeRecover(model, group_sets, sparsity, ramp_epochs=ramp, every=every)
    return run_schedule(model, schedule, group_sets, loader, epochs=epochs, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, loss_fn=loss_fn, evaluate=evaluate, progress=progress,
                        title="zerorize-recover")
