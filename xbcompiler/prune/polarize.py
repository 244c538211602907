"""FORMS polarization by ADMM (background §4.1; the library behind ``xb.polarize`` and ``xbc polarize``).

Every crossbar layer's weight ``W`` is trained so that each fragment (``crossbar.fragment_rows``
consecutive matrix rows of one column, :mod:`.polarity`) holds one sign:

1. ADMM, ``admm_epochs`` epochs: SGD on ``L(W) + rho/2 ||W - Z + U||^2`` (the penalty's gradient is
   added after each backward pass), and at the start of every later epoch ``Z <- Pi(W + U)``,
   ``U <- U + W - Z`` with ``Pi`` the exact projection; ``rho`` grows by ``rho_growth`` per update;
2. hard projection ``W <- Pi(W)``, which fixes each fragment's sign;
3. masked fine-tuning, ``finetune_epochs`` epochs: after every step each weight of the wrong sign for
   its fragment is set to 0, so the signs never change again.

The trainer is the pruning package's ADMM (:mod:`.admm`, driven by :func:`.train.run_schedule`: progress
bar, cosine learning rate, best fine-tuning epoch kept) with :class:`PolarityConstraint`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..diagnostics import CompileError
from .admm import AdmmSchedule, train_admm
from .flow import accuracy_of, distillation_loss, epoch_batches, with_teacher
from .polarity import fragment_count, fragment_signs, project, sign_clamp, violations


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


class PolarityConstraint:
    """"One sign per fragment" for the ADMM trainer (:class:`.admm.Constraint`): :func:`.polarity.project`
    is the Z-update; :meth:`freeze` fixes each fragment's sign and returns :func:`.polarity.sign_clamp`.

    ``params`` (name -> parameter, optional) are what :meth:`metrics` counts mixed fragments of.
    """

    def __init__(self, fragment_rows: int, params: dict[str, torch.Tensor] | None = None):
        self.rows, self.params = fragment_rows, params or {}
        self.signs: dict[str, torch.Tensor] = {}
        """Parameter name -> the frozen sign of every fragment, ``[C_out, n_fragments]`` int8."""
        self.mixed_before: dict[str, int] = {}
        """Parameter name -> mixed fragments right before the hard projection."""

    def project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return project(w, self.rows)

    def freeze(self, name: str, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        self.mixed_before[name] = violations(w, self.rows)
        signs = self.signs[name] = fragment_signs(w, self.rows)
        return lambda v: sign_clamp(v, signs, self.rows)

    def metrics(self) -> dict:
        return {"mixed": sum(violations(p, self.rows) for p in self.params.values())}


class AdmmPolarizer(AdmmSchedule):
    """The ADMM schedule (:class:`.admm.AdmmSchedule`) with :class:`PolarityConstraint` over ``params``."""

    def __init__(self, params: dict[str, torch.nn.Parameter], fragment_rows: int, *, admm_epochs: int,
                 rho: float, rho_growth: float = 1.0, measure: Callable[[], float] | None = None):
        self.polarity = PolarityConstraint(fragment_rows, params)
        super().__init__(params, self.polarity, admm_epochs=admm_epochs, rho=rho, rho_growth=rho_growth,
                         measure=measure)

    @property
    def signs(self) -> dict[str, torch.Tensor]:
        return self.polarity.signs

    @property
    def before_projection(self) -> dict[str, int] | None:
        """Mixed fragments per parameter right before the hard projection (None before it)."""
        return self.polarity.mixed_before if self.frozen else None


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
    loader = _Epochs(x, y, s, teacher)
    polarity = PolarityConstraint(rows, params)
    model.train()
    result, schedule = train_admm(model, params, polarity, loader, admm_epochs=s.admm_epochs,
                                  finetune_epochs=s.finetune_epochs, lr=s.lr, rho=s.rho, rho_growth=s.rho_growth,
                                  loss_fn=loader.loss, evaluate=lambda m: accuracy_of(m, *val), progress=s.progress,
                                  title="polarize")
    model.eval()
    accuracy.update(schedule.accuracy)
    accuracy["final"] = accuracy_of(model, *val)
    report = PolarizeReport(
        rows, [LayerPolarity(layer, p, fragment_count(params[p], rows), before[p],
                             polarity.mixed_before.get(p, before[p]), int((polarity.signs[p] < 0).sum()))
               for layer, p in layers],
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
