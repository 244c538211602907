"""``nn.MultiheadAttention`` and the Transformer encoder rewritten into crossbar projections and host
products (issue 11).

The rewrite is torch's computation (float64: masks, cross-attention, returned weights, both layouts);
``nn.TransformerEncoder`` and a ViT-style encoder compile with either front end, verify in ideal mode
and bit-exactly in integer mode, and hold every projection on crossbar layers.
"""

from __future__ import annotations

import copy

import msgspec
import pytest
import torch
from torch import nn

import xbcompiler as xb
from tests.models_sequence import (
    SEQUENCE_MODELS,
    assert_bit_exact_in_integer_mode,
    assert_weights_on_crossbars,
    compile_quiet,
)
from xbcompiler import CompileError
from xbcompiler.frontend.rewrite_attention import Attention, Encoder, EncoderLayer
from xbcompiler.frontend.rewrites import rewrite_modules

ATTENTION = ["transformer_encoder", "tiny_vit"]


def assert_same(expected, got, tol=1e-10) -> None:
    expected, got = torch.utils._pytree.tree_flatten(expected)[0], torch.utils._pytree.tree_flatten(got)[0]
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def rewritten(module: nn.Module) -> nn.Module:
    return rewrite_modules(copy.deepcopy(module))


def mha(batch_first=True, bias=True, kdim=None, vdim=None) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    return nn.MultiheadAttention(8, 2, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first).double().eval()


def layout(t: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return t if batch_first else t.transpose(0, 1)


# --------------------------------------------------------------------------- multi-head attention


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)],
                         ids=["no-weights", "mean-weights", "head-weights"])
@pytest.mark.parametrize("inputs", ["self", "cross", "separate-dims"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_attention_computes_what_torch_computes(batch_first, need_weights, average, inputs, bias):
    kdim = vdim = 5 if inputs == "separate-dims" else None
    attn = mha(batch_first, bias, kdim, vdim)
    x = layout(torch.randn(2, 4, 8, dtype=torch.double), batch_first)
    memory = layout(torch.randn(2, 3, kdim or 8, dtype=torch.double), batch_first)
    q, k, v = (x, x, x) if inputs == "self" else (x, memory, memory)
    options = {"need_weights": need_weights, "average_attn_weights": average}
    with torch.no_grad():
        assert_same(attn(q, k, v, **options), rewritten(attn)(q, k, v, **options))


@pytest.mark.parametrize("need_weights", [False, True], ids=["no-weights", "weights"])
def test_attention_masks_are_torch_masks(need_weights):
    attn = mha()
    x = torch.randn(2, 4, 8, dtype=torch.double)
    padding = torch.tensor([[False, False, True, True], [False, False, False, False]])
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.double)
    per_head = torch.randn(2 * 2, 4, 4, dtype=torch.double)
    cases = [{"key_padding_mask": padding}, {"attn_mask": causal.isinf()}, {"attn_mask": per_head},
             {"attn_mask": causal, "is_causal": True}, {"attn_mask": causal, "key_padding_mask": padding.double()},
             {"attn_mask": causal.isinf(), "key_padding_mask": padding}]
    with torch.no_grad():
        for masks in cases:
            assert_same(attn(x, x, x, need_weights=need_weights, **masks),
                        rewritten(attn)(x, x, x, need_weights=need_weights, **masks))


def test_attention_keeps_the_users_path_and_one_input_projection():
    model = nn.Sequential()
    model.add_module("attn", mha())
    names = dict(rewritten(model).named_parameters())
    assert torch.equal(names["attn.in_proj.weight"], model.attn.in_proj_weight)
    assert torch.equal(names["attn.in_proj.bias"], model.attn.in_proj_bias)
    assert torch.equal(names["attn.out_proj.weight"], model.attn.out_proj.weight)
    assert torch.equal(names["attn.k_proj.weight"], model.attn.in_proj_weight[8:16])  # for cross-attention


def test_unsupported_attention_options_are_refused():
    with pytest.raises(CompileError) as info:
        rewritten(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    assert info.value.code == "XB103" and "add_bias_kv" in info.value.message
    with pytest.raises(CompileError) as info:
        rewritten(mha())(torch.randn(4, 8, dtype=torch.double), torch.randn(4, 8, dtype=torch.double),
                         torch.randn(4, 8, dtype=torch.double))
    assert info.value.code == "XB104" and "unbatched" in info.value.message


# --------------------------------------------------------------------------- the encoder and other users of it


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "module"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_encoder_computes_what_torch_computes(norm_first, activation, batch_first):
    torch.manual_seed(0)
    act = nn.SiLU() if activation == "module" else activation
    layer = nn.TransformerEncoderLayer(8, 2, 16, activation=act, batch_first=batch_first, norm_first=norm_first)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False).double().eval()
    x = layout(torch.randn(2, 5, 8, dtype=torch.double), batch_first)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.double).isinf()
    copy_ = rewritten(encoder)
    assert isinstance(copy_, Encoder) and all(isinstance(m, EncoderLayer) for m in copy_.layers)
    with torch.no_grad():
        assert_same(encoder(x), copy_(x))
        assert_same(encoder(x, mask=causal, src_key_padding_mask=padding),
                    copy_(x, mask=causal, src_key_padding_mask=padding))
        assert_same(encoder(x, mask=causal, is_causal=True), copy_(x, mask=causal, is_causal=True))
        layer = encoder.layers[0]
        assert_same(layer(x, src_key_padding_mask=padding), rewritten(layer)(x, src_key_padding_mask=padding))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_nested_tensor_encoder_zeroes_padded_positions_as_torch_does():
    """Inference with ``enable_nested_tensor`` (the default) and a padding mask: torch's nested fast path."""

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8))

        def forward(self, x, padding):
            return self.encoder(x, src_key_padding_mask=padding)

    torch.manual_seed(0)
    model = Padded().eval()
    assert model.encoder.use_nested_tensor
    x, padding = torch.randn(2, 5, 8), torch.tensor([[False] * 5, [False, False, False, True, True]])
    compiled = compile_quiet(model, (x, padding), "tiny")
    with torch.no_grad():
        expected = model(x, padding)
    assert torch.equal(expected[1, 3:], model.encoder.norm(torch.zeros(2, 8)).detach())  # torch's zeros, normed
    torch.testing.assert_close(compiled(x, padding), expected, rtol=1e-5, atol=1e-5)


def test_decoder_and_transformer_run_on_the_rewritten_attention():
    """nn.TransformerDecoderLayer and nn.Transformer are not rewritten; they call the rewritten attention."""
    torch.manual_seed(0)
    model = nn.Transformer(8, 2, 1, 1, 16, batch_first=True).double().eval()
    src, tgt = torch.randn(2, 5, 8, dtype=torch.double), torch.randn(2, 4, 8, dtype=torch.double)
    mask = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.double)
    copy_ = rewritten(model)
    assert isinstance(copy_.decoder.layers[0].multihead_attn, Attention)
    with torch.no_grad():
        assert_same(model(src, tgt, tgt_mask=mask), copy_(src, tgt, tgt_mask=mask), tol=1e-8)


def test_masks_under_symbolic_tracing_are_refused():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x, padding):
            return self.attn(x, x, x, key_padding_mask=padding)[0]

    inputs = (torch.randn(2, 4, 8), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(CompileError) as info:
        compile_quiet(Masked().eval(), inputs, frontend="fx")
    assert info.value.code == "XB101" and "key_padding_mask (in module 'attn')" in info.value.message
    compiled = compile_quiet(Masked().eval(), inputs)
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"


# --------------------------------------------------------------------------- the models on crossbars


@pytest.mark.parametrize("name", ATTENTION)
def test_model_compiles_with_either_front_end_and_verifies(name):
    case = SEQUENCE_MODELS[name]
    model, x = case.build(), case.example_input()
    exported = compile_quiet(model, (x,))
    traced = compile_quiet(model, (x,), frontend="fx")
    assert exported.netlist.doc.provenance["frontend"]["used"] == "export"
    assert msgspec.to_builtins(exported.netlist.layers) == msgspec.to_builtins(traced.netlist.layers)
    for compiled in (exported, traced):
        report = xb.verify(compiled.netlist, model, (x,))
        assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    for batch in (x, case.example_input(seed=1)[:1].expand(3, *x.shape[1:])):  # and on another batch size
        with torch.no_grad():
            expected = model(batch)
        assert ((exported(batch) - expected).abs().max() / expected.abs().max()).item() <= 1e-4
    assert_weights_on_crossbars(exported, model)


@pytest.mark.parametrize("name", ATTENTION)
def test_model_is_bit_exact_in_integer_mode(name):
    assert_bit_exact_in_integer_mode(name)


def test_attention_products_are_listed_on_the_host():
    case = SEQUENCE_MODELS["tiny_vit"]
    rows = compile_quiet(case.build(), (case.example_input(),)).coverage
    host = {r.operator for r in rows if r.placement == "host" and r.macs}
    crossbar = {r.operator for r in rows if r.placement == "crossbar"}
    assert host == {"torch.matmul"}  # q @ k^T and weights @ v: the attention weights are returned
    assert crossbar == {"Conv2d", "Linear"}
