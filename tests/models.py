"""Model zoo for xbcompiler tests and benchmarks.

Small, deterministic PyTorch architectures written only with the ops on the compiler's host
allow-list. Every model is traceable by ``torch.fx.symbolic_trace`` with the default leaf rule,
has no in-place ops and no data-dependent control flow. Every factory takes ``seed``, seeds torch,
gives BatchNorm/LayerNorm layers non-trivial statistics and affine parameters, and returns the
model in ``eval()`` mode.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xbcompiler.demo import DigitsCNN  # the demo's model, one definition

# --------------------------------------------------------------------------------------------- helpers


def _finalize(model: nn.Module, seed: int, calib_shape: Sequence[int] | None = None) -> nn.Module:
    """Randomise norm-layer affine params and BN running stats, then switch to eval mode.

    With ``calib_shape`` the BN running statistics are the exact batch statistics of a seeded
    random calibration batch (so activations stay well scaled through deep nets); without it they
    are drawn from a seeded generator.
    """
    g = torch.Generator().manual_seed(10_007 + seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.3, 0.3, generator=g))
        if calib_shape is None:
            for bn in bns:
                bn.running_mean.copy_(0.2 * torch.randn(bn.num_features, generator=g))
                bn.running_var.copy_(torch.empty(bn.num_features).uniform_(0.5, 2.0, generator=g))
        elif bns:
            model.eval()
            momenta = [bn.momentum for bn in bns]
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average: running stats == calibration batch stats
                bn.train()
            model(torch.randn(*calib_shape, generator=g))
            for bn, mom in zip(bns, momenta):
                bn.momentum = mom
    return model.eval()


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d (+ activation)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _vgg_features(cfg: Sequence[int | str], cin: int, bn: bool = True) -> nn.Sequential:
    """VGG feature extractor from a config list of channel counts and 'M' (max pool)."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=not bn)]
            layers += [nn.BatchNorm2d(v), nn.ReLU()] if bn else [nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle written with view/transpose/reshape (no nn.ChannelShuffle)."""
    b, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.reshape(b, c, h, w)


class BasicBlock(nn.Module):
    """ResNet basic block; option-B (1x1 conv + BN) shortcut when the shape changes."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv, as in torchvision)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


# ------------------------------------------------------------------------------------- small models


class MLP(nn.Module):
    """Flatten 1x8x8 -> 64 -> 32 -> 10 with ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class LeNet(nn.Module):
    """LeNet-5 on 1x32x32: two 5x5 convs with max pooling, then 120-84-10 classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class VGGSmall(nn.Module):
    """VGG-style CIFAR net: 6 conv+BN+ReLU layers, 3 max pools, dropout MLP classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = _vgg_features([16, 16, "M", 32, 32, "M", 64, 64, "M"], 3)
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): 16/32/64 channels, BasicBlocks, option-B shortcuts."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        self.stem = _conv_bn(3, 16)
        blocks, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            _conv_bn(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Small(nn.Module):
    """Narrow MobileNetV2 for 3x32x32: inverted residuals with stride 1 and 2."""

    # (expansion t, out channels c, repeats n, first stride s)
    CFG = ((1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2), (4, 32, 2, 1))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 16, act=nn.ReLU6)]
        cin = 16
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 64, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1x1 bottleneck, BN-ReLU-3x3, concatenated onto its input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = (
            nn.BatchNorm2d(4 * growth),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class DenseNetSmall(nn.Module):
    """DenseNet-BC for 3x32x32: 3 dense blocks (growth 8) with 1x1 conv + avg-pool transitions."""

    def __init__(self, growth: int = 8, layers_per_block: int = 3, num_classes: int = 10):
        super().__init__()
        c = 2 * growth
        mods: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False)]
        for b in range(3):
            for _ in range(layers_per_block):
                mods.append(DenseLayer(c, growth))
                c += growth
            if b < 2:  # transition: halve channels and resolution
                mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class SEBlock(nn.Module):
    """Squeeze-and-excitation: global avg pool, reduce/expand (Linear or 1x1 conv), sigmoid gate."""

    def __init__(self, c: int, reduction: int = 4, use_linear: bool = True):
        super().__init__()
        self.use_linear = use_linear
        self.pool = nn.AdaptiveAvgPool2d(1)
        if use_linear:
            self.fc1, self.fc2 = nn.Linear(c, c // reduction), nn.Linear(c // reduction, c)
        else:
            self.fc1, self.fc2 = nn.Conv2d(c, c // reduction, 1), nn.Conv2d(c // reduction, c, 1)

    def forward(self, x):
        s = self.pool(x)
        if self.use_linear:
            s = torch.flatten(s, 1)
            s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
            s = s.view(x.size(0), x.size(1), 1, 1)
        else:
            s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class SENet(nn.Module):
    """Small SE-ResNet for 3x32x32: residual conv blocks each gated by a squeeze-excitation block."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(3, 16)
        self.block1 = nn.Sequential(
            _conv_bn(16, 16), _conv_bn(16, 16, act=None), SEBlock(16, use_linear=True)
        )
        self.down = _conv_bn(16, 32, stride=2)
        self.block2 = nn.Sequential(
            _conv_bn(32, 32), _conv_bn(32, 32, act=None), SEBlock(32, use_linear=False)
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.block1(x))
        x = self.down(x)
        x = F.relu(x + self.block2(x))
        return self.fc(x.mean(dim=(2, 3)))


class ShuffleV1Unit(nn.Module):
    """ShuffleNet-v1 unit: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, residual add."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.groups = groups
        self.conv1 = _conv_bn(c, c, 1, groups=groups)
        self.dw = _conv_bn(c, c, 3, groups=c, act=None)
        self.conv2 = _conv_bn(c, c, 1, groups=groups, act=None)

    def forward(self, x):
        out = channel_shuffle(self.conv1(x), self.groups)
        return F.relu(x + self.conv2(self.dw(out)))


class ShuffleV2Unit(nn.Module):
    """ShuffleNet-v2 unit: chunk (stride 1) or dual branch (stride 2), cat, then channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        bin_ = cin // 2 if stride == 1 else cin
        if stride == 2:
            self.left = nn.Sequential(_conv_bn(cin, cin, 3, 2, groups=cin, act=None), _conv_bn(cin, half, 1))
        self.right = nn.Sequential(
            _conv_bn(bin_, half, 1),
            _conv_bn(half, half, 3, stride, groups=half, act=None),
            _conv_bn(half, half, 1),
        )

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetSmall(nn.Module):
    """Small ShuffleNet for 3x32x32 mixing v1 (grouped 1x1) and v2 (chunk/cat) units."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(3, 24)
        self.stage1 = nn.Sequential(ShuffleV1Unit(24, groups=3), ShuffleV2Unit(24, 24, 1))
        self.stage2 = nn.Sequential(
            ShuffleV2Unit(24, 48, 2), ShuffleV2Unit(48, 48, 1), ShuffleV1Unit(48, groups=4)
        )
        self.stage3 = nn.Sequential(ShuffleV2Unit(48, 96, 2), ShuffleV2Unit(96, 96, 1))
        self.head = _conv_bn(96, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Conv1dNet(nn.Module):
    """1-D conv net for 2x64 signals: Conv1d+BN1d+ReLU/Hardswish, dilation, stride, groups, pooling."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 16, 5, padding=2, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.MaxPool1d(2),  # 64 -> 32
            nn.Conv1d(16, 32, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1, groups=4),
            nn.BatchNorm1d(32),
            nn.ReLU(),  # -> 16
            nn.AvgPool1d(2),  # -> 8
            nn.Conv1d(32, 48, 3, padding=4, dilation=4),
            nn.Hardswish(),
        )
        self.bn = nn.BatchNorm1d(48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        return self.fc(self.bn(self.features(x).mean(-1)))


class TransformerBlock(nn.Module):
    """Pre-LN encoder block on [B, 16, 32] tokens (4 heads), mean-pool and Linear classifier."""

    def __init__(self, dim: int = 32, heads: int = 4, mlp_ratio: int = 2, num_classes: int = 10):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.scale = math.sqrt(self.dh)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(mlp_ratio * dim, dim)
        )
        self.head = nn.Linear(dim, num_classes)

    def _split(self, t, b, n):
        return t.view(b, n, self.heads, self.dh).permute(0, 2, 1, 3)  # [B, H, T, dh]

    def attention(self, x):
        b, n = x.size(0), x.size(1)
        q, k, v = self._split(self.q(x), b, n), self._split(self.k(x), b, n), self._split(self.v(x), b, n)
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.scale, dim=-1)
        out = (attn @ v).permute(0, 2, 1, 3).contiguous().reshape(b, n, self.heads * self.dh)
        return self.out(out)

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x).mean(dim=1))


class VGGDigits(nn.Module):
    """VGG-style net for 1x8x8 digits: 6 conv+BN+ReLU layers (16..64 ch), 2 pools, avg pool, Linear."""

    def __init__(self):
        super().__init__()
        self.features = _vgg_features([16, 16, "M", 32, 32, "M", 64, 64], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class ResNetDigits(nn.Module):
    """ResNet-style net for 1x8x8 digits: stem + 3 BasicBlocks (8x8 -> 4x4 -> 2x2), avg pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(1, 16)
        self.layers = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


class FunctionalNet(nn.Module):
    """Functional net on 3x15x13: F.conv2d (stride 2, dilation 2, groups), F.pad, F.linear, x @ W."""

    def __init__(self):
        super().__init__()

        def p(*shape, fan_in):
            return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))

        self.w1, self.b1 = p(8, 3, 3, 3, fan_in=27), p(8, fan_in=27)
        self.w2, self.b2 = p(16, 8, 3, 3, fan_in=72), p(16, fan_in=72)
        self.w3 = p(16, 4, 3, 3, fan_in=36)
        self.w4, self.b4 = p(32, 16 * 4 * 3, fan_in=192), p(32, fan_in=192)
        self.proj = p(32, 10, fan_in=32)

    def forward(self, x):  # [B, 3, 15, 13]
        x = F.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))  # [B, 8, 8, 7]
        x = F.silu(F.conv2d(x, self.w2, self.b2, padding=2, dilation=2))  # [B, 16, 8, 7]
        x = F.pad(x, (0, 1, 1, 0))  # [B, 16, 9, 8]
        x = F.conv2d(x, self.w3, None, stride=(2, 2), groups=4)  # [B, 16, 4, 3]
        x = F.leaky_relu(x, 0.1)
        x = F.linear(torch.flatten(x, 1), self.w4, self.b4)  # [B, 32]
        return torch.tanh(x) @ self.proj  # [B, 10]


# ---------------------------------------------------------------------------------- ImageNet models


class ImageNetResNet(nn.Module):
    """torchvision-style ImageNet ResNet (7x7 stem, max pool, 4 stages, avg pool, fc-1000)."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG16(nn.Module):
    """torchvision-style VGG-16 (config D, no BN) for 3x224x224, 1000 classes."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = _vgg_features(self.CFG, 3, bn=False)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -------------------------------------------------------------------------------------- factories


def _make(cls: Callable[[], nn.Module], input_shape: Sequence[int] | None):
    """Build a seeded factory; BN stats are calibrated on a batch of 8 of ``input_shape``."""

    def factory(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        calib = None if input_shape is None else (8, *input_shape[1:])
        return _finalize(cls(), seed, calib)

    factory.__doc__ = cls.__doc__
    return factory


@dataclass(frozen=True)
class ModelCase:
    """A zoo entry: name, ``factory(seed=0) -> nn.Module`` (eval mode) and input shape with batch."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]

    def build(self, seed: int = 0) -> nn.Module:
        return self.factory(seed=seed)

    def example_input(self, seed: int = 0) -> torch.Tensor:
        return torch.randn(*self.input_shape, generator=torch.Generator().manual_seed(seed))


_SHAPES = {
    "mlp": (2, 1, 8, 8),
    "lenet": (2, 1, 32, 32),
    "vgg_small": (2, 3, 32, 32),
    "resnet20": (2, 3, 32, 32),
    "resnet56": (2, 3, 32, 32),
    "mobilenetv2_small": (2, 3, 32, 32),
    "densenet_small": (2, 3, 32, 32),
    "se_net": (2, 3, 32, 32),
    "shufflenet_small": (2, 3, 32, 32),
    "conv1d_net": (2, 2, 64),
    "transformer_block": (2, 16, 32),
    "digits_cnn": (2, 1, 8, 8),
    "vgg_digits": (2, 1, 8, 8),
    "resnet_digits": (2, 1, 8, 8),
    "functional_net": (2, 3, 15, 13),
}

mlp = _make(MLP, _SHAPES["mlp"])
lenet = _make(LeNet, _SHAPES["lenet"])
vgg_small = _make(VGGSmall, _SHAPES["vgg_small"])
resnet20 = _make(lambda: CifarResNet(20), _SHAPES["resnet20"])
resnet20.__doc__ = "CIFAR ResNet-20 (3 BasicBlocks per stage, option-B shortcuts)."
resnet56 = _make(lambda: CifarResNet(56), _SHAPES["resnet56"])
resnet56.__doc__ = "CIFAR ResNet-56 (9 BasicBlocks per stage, option-B shortcuts)."
mobilenetv2_small = _make(MobileNetV2Small, _SHAPES["mobilenetv2_small"])
densenet_small = _make(DenseNetSmall, _SHAPES["densenet_small"])
se_net = _make(SENet, _SHAPES["se_net"])
shufflenet_small = _make(ShuffleNetSmall, _SHAPES["shufflenet_small"])
conv1d_net = _make(Conv1dNet, _SHAPES["conv1d_net"])
transformer_block = _make(TransformerBlock, _SHAPES["transformer_block"])
digits_cnn = _make(DigitsCNN, _SHAPES["digits_cnn"])
vgg_digits = _make(VGGDigits, _SHAPES["vgg_digits"])
resnet_digits = _make(ResNetDigits, _SHAPES["resnet_digits"])
functional_net = _make(FunctionalNet, _SHAPES["functional_net"])

# ImageNet models: BN statistics drawn from a generator (no 224x224 calibration forward).
resnet18_imagenet = _make(lambda: ImageNetResNet(BasicBlock, (2, 2, 2, 2)), None)
resnet18_imagenet.__doc__ = "torchvision-style ResNet-18 for 3x224x224 (11,689,512 params)."
resnet50_imagenet = _make(lambda: ImageNetResNet(Bottleneck, (3, 4, 6, 3)), None)
resnet50_imagenet.__doc__ = "torchvision-style ResNet-50 for 3x224x224 (25,557,032 params)."
vgg16_imagenet = _make(VGG16, None)
vgg16_imagenet.__doc__ = "torchvision-style VGG-16 for 3x224x224 (138,357,544 params)."

_CASES = {name: ModelCase(name, globals()[name], shape) for name, shape in _SHAPES.items()}

#: Deep models that multiply the zoo-wide tests' run time; in ``MODELS`` only with ``XB_FULL_ZOO=1``
#: (the CI run keeps ResNet-20, which has the same operators).
DEEP_MODELS: dict[str, ModelCase] = {name: _CASES[name] for name in ("resnet56",)}

MODELS: dict[str, ModelCase] = {
    name: case for name, case in _CASES.items()
    if name not in DEEP_MODELS or os.environ.get("XB_FULL_ZOO") == "1"
}

IMAGENET_MODELS: dict[str, ModelCase] = {
    name: ModelCase(name, globals()[name], (1, 3, 224, 224))
    for name in ("resnet18_imagenet", "resnet50_imagenet", "vgg16_imagenet")
}

ALL_MODELS: dict[str, ModelCase] = {**_CASES, **IMAGENET_MODELS}


def model_case(cls, input_shape) -> ModelCase:
    """A :class:`ModelCase` of ``cls()`` with seeded weights and BatchNorm statistics (``_finalize``)."""
    def factory(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return _finalize(cls(), seed)

    factory.__doc__ = cls.__doc__
    return ModelCase(cls.__name__, factory, input_shape)


def replicated_net():
    """A small conv net compiled semi-folded with ``replicate-layers{budget=30}`` (the report tests' netlist)."""
    import warnings

    import xbcompiler as xb

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    pipeline = "fold-batchnorm,lower-im2col,lower-to-xbar,map-semi-folded,replicate-layers{budget=30},place-tiles"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (torch.randn(1, 3, 12, 12),), "isaac-like", pipeline)
