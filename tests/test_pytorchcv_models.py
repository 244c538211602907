"""examples/pytorchcv_models.py: third-party architectures build, trace, compile and verify; ``xbc prune`` runs
on one of them with digits at 32x32x3 (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import xbcompiler as xb
from xbcompiler.cli import main
from xbcompiler.modelfile import load_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pytorchcv_models.py"
FACTORIES = ("resnet20", "seresnet20", "densenet40", "mobilenetv2", "mobilenetv3")


@pytest.mark.parametrize("factory", FACTORIES)
def test_factory_compiles_for_isaac_like_and_verifies(factory):
    model, _ = load_model(f"{EXAMPLE}:{factory}")
    model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (1, 10)
    netlist = xb.compile(model, x, xb.load_target("isaac-like"), "semi-folded")
    assert netlist.summary["crossbars"] > 100  # every convolution is on crossbars, not a host fallback
    report = xb.verify(netlist, model, x)
    assert report.ok, [(c.name, c.rel) for c in report.layers if not c.ok]


def test_factories_are_seeded():
    first, _ = load_model(f"{EXAMPLE}:resnet20")
    torch.randn(10)  # the global generator moves on between the calls
    second, _ = load_model(f"{EXAMPLE}:resnet20")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.slow
def test_xbc_prune_runs_on_resnet20_with_digits_32x32x3(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{EXAMPLE}:resnet20", "--target", "isaac-like", "--data", "digits:32x32x3",
                   "--train-epochs", "1", "--sparsity", "0.3", "--relax-epochs", "0", "--epochs", "1", "--json",
                   "--quiet", "-o", str(out)])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"]
    assert summary["pruned_crossbars"] == xb.load_netlist(out).summary["crossbars"] < summary["dense_crossbars"]
