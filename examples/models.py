"""Models for the README's shell commands: ``xbc compile examples/models.py:resnet20 ...``.

Each factory takes no arguments (``FILE.py:FACTORY``, docs/cli.md) and returns the same model, in eval
mode, every time: weights from a seeded generator and BatchNorm statistics measured on a seeded random
batch, so activations keep their scale through the network. Nothing is downloaded. ``INPUT_SHAPE`` is
the shape ``xbc compile`` uses when ``--input-shape`` is not given.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 32, 32)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual add; a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 3x32x32 images (He et al. 2016, section 4.2): stages of 16, 32 and 64 channels."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def seeded(model: nn.Module, seed: int = 0, batch: int = 16) -> nn.Module:
    """Re-initialise ``model`` from ``seed`` and set its BatchNorm statistics from one random batch."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    generator = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.uniform_(-0.3, 0.3, generator=generator)
            bn.momentum = None  # cumulative average: the statistics of exactly this batch
        model.train()
        model(torch.randn(batch, *INPUT_SHAPE[1:], generator=generator))
    return model.eval()


def resnet20() -> nn.Module:
    """CIFAR ResNet-20: 19 convolutions and a Linear head, 0.27 M weights."""
    return seeded(CifarResNet(20))


def resnet56() -> nn.Module:
    """CIFAR ResNet-56: 55 convolutions and a Linear head, 0.85 M weights."""
    return seeded(CifarResNet(56))
