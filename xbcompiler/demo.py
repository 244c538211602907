"""The bundled demo model of ``xbc demo``: a small CIFAR-style CNN with deterministic weights.

It exercises the common kinds of layer in a few hundred thousand multiply-accumulates: convolution
with batch norm and ReLU, max and average pooling, a residual add, a depthwise convolution and a
Linear classifier head. Nothing is downloaded; the weights come from a seeded generator.
"""

from __future__ import annotations

import torch
from torch import nn

#: The shape ``xbc demo`` compiles the model for (batch first).
INPUT_SHAPE = (1, 3, 32, 32)


class DemoNet(nn.Module):
    """conv-BN-ReLU, max pool, a residual block, a depthwise-separable block, avg pool, Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.res_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.res_bn1 = nn.BatchNorm2d(16)
        self.res_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.res_bn2 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False),
                                       nn.BatchNorm2d(16), nn.ReLU())
        self.pointwise = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        out = self.relu(self.res_bn1(self.res_conv1(x)))
        x = self.relu(x + self.res_bn2(self.res_conv2(out)))
        x = self.pointwise(self.depthwise(x))
        return self.head(torch.flatten(self.avgpool(x), 1))


def make_model(seed: int = 0) -> nn.Module:
    """The demo network in eval mode, with weights and BN statistics drawn from ``seed`` only.

    The global torch random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DemoNet()
    g = torch.Generator().manual_seed(10_007 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.empty(m.num_features).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.empty(m.num_features).uniform_(-0.3, 0.3, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.empty(m.num_features).uniform_(0.5, 2.0, generator=g))
    return model.eval()
