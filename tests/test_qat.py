"""Quantisation-aware training helper: straight-through estimator, learnable log2 scale rounded forward."""

from __future__ import annotations

import torch
from torch import nn

import xbcompiler as xb
from xbcompiler.quant.qat import Pow2FakeQuant, finalize_qat, prepare_qat, round_ste


def test_round_ste_passes_gradients_straight_through():
    x = torch.tensor([0.2, 1.6, -2.5], requires_grad=True)
    y = round_ste(x)
    y.sum().backward()
    assert torch.equal(y, torch.round(x.detach())) and torch.equal(x.grad, torch.ones(3))


def test_fake_quant_uses_an_integer_exponent_and_learns_the_scale():
    q = Pow2FakeQuant(4, symmetric=True, log2_scale=-1.3)  # rounds to 2**-1
    x = torch.tensor([0.26, -0.74, 9.0], requires_grad=True)
    y = q(x)
    assert q.exponent == -1
    assert torch.equal(y.detach(), torch.tensor([0.5, -0.5, 3.5]))  # multiples of 2**-1, clamped at 7 * 2**-1
    y.pow(2).sum().backward()
    assert q.log2_scale.grad is not None and q.log2_scale.grad != 0
    assert x.grad[2] == 0  # clamped: no gradient


def test_prepare_train_finalize_compile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x, target = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    prepare_qat(model, weight_bits=4, input_bits=8, calibration=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    exponent = model[0].parametrizations.weight[0].exponent
    finalize_qat(model)
    assert type(model[0]) is nn.Conv2d and not hasattr(model[0], "input_quant")
    w = model[0].weight.detach() * 2.0 ** -exponent
    assert torch.equal(w, torch.round(w)) and w.abs().max() <= 7  # on the 4-bit power-of-two grid
    compiled = xb.compile(model, (x[:1],), "tiny", calibration=x)
    assert xb.verify(compiled.netlist, model, x[:2]).ok
