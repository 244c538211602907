"""Quantisation-aware training with power-of-two scales (background §3.2): a straight-through estimator and a
learnable real ``log2`` scale that the forward pass rounds to an integer exponent.

    model = prepare_qat(model, weight_bits=4, input_bits=8, calibration=x)   # fake-quantised
    ... train as usual ...
    model = finalize_qat(model)     # plain modules, weights on their power-of-two grids
    compiled = xbcompiler.compile(model, (x[:1],), target, calibration=x)

Fold BatchNorm into the convolutions before QAT (the crossbars hold the folded weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..frontend.ops import CROSSBAR_MODULES
from .scheme import int_range, pow2_exponent, weight_range


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class Pow2FakeQuant(nn.Module):
    """``clamp(round(x / 2**e)) * 2**e`` with ``e = round(log2_scale)``; gradients flow to ``x`` and ``log2_scale``.

    ``log2_scale`` is a learnable real number; the exponent used is always an integer, so the
    deployed scale is a shift.
    """

    def __init__(self, bits: int, signed: bool = True, symmetric: bool = False, log2_scale: float = 0.0):
        super().__init__()
        self.lo, self.hi = weight_range(bits) if symmetric else int_range(bits, signed)
        self.log2_scale = nn.Parameter(torch.tensor(float(log2_scale)))

    @property
    def exponent(self) -> int:
        return int(torch.round(self.log2_scale.detach()))

    def init_from(self, x: torch.Tensor) -> None:
        """Start from the exponent post-training quantisation would choose for ``x``."""
        with torch.no_grad():
            self.log2_scale.fill_(pow2_exponent(float(x.detach().abs().max()), self.hi))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.exp2(round_ste(self.log2_scale))
        return torch.clamp(round_ste(x / scale), self.lo, self.hi) * scale


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, CROSSBAR_MODULES)]


def prepare_qat(model: nn.Module, weight_bits: int, input_bits: int, calibration: torch.Tensor | None = None
                ) -> nn.Module:
    """Fake-quantise every Conv/Linear weight (a parametrization) and input (a pre-hook), in place.

    With ``calibration`` the exponents start where post-training quantisation would put them.
    """
    inputs: dict[nn.Module, torch.Tensor] = {}
    if calibration is not None:
        hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.setdefault(mod, args[0].detach()))
                 for m in _layers(model)]
        with torch.no_grad():
            model(calibration)
        for h in hooks:
            h.remove()
    for m in _layers(model):
        wq = Pow2FakeQuant(weight_bits, symmetric=True)
        wq.init_from(m.weight)
        parametrize.register_parametrization(m, "weight", wq)
        x = inputs.get(m)
        xq = Pow2FakeQuant(input_bits, signed=x is None or bool((x < 0).any()))
        if x is not None:
            xq.init_from(x)
        m.input_quant = xq
        m._qat_hook = m.register_forward_pre_hook(lambda mod, args: (mod.input_quant(args[0]), *args[1:]))
    return model


def finalize_qat(model: nn.Module) -> nn.Module:
    """Remove the fake quantisers, keeping every weight at its quantised value (plain, compilable modules)."""
    for m in _layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        if hasattr(m, "_qat_hook"):
            m._qat_hook.remove()
            del m._qat_hook, m.input_quant
    return model
