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


class GatedInvertedResidual(nn.Module):
    """Stem and one inverted-residual block whose depthwise output a squeeze-and-excitation gate multiplies
    (MobileNetV3, MnasNet): the gate's 1x1 convolution joins the depthwise layer's channel space."""

    def __init__(self, c: int = 8, expand: int = 4):
        super().__init__()
        h = c * expand
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                       nn.ReLU6())
        self.squeeze, self.excite = nn.Conv2d(h, c, 1), nn.Conv2d(c, h, 1)
        self.project = nn.Sequential(nn.Conv2d(h, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c))
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = self.depthwise(self.expand(self.stem(x)))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.head(self.project(x * gate).mean((2, 3)))


def gated_inverted_residual():
    torch.manual_seed(0)
    return GatedInvertedResidual()
