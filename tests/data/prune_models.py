"""Model factories for ``xbc prune`` tests (the digits models of the zoo)."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.models import digits_cnn as _digits_cnn
from tests.models import vgg_digits as _vgg_digits

INPUT_SHAPE = (1, 1, 8, 8)


def digits_cnn():
    return _digits_cnn(seed=0)


def vgg_digits():
    return _vgg_digits(seed=0)


class InvertedResidual(nn.Module):
    """Stem, two inverted-residual blocks (1x1 expansion, depthwise 3x3, 1x1 projection; the first with a
    residual sum), a depthwise layer on that residual sum, pooling and a classifier."""

    def __init__(self, c: int = 8, expand: int = 4):
        super().__init__()
        h = c * expand

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                 nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                 nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.block1, self.block2 = block(c, c), block(c, 2 * c)
        self.on_sum = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.head = nn.Linear(2 * c + c, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block1(x)
        s = self.on_sum(x)
        y = self.block2(x)
        return self.head(torch.cat([y.mean((2, 3)), s.mean((2, 3))], 1))


def inverted_residual():
    torch.manual_seed(0)
    return InvertedResidual()
