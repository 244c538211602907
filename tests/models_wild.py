"""Models written as a new user would, outside the zoo's allow-list discipline (issue 11).

Symbolic tracing refuses some of them (``nn.TransformerEncoder``); the ``torch.export`` front end
captures them. Same format as :mod:`tests.models`: seeded factories returning eval-mode models, and
``WILD_MODELS`` as :class:`tests.models.ModelCase` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.models import ModelCase, model_case


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoder`` (2 layers, d_model 64, 4 heads, GELU) over 10 tokens, mean-pooled, Linear head."""

    def __init__(self, d_model: int = 64, heads: int = 4, layers: int = 2, num_classes: int = 10):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.1,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x):  # [B, T, d_model]
        return self.head(self.encoder(x).mean(dim=1))


class UpsampleGeluNorm(nn.Module):
    """Conv stem, ``F.interpolate`` (bilinear and nearest), GELU, LayerNorm over channels, Linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.mix = nn.Conv2d(16, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):  # [B, 3, 16, 16]
        y = F.gelu(self.stem(x))  # [B, 16, 8, 8]
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)  # [B, 16, 16, 16]
        y = self.mix(y) + F.interpolate(y, size=(16, 16), mode="nearest")
        y = self.norm(y.permute(0, 2, 3, 1))  # LayerNorm over channels: [B, 16, 16, 16]
        return self.head(F.gelu(y).mean(dim=(1, 2)))


class SuperResolution(nn.Module):
    """ESPCN-style: conv features, ``nn.PixelShuffle`` x2, Mish/SiLU/Hardswish, GroupNorm."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.gn = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):  # [B, 1, 8, 8] -> [B, 1, 16, 16]
        y = F.mish(self.gn(self.conv1(x)))
        y = F.silu(self.conv2(y)) + F.hardswish(y)
        return self.shuffle(self.conv3(y)) + self.up(x)


class MaskedAttention(nn.Module):
    """Projections on crossbars; ``scaled_dot_product_attention`` with a causal and a boolean mask,
    ``einsum``, ``chunk``/``unbind``/``stack``, ``unflatten``, ``masked_fill`` and ``where`` on the host."""

    def __init__(self, dim: int = 32, heads: int = 4, tokens: int = 8):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("keep", torch.rand(tokens, tokens, generator=torch.Generator().manual_seed(3)) > 0.3)

    def forward(self, x):  # [B, T, dim]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # [B, H, T, dh]
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep | torch.eye(self.keep.shape[0],
                                                                                          dtype=torch.bool))
        scores = torch.einsum("bhtd,bhsd->bhts", q, k).masked_fill(~self.keep, -1e4).softmax(-1)
        manual = torch.einsum("bhts,bhsd->bhtd", scores, v)
        y = torch.stack(torch.unbind(causal + masked + manual, 1), 2).flatten(2)  # [B, T, dim]
        y = torch.where(y > 0, y, 0.1 * y)
        return self.out(y)


#: The issue's refused models that are this front end's part, and host-operator showcases.
class DerivedWeights(nn.Module):
    """Convolutions whose weights ``forward`` computes from parameters: a fixed sparsity mask (pytorchcv's
    X-DenseNet), a binarised weight ``sign(w) * mean|w|`` (its 1-bit WRN) and a standardised weight
    (BiT's weight standardisation)."""

    def __init__(self):
        super().__init__()
        self.masked = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.register_buffer("mask", (torch.rand(8, 3, 3, 3) < 0.5).float())
        self.binary = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.1)
        self.standard = nn.Parameter(torch.randn(8, 8, 1, 1))
        self.head = nn.Linear(8, 4)

    def forward(self, x):  # [B, 3, 8, 8]
        x = F.relu(F.conv2d(x, self.masked * self.mask, padding=1))
        x = F.relu(F.conv2d(x, self.binary.sign() * self.binary.abs().mean(), padding=1))
        w = self.standard
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.var((1, 2, 3), keepdim=True, unbiased=False) + 1e-5).sqrt()
        return self.head(F.relu(F.conv2d(x, w)).mean((2, 3)))


WILD_MODELS: dict[str, ModelCase] = {
    "transformer_encoder": model_case(EncoderClassifier, (2, 10, 64)),
    "upsample_gelu_norm": model_case(UpsampleGeluNorm, (2, 3, 16, 16)),
    "super_resolution": model_case(SuperResolution, (2, 1, 8, 8)),
    "masked_attention": model_case(MaskedAttention, (2, 8, 32)),
    "derived_weights": model_case(DerivedWeights, (2, 3, 8, 8)),
}

# module-level factories, for `xbc compile tests/models_wild.py:transformer_encoder --input-shape 1,10,64`
transformer_encoder = WILD_MODELS["transformer_encoder"].factory
upsample_gelu_norm = WILD_MODELS["upsample_gelu_norm"].factory
super_resolution = WILD_MODELS["super_resolution"].factory
masked_attention = WILD_MODELS["masked_attention"].factory
derived_weights = WILD_MODELS["derived_weights"].factory
