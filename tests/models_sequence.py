"""Sequence models built from ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and ``nn.MultiheadAttention`` (issue 11).

The front end rewrites these layers into crossbar ``nn.Linear`` layers and host operators
(``xbcompiler/frontend/rewrite_recurrent.py``, ``rewrite_attention.py``). Same format as
:mod:`tests.models`: seeded factories returning eval-mode models, ``SEQUENCE_MODELS`` as
:class:`tests.models.ModelCase` entries (the input shape includes the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.models import ModelCase, model_case
from tests.models_wild import WILD_MODELS


class LSTMClassifier(nn.Module):
    """``nn.LSTM(8, 16, batch_first=True)`` over 6 steps; a Linear head on the last hidden state."""

    def __init__(self, features: int = 8, hidden: int = 16, num_classes: int = 5):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):  # [B, T, features]
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


class GRUTagger(nn.Module):
    """``nn.GRU(8, 12)`` (sequence-first, fed ``x.transpose(0, 1)``); a Linear tag per step plus the final state's.

    The model's input and its Linear layers' are batch-first: a crossbar layer records its input's shape
    after the first dimension, and the integer reference reads one sample as ``x[:1]``.
    """

    def __init__(self, features: int = 8, hidden: int = 12, tags: int = 4):
        super().__init__()
        self.gru = nn.GRU(features, hidden)
        self.tag = nn.Linear(hidden, tags)

    def forward(self, x):  # [B, T, features]
        out, h_n = self.gru(x.transpose(0, 1))  # [T, B, hidden], [1, B, hidden]
        return self.tag(out.transpose(0, 1)) + self.tag(h_n[-1]).unsqueeze(1)


class BiLSTM(nn.Module):
    """Two-layer bidirectional ``nn.LSTM(8, 10)``, batch-first; mean over time and both final states."""

    def __init__(self, features: int = 8, hidden: int = 10, num_classes: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(4 * hidden, num_classes)

    def forward(self, x):  # [B, T, features]
        out, (h_n, _) = self.lstm(x)
        return self.head(torch.cat([out.mean(dim=1), h_n[-2] + h_n[-1], h_n[0]], dim=-1))


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y)[0]  # need_weights defaults to True: the weights are computed, then dropped
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """ViT-style: 4x4 patch embedding of 16x16 images, position embedding, two pre-norm
    ``nn.MultiheadAttention`` blocks (dim 32, 4 heads), mean-pooled Linear head."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, num_classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.pos = nn.Parameter(0.1 * torch.randn(1, 16, dim))
        self.blocks = nn.ModuleList(_ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):  # [B, 3, 16, 16]
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # [B, 16, dim]
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t).mean(dim=1))


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight matrix the crossbars must hold: of Linear and Conv layers, recurrent layers
    (``weight_ih_l0``, ``weight_hh_l0``, ``weight_hr_l0``...) and attention input projections."""
    found = {}
    for path, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            names = ["weight"]
        elif isinstance(module, nn.RNNBase):
            names = [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
        elif isinstance(module, nn.MultiheadAttention):
            names = ["in_proj_weight"] if module._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight",
                                                                           "v_proj_weight"]
        else:
            continue
        found.update({f"{path}.{n}": getattr(module, n) for n in names})
    return found


def assert_weights_on_crossbars(compiled, model: nn.Module) -> None:
    """Each weight tensor of ``model`` is the matrix of a crossbar layer, and the layers' sources are
    exactly one per tensor (a hidden projection called at every time step is one source)."""
    netlist = compiled.netlist
    matrices = [netlist.weight(layer) for layer in netlist.layers]
    weights = weight_tensors(model)
    for name, w in weights.items():
        want = w.detach().reshape(w.shape[0], -1).T.numpy()
        assert any(m.shape == (1, *want.shape) and (m[0] == want).all() for m in matrices), name
    assert len({layer.source for layer in netlist.layers}) == len(weights)


def compile_quiet(model, inputs, target="isaac-like", **kwargs):
    """``xb.compile`` with its coded warnings silenced."""
    import warnings

    import xbcompiler as xb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, inputs, target, **kwargs)


def assert_bit_exact_in_integer_mode(name: str) -> None:
    """Model ``name`` compiled with calibration verifies in integer mode with no differing integer."""
    import xbcompiler as xb

    case = SEQUENCE_MODELS[name]
    model, x = case.build(), case.example_input()
    calibration = torch.randn(8, *case.input_shape[1:], generator=torch.Generator().manual_seed(5))
    compiled = compile_quiet(model, (x,), calibration=calibration)
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.mode == "integer" and report.ok, report.to_dict()
    assert sum(c.mismatches for c in report.layers) == 0


#: The issue's recurrent and attention models (the TransformerEncoder is shared with tests/models_wild.py).
SEQUENCE_MODELS: dict[str, ModelCase] = {
    "transformer_encoder": WILD_MODELS["transformer_encoder"],
    "lstm_classifier": model_case(LSTMClassifier, (2, 6, 8)),
    "gru_tagger": model_case(GRUTagger, (2, 6, 8)),
    "bilstm": model_case(BiLSTM, (2, 5, 8)),
    "tiny_vit": model_case(TinyViT, (2, 3, 16, 16)),
}

# module-level factories, for `xbc compile tests/models_sequence.py:lstm_classifier --input-shape 1,6,8`
lstm_classifier = SEQUENCE_MODELS["lstm_classifier"].factory
gru_tagger = SEQUENCE_MODELS["gru_tagger"].factory
bilstm = SEQUENCE_MODELS["bilstm"].factory
tiny_vit = SEQUENCE_MODELS["tiny_vit"].factory
