"""FORMS polarization by ADMM (background §4.1; the library behind ``xb.polarize`` and ``xbc polarize``).

Every crossbar layer's weight ``W`` is trained so that each fragment (``crossbar.fragment_rows``
consecutive matrix rows of one column, :mod:`.polarity`) holds one sign:

1. ADMM, ``admm_epochs`` epochs: SGD on ``L(W) + rho/2 ||W - Z + U||^2`` (the penalty's gradient is
   added after each backward pass), and at the start of every later epoch ``Z <- Pi(W + U)``,
   ``U <- U + W - Z`` with ``Pi`` the exact projection; ``rho`` grows by ``rho_growth`` per update;
2. hard projection ``W <- Pi(W)``, which fixes each fragment's sign;
3. masked fine-tuning, ``finetune_epochs`` epochs: after every step each weight of the wrong sign for
   its fragment is set to 0, so the signs never change again.

The loop is the pruning package's :func:`.train.run_schedule` (progress bar, cosine learning rate,
best fine-tuning epoch kept); :class:`AdmmPolarizer` is its schedule.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..diagnostics import CompileError
from .flow import accuracy_of, distillation_loss, epoch_batches, with_teacher
from .polarity import fragment_count, fragment_signs, project, sign_clamp, violations
from .train import run_schedule


@dataclass(frozen=True)
class PolarizeSettings:
    """Options of :func:`polarize` (the ``xbc polarize`` flags)."""

    admm_epochs: int = 10
    """Epochs of ADMM before the hard projection."""
    finetune_epochs: int = 5
    """Epochs of masked fine-tuning after it."""
    rho: float = 0.5
    """Initial ADMM penalty."""
    rho_growth: float = 1.5
    """Factor applied to ``rho`` at every ``Z, U`` update."""
    lr: float = 0.01
    """SGD learning rate (momentum 0.9), cosine-annealed over both phases."""
    distill: float = 0.5
    """Weight of distillation from the unpolarized model (0: labels only)."""
    temperature: float = 4.0
    batch_size: int = 64
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class LayerPolarity:
    """One crossbar layer's fragments."""

    layer: str
    param: str
    fragments: int
    violations_before: int
    """Fragments with both signs before training."""
    violations_admm: int
    """Fragments with both signs after ADMM, before the hard projection."""
    negative: int
    """Fragments whose sign is negative at the end."""


@dataclass
class PolarizeReport:
    """What :func:`polarize` did (accuracies in percent on the validation data)."""

    fragment_rows: int
    layers: list[LayerPolarity]
    accuracy: dict[str, float]
    """``baseline``, ``admm`` (before the hard projection), ``projected`` (right after it), ``final``."""
    violations_after: int
    """Fragments with both signs in the returned model (0)."""
    history: list[dict] = field(default_factory=list)

    @property
    def fragments(self) -> int:
        return sum(r.fragments for r in self.layers)

    @property
    def violations_before(self) -> int:
        return sum(r.violations_before for r in self.layers)

    def table(self) -> str:
        lines = [f"{'layer':<24} {'fragments':>9} {'mixed':>6} {'mixed admm':>10} {'negative':>8}"]
        lines += [f"{r.layer:<24} {r.fragments:>9} {r.violations_before:>6} {r.violations_admm:>10} {r.negative:>8}"
                  for r in self.layers]
        acc = ", ".join(f"{k} {v:.2f}" for k, v in self.accuracy.items())
        last = (f"fragment rows {self.fragment_rows}; mixed fragments {self.violations_before} -> "
                f"{self.violations_after}; accuracy (%): {acc}")
        return "\n".join([*lines, last])


class Polarized(tuple):
    """``(model, report)`` as returned by :func:`polarize`."""

    def __new__(cls, model: torch.nn.Module, report: PolarizeReport):
        return super().__new__(cls, (model, report))

    @property
    def model(self) -> torch.nn.Module:
        return self[0]

    @property
    def report(self) -> PolarizeReport:
        return self[1]


class AdmmPolarizer:
    """The ADMM schedule of :func:`.train.run_schedule` over ``params`` (name -> parameter)."""

    phase = "admm"

    def __init__(self, params: dict[str, torch.nn.Parameter], fragment_rows: int, *, admm_epochs: int,
                 rho: float, rho_growth: float = 1.0, measure: Callable[[], float] | None = None):
        self.params, self.rows = params, fragment_rows
        self.admm_epochs, self.rho, self.rho_growth = admm_epochs, rho, rho_growth
        self.measure = measure
        self.accuracy: dict[str, float] = {}  # "admm" and "projected", with ``measure``
        self.z = {n: project(p.detach(), fragment_rows) for n, p in params.items()}
        self.u = {n: torch.zeros_like(p.detach()) for n, p in params.items()}
        self.signs: dict[str, torch.Tensor] = {}
        self.frozen = False
        self.before_projection: dict[str, int] | None = None

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
                self.z[n] = project(p + self.u[n], self.rows)
                self.u[n] += p - self.z[n]
        self.rho *= self.rho_growth

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

    def step(self) -> None:
        if self.frozen:
            self._clamp()

    def finish(self) -> None:
        """Hard projection: fix every fragment's sign and zero the other sign (idempotent)."""
        if self.frozen:
            return
        self.before_projection = {n: violations(p, self.rows) for n, p in self.params.items()}
        if self.measure is not None:
            self.accuracy["admm"] = self.measure()
        self.signs = {n: fragment_signs(p, self.rows) for n, p in self.params.items()}
        self._clamp()
        self.frozen = True
        if self.measure is not None:
            self.accuracy["projected"] = self.measure()

    def _clamp(self) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(sign_clamp(p, self.signs[n], self.rows))

    def keep(self) -> dict[str, torch.Tensor]:
        return {}

    def metrics(self) -> dict:
        return {"mixed": sum(violations(p, self.rows) for p in self.params.values())}


def crossbar_params(model: torch.nn.Module, example, target) -> list[tuple[str, str]]:
    """``(layer, parameter name)`` of every crossbar layer whose weight is a parameter, in topological order."""
    from ..driver import compile

    plain = target.with_overrides({"encoding.signed": "differential", "crossbar.fragment_rows": 0})
    compiled = compile(model, example, plain)
    params = dict(model.named_parameters())
    out = []
    for node in compiled.program.nodes:
        if node.op == "xbar":
            name = f"{compiled.program.matrices[node.target].source}.weight"
            if name in params:
                out.append((node.target, name))
    return out


def polarize(model: torch.nn.Module, target, data, *, val=None, settings: PolarizeSettings = PolarizeSettings(),
             log: Callable[[str], None] | None = None) -> Polarized:
    """Polarize ``model`` in place for ``target`` (``encoding.signed = "polarized"``); returns ``(model, report)``.

    ``data`` is ``(images, labels)`` to train on, ``val`` the same to measure accuracy on (default:
    ``data``). ``target`` is a :class:`~xbcompiler.target.TargetSpec` or a built-in name / path.
    """
    from ..driver import resolve_target

    tgt = resolve_target(target)
    rows = tgt.crossbar.fragment_rows
    if tgt.encoding.signed != "polarized" or rows < 1:
        raise CompileError("XB250", f"target '{tgt.name}' is not polarized (encoding.signed = "
                                    f"'{tgt.encoding.signed}', crossbar.fragment_rows = {rows})",
                           hint="polarize for a target with encoding.signed = 'polarized' and crossbar.fragment_rows "
                                "= N, e.g. --set encoding.signed=polarized --set crossbar.fragment_rows=8")
    s = settings
    if s.admm_epochs < 0 or s.finetune_epochs < 0 or s.rho <= 0 or s.lr <= 0 or not 0 <= s.distill <= 1:
        raise CompileError("XB003", "polarize needs admm_epochs, finetune_epochs >= 0, rho > 0, lr > 0 and "
                                    f"distill in [0, 1] (got {s})")
    x, y = data
    val = (x, y) if val is None else val
    layers = crossbar_params(model, x[:1], tgt)
    named = dict(model.named_parameters())
    params = {p: named[p] for _, p in layers}
    before = {p: violations(w, rows) for p, w in params.items()}
    teacher = copy.deepcopy(model).eval() if s.distill > 0 else None
    accuracy = {"baseline": accuracy_of(model, *val)}
    epochs = s.admm_epochs + s.finetune_epochs
    loader = _Epochs(x, y, s, teacher)
    schedule = AdmmPolarizer(params, rows, admm_epochs=s.admm_epochs, rho=s.rho, rho_growth=s.rho_growth,
                             measure=lambda: accuracy_of(model, *val))
    model.train()
    result = run_schedule(model, schedule, [], loader, epochs=epochs, lr=s.lr, loss_fn=loader.loss,
                          evaluate=lambda m: accuracy_of(m, *val), progress=s.progress, title="polarize")
    model.eval()
    accuracy.update(schedule.accuracy)
    accuracy["final"] = accuracy_of(model, *val)
    admm = schedule.before_projection or {}
    report = PolarizeReport(
        rows, [LayerPolarity(layer, p, fragment_count(params[p], rows), before[p], admm.get(p, before[p]),
                             int((schedule.signs[p] < 0).sum())) for layer, p in layers],
        accuracy, sum(violations(w, rows) for w in params.values()), result.history)
    if log is not None:
        log(report.table())
    return Polarized(model, report)


class _Epochs:
    """A fresh shuffled epoch per iteration (``len`` is the batches per epoch), with the teacher's logits."""

    def __init__(self, x, y, s: PolarizeSettings, teacher):
        self.x, self.y, self.s, self.teacher, self.epoch = x, y, s, teacher, 0

    def __len__(self) -> int:
        return (len(self.x) + self.s.batch_size - 1) // self.s.batch_size

    def __iter__(self):
        self.epoch += 1
        batches = epoch_batches(self.x, self.y, self.s.batch_size, self.s.seed * 1009 + self.epoch)
        return iter(batches if self.teacher is None else with_teacher(batches, self.teacher))

    def loss(self, logits: torch.Tensor, target) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, target)
        return distillation_loss(logits, *target, self.s.distill, self.s.temperature)
