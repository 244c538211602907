"""``nn.MultiheadAttention`` and the Transformer encoder rewritten into crossbar projections and host products.

:class:`Attention` replaces ``nn.MultiheadAttention``: the input projection is one ``nn.Linear`` named
``in_proj`` holding ``in_proj_weight`` (``q_proj``/``k_proj``/``v_proj`` with its row blocks, or the
separate ``q_proj_weight``..., when query, key and value are not one tensor), the output projection is
``out_proj``; the products of two activations (``F.scaled_dot_product_attention``, or ``q @ k^T``,
``softmax`` and ``@ v`` when the attention weights are returned) run on the host.

``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder`` read their attention's internals (the
fast path checks ``self_attn.in_proj_weight``), so they are rewritten too, into the slow path they
compute in eval mode: :class:`EncoderLayer` and :class:`Encoder`, with the user's submodule names
(``layers.0.self_attn.in_proj``, ``linear1``, ``norm1``...). Symbolic tracing then sees through them.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..diagnostics import CompileError
from .rewrite_recurrent import NeedsExport, linear_copy, traced_path


def float_mask(mask: torch.Tensor | None, dtype: torch.dtype, name: str) -> torch.Tensor | None:
    """A boolean mask as the additive float mask torch uses (``-inf`` where True); a float mask as it is."""
    if mask is None:
        return None
    if isinstance(mask, fx.Proxy):
        raise NeedsExport(f"{name} (in module{traced_path(mask)}) is a tensor whose dtype "
                          "symbolic tracing does not know")
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask


class Attention(nn.Module):
    """An exact equivalent of an ``nn.MultiheadAttention`` in eval mode (same signature and outputs)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn:
            raise CompileError("XB103", "nn.MultiheadAttention with add_bias_kv=True or add_zero_attn=True is not "
                                        "supported", hint="construct it with add_bias_kv=False, add_zero_attn=False")
        self.embed_dim, self.num_heads, self.batch_first = mha.embed_dim, mha.num_heads, mha.batch_first
        self.head_dim = mha.head_dim
        E = mha.embed_dim
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        if mha._qkv_same_embed_dim:
            self.in_proj = linear_copy(mha.in_proj_weight, mha.in_proj_bias)
            weights = mha.in_proj_weight.split(E)
        else:
            self.in_proj = None
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        self.q_proj, self.k_proj, self.v_proj = (linear_copy(w, b) for w, b in zip(weights, biases))
        self.out_proj = linear_copy(mha.out_proj.weight, mha.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not isinstance(query, fx.Proxy) and query.dim() != 3:
            raise CompileError("XB104", "nn.MultiheadAttention on an unbatched (2-D) input is not supported",
                               hint="add a batch dimension of 1")
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        if not self.batch_first:  # [L, B, E] -> [B, L, E]
            query, key, value = _batch_first(query, key, value)
        q, k, v = self._project(query, key, value)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # [B, H, L, dh]
        padding = float_mask(key_padding_mask, q.dtype, "key_padding_mask")
        causal = is_causal and padding is None and not need_weights
        mask = None if causal else self._mask(float_mask(attn_mask, q.dtype, "attn_mask"), padding)
        if need_weights:
            scores = (q * math.sqrt(1.0 / self.head_dim)) @ k.transpose(-2, -1)
            weights = F.softmax(scores if mask is None else scores + mask, dim=-1)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).flatten(-2))  # [B, L, E]
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _heads(self, t):
        """``[B, L, E] -> [B, H, L, E / H]``."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _project(self, query, key, value):
        if self.in_proj is not None and query is key and key is value:
            return self.in_proj(query).chunk(3, -1)
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    def _mask(self, attn_mask, padding):
        """``attn_mask`` ([L, S] or [B * H, L, S]) plus ``key_padding_mask`` ([B, S]), broadcast to [B, H, L, S]."""
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unflatten(0, (-1, self.num_heads))
        if padding is not None:
            padding = padding.unsqueeze(1).unsqueeze(2)
            return padding if attn_mask is None else attn_mask + padding
        return attn_mask


def _batch_first(*tensors):
    """``[L, B, E] -> [B, L, E]`` keeping shared tensors shared (the self-attention test is ``is``)."""
    seen: dict[int, torch.Tensor] = {}
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen[id(t)] = t.transpose(0, 1)
        out.append(seen[id(t)])
    return out


class EncoderLayer(nn.Module):
    """An ``nn.TransformerEncoderLayer`` as its eval-mode slow path (no dropout)."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        self.self_attn = Attention(layer.self_attn)
        self.linear1, self.linear2 = copy.deepcopy(layer.linear1), copy.deepcopy(layer.linear2)
        self.norm1, self.norm2 = copy.deepcopy(layer.norm1), copy.deepcopy(layer.norm2)
        self.norm_first = layer.norm_first
        self.activation = copy.deepcopy(layer.activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._attend(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._attend(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward(x))

    def _attend(self, x, mask, padding, is_causal):
        return self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                              is_causal=is_causal)[0]

    def _feed_forward(self, x):
        return self.linear2(self.activation(self.linear1(x)))


class Encoder(nn.Module):
    """An ``nn.TransformerEncoder``: its layers in turn, then its norm.

    Where torch would run its nested-tensor fast path (``enable_nested_tensor``, a key padding mask and
    no attention mask, in inference), the outputs at padded positions are zeros, as torch returns them
    for a left-aligned mask (valid tokens first).
    """

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = nn.ModuleList(_encoder_layer(layer) for layer in encoder.layers)
        self.norm = copy.deepcopy(encoder.norm)
        self.zeroes_padding = bool(getattr(encoder, "use_nested_tensor", False))

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        padding = float_mask(src_key_padding_mask, src.dtype, "src_key_padding_mask")
        mask = float_mask(mask, src.dtype, "mask")
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=padding, is_causal=bool(is_causal))
        if self.zeroes_padding and padding is not None and mask is None:
            x = x.masked_fill(torch.ne(padding, 0).unsqueeze(-1), 0.0)
        return x if self.norm is None else self.norm(x)


def _encoder_layer(layer: nn.Module) -> nn.Module:
    if type(layer) is nn.TransformerEncoderLayer:
        return EncoderLayer(layer)
    raise CompileError("XB103", f"nn.TransformerEncoder of {type(layer).__name__} layers is not supported",
                       hint="build it from nn.TransformerEncoderLayer, or write the stack as an nn.ModuleList")


#: Attention module types and their rewrite (merged into :data:`.rewrites.REWRITES`).
ATTENTION_REWRITES = {nn.MultiheadAttention: Attention, nn.TransformerEncoderLayer: EncoderLayer,
                      nn.TransformerEncoder: Encoder}
