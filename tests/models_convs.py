"""Models with transposed and 3-D convolutions (issue 11: more layers on crossbars).

The front end rewrites ``nn.Conv3d`` and ``nn.ConvTranspose1d/2d/3d`` into ``nn.Conv1d``/``nn.Conv2d``
and host operators (:mod:`xbcompiler.frontend.rewrite_conv`). Same format as :mod:`tests.models`:
seeded factories returning eval-mode models, and ``CONV_MODELS`` as :class:`tests.models.ModelCase`
entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.models import ModelCase, model_case


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNetCat(nn.Module):
    """Two-level UNet: max-pool down, ``nn.ConvTranspose2d`` up (2x2 stride 2, and 4x4 stride 2 padding 1),
    ``torch.cat`` skips."""

    def __init__(self, cin: int = 3, classes: int = 2):
        super().__init__()
        self.enc1, self.enc2, self.mid = _conv_relu(cin, 8), _conv_relu(8, 16), _conv_relu(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _conv_relu(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.dec1 = _conv_relu(16, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):  # [B, 3, 16, 16]
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class UNetBilinear(nn.Module):
    """UNet decoder mixing ``nn.ConvTranspose2d`` (3x3, stride 2, output_padding 1, grouped) with bilinear
    ``F.interpolate`` upsampling; additive and concatenated skips."""

    def __init__(self, cin: int = 1, classes: int = 3):
        super().__init__()
        self.enc1 = _conv_relu(cin, 8)
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(16, 16, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.dec2 = _conv_relu(16, 8)
        self.dec1 = _conv_relu(16, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):  # [B, 1, 16, 16]
        e1 = self.enc1(x)  # 16x16
        e2 = self.enc2(e1)  # 8x8
        m = self.mid(e2)  # 4x4
        d2 = self.dec2(F.relu(self.up2(m)) + e2)  # 8x8
        up = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)  # 16x16
        return self.head(self.dec1(torch.cat([up, e1], 1)))


class VideoClassifier(nn.Module):
    """``nn.Conv3d`` stem over ``[B, 3, T, H, W]`` clips: 3x3x3, a strided 3x3x3, a temporal 2x1x1 grouped
    conv; global average pooling and a Linear head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv3d(8, 16, 3, stride=(1, 2, 2), padding=1)
        self.temporal = nn.Conv3d(16, 16, (2, 1, 1), stride=(2, 1, 1), groups=4)
        self.head = nn.Linear(16, classes)

    def forward(self, x):  # [B, 3, 4, 8, 8]
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        y = F.relu(self.temporal(y))  # [B, 16, 2, 4, 4]
        return self.head(y.mean(dim=(2, 3, 4)))


class Decoder1d(nn.Module):
    """A 1-D signal decoder: ``nn.ConvTranspose1d`` 4/2/1, then a grouped, dilated stride-3 one."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv1d(2, 8, 3, padding=1)
        self.up1 = nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose1d(4, 2, 3, stride=3, dilation=2, groups=2, output_padding=1)

    def forward(self, x):  # [B, 2, 16]
        return self.up2(F.relu(self.up1(F.relu(self.enc(x)))))


class Volume3d(nn.Module):
    """A volumetric encoder-decoder: ``nn.Conv3d`` down (stride 2), ``nn.ConvTranspose3d`` up (2x2x2 and
    3x3x3 stride (1, 2, 2) with padding)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv3d(2, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.refine = nn.ConvTranspose3d(4, 2, 3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1))

    def forward(self, x):  # [B, 2, 4, 6, 6]
        return self.refine(F.relu(self.up(F.relu(self.down(x)))))


class ChannelwiseView(nn.Module):
    """pytorchcv ChannelNet's channel-wise convolution (an ``nn.Conv3d`` sliding over the channels of an
    unsqueezed map) and a cropping ``nn.ConvTranspose2d``, each followed by ``.view``: the rewritten
    layers must give tensors ``.view`` accepts, as torch's do."""

    def __init__(self):
        super().__init__()
        self.channelwise = nn.Conv3d(1, 2, (8, 1, 1), stride=(2, 1, 1), padding=(3, 0, 0), bias=False)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 7 * 7, 5)

    def forward(self, x):  # [B, 8, 4, 4]
        b, c, h, w = x.size()
        x = F.relu(self.channelwise(x.unsqueeze(1)).view(b, c, h, w))
        return self.fc(self.up(x).view(b, -1))


#: The issue's transposed and 3-D convolution models.
CONV_MODELS: dict[str, ModelCase] = {
    "unet_cat": model_case(UNetCat, (2, 3, 16, 16)),
    "unet_bilinear": model_case(UNetBilinear, (2, 1, 16, 16)),
    "video_classifier": model_case(VideoClassifier, (2, 3, 4, 8, 8)),
    "decoder_1d": model_case(Decoder1d, (2, 2, 16)),
    "volume_3d": model_case(Volume3d, (2, 2, 4, 6, 6)),
    "channelwise_view": model_case(ChannelwiseView, (2, 8, 4, 4)),
}

# module-level factories, for `xbc compile tests/models_convs.py:unet_cat --input-shape 1,3,16,16`
unet_cat = CONV_MODELS["unet_cat"].factory
unet_bilinear = CONV_MODELS["unet_bilinear"].factory
video_classifier = CONV_MODELS["video_classifier"].factory
decoder_1d = CONV_MODELS["decoder_1d"].factory
volume_3d = CONV_MODELS["volume_3d"].factory
channelwise_view = CONV_MODELS["channelwise_view"].factory
