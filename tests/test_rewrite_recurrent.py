"""``nn.RNN``/``nn.LSTM``/``nn.GRU`` rewritten into crossbar Linears and host gates (issue 11).

The rewrite is exactly torch's computation (float64, every configuration); the issue's recurrent
models compile with the default pipeline, verify in ideal mode and bit-exactly in integer mode, and
hold every recurrent weight on crossbar layers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import xbcompiler as xb
from tests.models_sequence import (
    SEQUENCE_MODELS,
    assert_bit_exact_in_integer_mode,
    assert_weights_on_crossbars,
    compile_quiet,
)
from xbcompiler import CompileError
from xbcompiler.frontend.rewrite_recurrent import UnrolledRecurrent
from xbcompiler.frontend.rewrites import rewrite_modules

RECURRENT = ["lstm_classifier", "gru_tagger", "bilstm"]


def flat(value) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_flatten(value)[0]


def assert_same(expected, got) -> None:
    expected, got = flat(expected), flat(got)
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def build(kind: str, **options) -> nn.RNNBase:
    torch.manual_seed(0)
    if kind.startswith("RNN"):
        return nn.RNN(5, 6, nonlinearity=kind.split("_")[1], **options).double().eval()
    return getattr(nn, kind)(5, 6, **options).double().eval()


KINDS = ["RNN_tanh", "RNN_relu", "LSTM", "GRU"]


# --------------------------------------------------------------------------- the rewrite is torch's computation


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_rewrite_computes_what_torch_computes(kind, layers, bidirectional, batch_first, bias):
    rnn = build(kind, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    rewritten = rewrite_modules(copy.deepcopy(rnn))
    assert isinstance(rewritten, UnrolledRecurrent)
    x = torch.randn(3, 4, 5, dtype=torch.double)  # [T, B, in] or [B, T, in]
    with torch.no_grad():
        expected = rnn(x)
        assert_same(expected, rewritten(x))
        assert_same(rnn(x, expected[1]), rewritten(x, expected[1]))  # a given initial state
        assert_same(rnn(x[0]), rewritten(x[0]))  # an unbatched input [T, in]


def test_lstm_with_projection_is_torch_computation():
    rnn = build("LSTM", num_layers=2, bidirectional=True, proj_size=3)
    x = torch.randn(4, 2, 5, dtype=torch.double)
    with torch.no_grad():
        assert_same(rnn(x), rewrite_modules(copy.deepcopy(rnn))(x))


def test_parameters_keep_the_users_path_and_copy_the_weights():
    model = nn.Sequential()
    model.add_module("lstm", nn.LSTM(5, 6, num_layers=2, bidirectional=True))
    rewritten = rewrite_modules(copy.deepcopy(model))
    params = dict(rewritten.named_parameters())
    for name, value in model.lstm.named_parameters():  # weight_ih_l1_reverse -> lstm.l1_reverse.ih.weight
        kind, matrix, layer, *reverse = name.split("_")
        path = f"lstm.{layer}{'_reverse' if reverse else ''}.{matrix}.{kind}"
        assert torch.equal(params.pop(path), value), path
    assert not params


def test_packed_sequence_is_refused():
    packed = pack_padded_sequence(torch.randn(3, 2, 5, dtype=torch.double), [3, 2])
    with pytest.raises(CompileError) as info:
        rewrite_modules(build("GRU"))(packed)
    assert info.value.code == "XB103" and "PackedSequence" in info.value.message


def test_symbolic_tracing_is_refused_with_the_module_path():
    model = SEQUENCE_MODELS["lstm_classifier"].build()
    x = SEQUENCE_MODELS["lstm_classifier"].example_input()
    with pytest.raises(CompileError) as info:
        compile_quiet(model, (x,), frontend="fx")
    assert info.value.code == "XB101"
    assert "nn.LSTM 'lstm'" in info.value.message and "--frontend export" in info.value.message


# --------------------------------------------------------------------------- the models on crossbars


@pytest.mark.parametrize("name", RECURRENT)
def test_model_compiles_and_verifies_in_ideal_mode(name):
    case = SEQUENCE_MODELS[name]
    model, x = case.build(), case.example_input()
    compiled = compile_quiet(model, (x,))
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    for batch in (x, case.example_input(seed=1)[:1].expand(3, *x.shape[1:])):  # and on another batch size
        with torch.no_grad():  # against torch's own recurrent layer, not the rewrite
            expected = model(batch)
        assert ((compiled(batch) - expected).abs().max() / expected.abs().max()).item() <= 1e-4
    assert_weights_on_crossbars(compiled, model)


@pytest.mark.parametrize("name", RECURRENT)
def test_model_is_bit_exact_in_integer_mode(name):
    assert_bit_exact_in_integer_mode(name)


def test_hidden_projection_is_one_crossbar_layer_per_step():
    """T steps without an initial state: ``ih`` once, ``hh`` T - 1 times, each call its own layer."""
    case = SEQUENCE_MODELS["lstm_classifier"]
    model, x = case.build(), case.example_input()
    steps = x.shape[1]
    sources = [layer.source for layer in compile_quiet(model, (x,)).netlist.layers]
    assert sources.count("lstm.l0.ih") == 1
    assert sources.count("lstm.l0.hh") == steps - 1
