"""One ADMM trainer for every constraint set: group sparsity, FORMS polarity, kernel patterns (background §4.8).

For parameters ``W`` and a constraint set ``S`` (a :class:`Constraint`, one set per parameter):

1. ADMM, ``admm_epochs`` epochs: SGD on ``L(W) + rho/2 ||W - Z + U||^2`` (the penalty's gradient
   ``rho (W - Z + U)`` is added after each backward pass); ``Z = Pi(W)``, ``U = 0`` at the start and at
   the start of every later ADMM epoch ``Z <- Pi(W + U)``, ``U <- U + W - Z``, ``rho <- rho * rho_growth``
   (``Pi`` the exact Euclidean projection onto ``S``);
2. hard projection: :meth:`Constraint.freeze` fixes the structure of ``Pi(W)`` (support, signs, pattern)
   and ``W`` is put into it;
3. masked fine-tuning: after every optimizer step ``W`` is put into the frozen structure again.

:class:`AdmmSchedule` is a :class:`.train.Schedule`, so :func:`.train.run_schedule` drives it (progress
bar, cosine learning rate, best fine-tuning epoch kept). :class:`GroupConstraint` is "at most ``s``
groups nonzero" (:func:`prune_admm`); FORMS polarity lives in :mod:`.polarize`, patterns in :mod:`.pattern`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F

from .groups import GroupSet
from .train import PruneResult, run_schedule


class Constraint(Protocol):
    """A constraint set per parameter for ADMM (background §4.8)."""

    def project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Exact Euclidean projection of ``w`` onto the set (the Z-update). Must not modify ``w``."""
        ...

    def freeze(self, name: str, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Hard projection: fix the structure of ``project(w)`` and return the map that puts any later
        weight into it (applied in place after every fine-tuning step)."""
        ...

    # optional: keep(name) -> bool tensor over groups (the history's group sparsity), metrics() -> dict


class HardProjection:
    """The end every constraint schedule shares: :meth:`freeze_all` fixes each parameter's structure through
    its constraint's :meth:`~Constraint.freeze` and puts the weights into it; after that every optimizer step
    (:meth:`step`) puts them back (masked fine-tuning)."""

    frozen = False
    maps: dict[str, Callable[[torch.Tensor], torch.Tensor]]

    def freeze_all(self, constraint: Constraint, params: Mapping[str, torch.nn.Parameter]) -> None:
        self._frozen_params = dict(params)
        with torch.no_grad():
            self.maps = {n: constraint.freeze(n, p.detach()) for n, p in self._frozen_params.items()}
        self.frozen = True
        self._apply()

    def step(self) -> None:
        """After each optimizer step: fine-tuning puts the weights back into the frozen structure."""
        if self.frozen:
            self._apply()

    def _apply(self) -> None:
        with torch.no_grad():
            for n, p in self._frozen_params.items():
                p.copy_(self.maps[n](p.detach()))


class AdmmSchedule(HardProjection):
    """The ADMM schedule of :func:`.train.run_schedule` over ``params`` (name -> parameter).

    ``measure()`` (optional) is called right before and right after the hard projection; its values are
    :attr:`accuracy` ``["admm"]`` and ``["projected"]``. :attr:`residual` is ``||W - Z||`` (all
    parameters) at the end of the last ADMM epoch; the history has it per epoch (``residual``).
    """

    phase = "admm"

    def __init__(self, params: dict[str, torch.nn.Parameter], constraint: Constraint, *, admm_epochs: int,
                 rho: float, rho_growth: float = 1.0, measure: Callable[[], float] | None = None):
        if admm_epochs < 0 or rho < 0 or rho_growth <= 0:
            raise ValueError("need admm_epochs >= 0, rho >= 0 and rho_growth > 0")
        self.params, self.constraint = dict(params), constraint
        self.admm_epochs, self.rho, self.rho_growth = admm_epochs, rho, rho_growth
        self.measure = measure
        self.accuracy: dict[str, float] = {}
        with torch.no_grad():
            self.z = {n: constraint.project(n, p.detach()) for n, p in self.params.items()}
            self.u = {n: torch.zeros_like(p.detach()) for n, p in self.params.items()}
        self.maps = {}
        self.residual: float | None = None

    def epoch_start(self, epoch: int) -> None:
        if self.frozen:
            return
        if epoch >= self.admm_epochs:
            self.finish()
        elif epoch > 0:
            self.update()

    def update(self) -> None:
        """``Z <- Pi(W + U)``, ``U <- U + W - Z``, and ``rho`` grows."""
        with torch.no_grad():
            for n, p in self.params.items():
                self.z[n] = self.constraint.project(n, p + self.u[n])
                self.u[n] += p - self.z[n]
        self.rho *= self.rho_growth

    def distance(self) -> float:
        """``||W - Z||`` over all parameters (the primal residual)."""
        with torch.no_grad():
            return float(sum(float((p.detach() - self.z[n]).double().pow(2).sum()) for n, p in self.params.items())
                         ) ** 0.5

    @contextmanager
    def sparse(self):
        """Forward and backward inside; then the penalty's gradient ``rho (W - Z + U)`` joins the loss's."""
        yield
        if self.frozen or not torch.is_grad_enabled():
            return
        with torch.no_grad():
            for n, p in self.params.items():
                if p.grad is not None:
                    p.grad.add_(p - self.z[n] + self.u[n], alpha=self.rho)

    def finish(self) -> None:
        """Hard projection: fix the structure and put the weights into it (idempotent)."""
        if self.frozen:
            return
        self.residual = self.distance()
        if self.measure is not None:
            self.accuracy["admm"] = self.measure()
        self.freeze_all(self.constraint, self.params)
        if self.measure is not None:
            self.accuracy["projected"] = self.measure()

    def keep(self) -> dict[str, torch.Tensor]:
        """The constraint's keep vector of every parameter (``{}`` if it has none)."""
        keep = getattr(self.constraint, "keep", None)
        return {} if keep is None else {n: keep(n) for n in self.params}

    def metrics(self) -> dict:
        out = {} if self.frozen else {"residual": round(self.distance(), 6)}
        extra = getattr(self.constraint, "metrics", None)
        if extra is not None:
            out.update(extra())
        return out


class GroupConstraint:
    """"At most ``s`` groups nonzero" per group set (``s = gs.n_keep(sparsity)``), for ADMM.

    The projection keeps the ``s`` groups of largest **plain** L2 norm ``||W_g||_2`` and zeroes the rest:
    the distance to a point supported on a group subset ``T`` is ``sum_{g not in T} ||W_g||^2``, so the
    nearest point keeps the ``s`` largest energies (exact for any group sizes; the size-normalised
    ``||W_g|| / sqrt(|W_g|)`` of LGD ranks the same only when the groups are equal). Aligned sets
    (:attr:`GroupSet.aligned`) rank whole crossbars by their energy instead (:meth:`GroupSet.ranking`):
    the exact projection onto "at most ``k`` crossbars" when the ``s`` kept groups fill ``k`` crossbars
    and the groups of a bin are equal in size (column grain); otherwise the last crossbar is filled
    with its best groups. :meth:`freeze` returns ``lambda v: v * mask`` of that projection's support.
    """

    def __init__(self, group_sets: Iterable[GroupSet], sparsity: Mapping[str, float] | float):
        self.sets = {gs.param: gs for gs in group_sets}
        self.s = {n: gs.n_keep(sparsity if isinstance(sparsity, (int, float)) else sparsity[n])
                  for n, gs in self.sets.items()}
        self._keep: dict[str, torch.Tensor] = {}
        self._frozen: set[str] = set()

    def scores(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """What :meth:`GroupSet.project` ranks: plain group norms, or size-normalised ones for aligned
        sets (whose ranking turns them back into energies, ``n_j^2 |W_j|``)."""
        gs = self.sets[name]
        norms = gs.norms(w)
        return norms if gs.aligned else norms * gs.sizes().double().sqrt()

    def keep_of(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Boolean keep vector of the projection of ``w`` (exactly ``s`` groups)."""
        return self.sets[name].project(self.scores(name, w), self.s[name])

    def project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        keep = self.keep_of(name, w)
        if name not in self._frozen:
            self._keep[name] = keep
        return w * self.sets[name].mask(keep).to(w.device)

    def freeze(self, name: str, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        keep = self.keep_of(name, w)
        self._keep[name] = keep
        self._frozen.add(name)
        mask = self.sets[name].mask(keep).to(device=w.device, dtype=w.dtype)
        return lambda v: v * mask

    def keep(self, name: str) -> torch.Tensor:
        """The frozen keep vector, or that of the last projection (all groups before any)."""
        if name not in self._keep:
            return torch.ones(self.sets[name].n_groups, dtype=torch.bool)
        return self._keep[name].clone()


def train_admm(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], constraint: Constraint, loader, *,
               admm_epochs: int, finetune_epochs: int, lr: float, rho: float, rho_growth: float = 1.0,
               loss_fn: Callable = F.cross_entropy, evaluate: Callable[[torch.nn.Module], float] | None = None,
               progress: bool = True, title: str = "ADMM",
               group_sets: Iterable[GroupSet] = ()) -> tuple[PruneResult, AdmmSchedule]:
    """ADMM on ``params`` of ``model`` under ``constraint`` for ``admm_epochs``, hard projection, then
    ``finetune_epochs`` of masked fine-tuning (in place). ``group_sets`` (their parameters among
    ``params``) give the result's masks and the history's group sparsity; ``evaluate(model)`` the
    accuracies (per epoch, and ``schedule.accuracy["admm"/"projected"]``)."""
    group_sets = list(group_sets)
    measure = None if evaluate is None else (lambda: _measure(model, evaluate))
    schedule = AdmmSchedule(params, constraint, admm_epochs=admm_epochs, rho=rho, rho_growth=rho_growth,
                            measure=measure)
    result = run_schedule(model, schedule, group_sets, loader, epochs=admm_epochs + finetune_epochs, lr=lr,
                          loss_fn=loss_fn, evaluate=evaluate, progress=progress, title=title)
    return result, schedule


def _measure(model: torch.nn.Module, evaluate: Callable[[torch.nn.Module], float]) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        value = float(evaluate(model))
    model.train(was)
    return value


def prune_admm(model: torch.nn.Module, group_sets: list[GroupSet], sparsity: Mapping[str, float], loader, *,
               relax_epochs: int, finetune_epochs: int, lr: float, seed: int = 0,
               loss_fn: Callable = F.cross_entropy, evaluate: Callable[[torch.nn.Module], float] | None = None,
               progress: bool = True, rho: float = 0.5, rho_growth: float = 1.5) -> PruneResult:
    """Prune ``model`` in place by ADMM with :class:`GroupConstraint`: ``relax_epochs`` of ADMM, the hard
    top-``s`` projection, ``finetune_epochs`` with frozen masks (exact final group sparsity). ``seed`` is
    unused (the schedule is deterministic; it is there for the methods' common signature)."""
    from .train import resolve

    params = dict(zip([gs.param for gs in group_sets], resolve(model, list(group_sets))))
    result, _ = train_admm(model, params, GroupConstraint(group_sets, sparsity), loader, admm_epochs=relax_epochs,
                           finetune_epochs=finetune_epochs, lr=lr, rho=rho, rho_growth=rho_growth, loss_fn=loss_fn,
                           evaluate=evaluate, progress=progress, title="ADMM", group_sets=group_sets)
    return result
