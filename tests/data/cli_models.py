"""Model factories for tests/test_cli.py, loaded by `xbc ... FILE.py:FACTORY` (no arguments).

Each factory is deterministic. ``INPUT_SHAPE`` is the default shape `xbc compile` uses without
--input-shape.
"""

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 8, 8)


def _small(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                              nn.Linear(8 * 8 * 8, 10))
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.copy_(0.2 * torch.randn(8, generator=g))
        bn.running_var.copy_(torch.empty(8).uniform_(0.5, 2.0, generator=g))
    return model.eval()


def small():
    """Conv + BN + ReLU + Linear on 3x8x8: 100 crossbars on `tiny`, one chip."""
    return _small(0)


def small_other_seed():
    """The same architecture with different weights: verifying `small`'s netlist against it fails."""
    return _small(1)


def big():
    """Two wide Linear layers: several chips' worth of `tiny` crossbars."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 64)).eval()


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(6, 4)

    def forward(self, x, y):
        return torch.relu(self.a(x) + self.b(y))


def two_inputs():
    """Two inputs of shapes [B, 8] and [B, 6]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoInputs().eval()


class FFT(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real


def unsupported_op():
    """Uses torch.fft.fft, which is not on the host allow-list (XB103)."""
    return FFT()


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


def data_dependent():
    """Branches on a tensor value: not traceable (XB102)."""
    return DataDependent()


def raises():
    """A factory that fails (XB002)."""
    raise RuntimeError("checkpoint weights.pt is missing")


def not_a_module():
    return 42
