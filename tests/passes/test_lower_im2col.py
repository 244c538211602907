"""``lower-im2col`` run alone through the PassManager (verify-each and numeric-check on).

Every Conv1d/Conv2d/Linear (and ``x @ W``) becomes an ``Im2colLayer`` whose matrices are
``[groups, K, N/groups]`` with rows in ``(c, dy, dx)`` order, compared here with matrices built
element by element; a corrupted matrix fails the pass's own check with XB201.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

import passes.lower_im2col as lower_im2col_module
from passes.fold_batchnorm import FoldBatchNormPass
from passes.lower_im2col import LowerIm2colPass
from tests.models import MODELS
from tests.passes.harness import check_golden, golden_text, make_context, run_passes
from xbcompiler.diagnostics import CompileError
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.matrix import Im2colLayer

# --- lower-im2col ---------------------------------------------------------------------------------------


def lower(model: nn.Module, inputs: tuple, pipeline=(), **options):
    """Trace, run ``pipeline`` then lower-im2col alone with verify-each and numeric-check; (graph, context)."""
    ctx = make_context(inputs)
    gm = run_passes(list(pipeline) + [LowerIm2colPass(**options)], trace(model, inputs), ctx)
    return gm, ctx


def layers(gm: fx.GraphModule) -> dict[str, Im2colLayer]:
    return {n.name: gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"}


def expected_matrix(weight: torch.Tensor, groups: int) -> np.ndarray:
    """``[groups, K, N/groups]`` built element by element: row ``(c * kh + dy) * kw + dx``, column ``n``."""
    w = weight.detach().numpy()
    if w.ndim == 2:  # Linear: rows are input features, columns output features
        return w.T[None].copy()
    if w.ndim == 3:
        w = w[:, :, None, :]  # Conv1d as a 1 x k kernel
    n_out, c_g, kh, kw = w.shape
    n_g = n_out // groups
    out = np.zeros((groups, c_g * kh * kw, n_g), dtype=np.float32)
    for g in range(groups):
        for n in range(n_g):
            for c in range(c_g):
                for dy in range(kh):
                    for dx in range(kw):
                        out[g, (c * kh + dy) * kw + dx, n] = w[g * n_g + n, c, dy, dx]
    return out


class Mixed(nn.Module):
    """Conv2d (grouped, strided, dilated, padding='same'), Conv1d, Linear and ``x @ W``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
        self.b = nn.Conv2d(6, 6, 3, padding="same", groups=3, bias=False)
        self.c = nn.Conv1d(6, 4, 3, stride=2)
        self.d = nn.Linear(8, 5)
        self.w = nn.Parameter(torch.randn(5, 3))

    def forward(self, x):  # [B, 4, 6, 6]
        y = torch.relu(self.b(self.a(x)))  # [B, 6, 3, 4]
        z = self.c(y.flatten(2))  # [B, 4, 5]
        v = self.d(torch.cat([z, z[:, :, :3]], -1))  # [B, 4, 5]
        return v @ self.w


def test_every_crossbar_layer_becomes_an_im2col_layer():
    torch.manual_seed(0)
    model, inputs = Mixed().eval(), (torch.randn(2, 4, 6, 6),)
    gm, ctx = lower(model, inputs)
    found = layers(gm)
    assert sorted(found) == ["a", "b", "c", "d", "matmul"]
    assert all(isinstance(m, Im2colLayer) for m in found.values())
    assert {n.target for n in gm.graph.nodes if n.op == "call_module"} == {f"xb_im2col_{k}" for k in found}
    assert not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) for m in gm.modules())
    assert "im2col" in ctx.properties
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs), rtol=1e-5, atol=1e-5)


def test_matrices_are_groups_by_rows_by_columns_in_c_dy_dx_order():
    torch.manual_seed(1)
    model, inputs = Mixed().eval(), (torch.randn(2, 4, 6, 6),)
    gm, _ = lower(model, inputs)
    found = {name: layer.matrix for name, layer in layers(gm).items()}
    for name, mod, groups in [("a", model.a, 2), ("b", model.b, 3), ("c", model.c, 1), ("d", model.d, 1)]:
        m = found[name]
        n_out = mod.weight.shape[0]
        k = mod.weight[0].numel()
        assert m.weight.shape == (groups, k, n_out // groups) and m.weight.dtype == np.float32
        np.testing.assert_array_equal(m.weight, expected_matrix(mod.weight, groups))
        assert m.rows == k and m.cols == n_out
        if mod.weight.dim() > 2:  # the same through one reshape: [N, C/g, kh, kw] -> [g, N/g, K] -> [g, K, N/g]
            w = mod.weight.detach().reshape(groups, n_out // groups, k).transpose(1, 2)
            np.testing.assert_array_equal(m.weight, w.numpy())
        if mod.bias is None:
            assert m.bias is None
        else:
            np.testing.assert_array_equal(m.bias, mod.bias.detach().numpy())
    np.testing.assert_array_equal(found["matmul"].weight[0], model.w.detach().numpy())
    assert found["matmul"].kind == "matmul" and found["matmul"].bias is None


def test_geometry_shapes_and_cycles():
    torch.manual_seed(2)
    gm, _ = lower(Mixed().eval(), (torch.randn(2, 4, 6, 6),))
    m = {name: layer.matrix for name, layer in layers(gm).items()}
    a, b, c, d = m["a"].geometry, m["b"].geometry, m["c"].geometry, m["d"].geometry
    assert (a.kind, a.groups, a.kernel, a.stride, a.padding, a.dilation) == \
        ("conv2d", 2, (3, 2), (2, 1), (1, 0), (1, 2))
    assert (b.padding, b.groups) == ((1, 1), 3)  # 'same' resolved to the symmetric padding
    assert (c.kind, c.kernel, c.stride, c.padding) == ("conv1d", (1, 3), (1, 2), (0, 0))
    assert (d.kind, d.in_channels, d.out_channels) == ("linear", 8, 5)
    assert m["a"].input_shape == (4, 6, 6) and m["a"].output_shape == (6, 3, 4)
    assert m["c"].input_shape == (6, 12) and m["c"].output_shape == (4, 5)
    assert m["a"].cycles == 12 and m["c"].cycles == 5 and m["d"].cycles == 4
    assert {x.name for x in m.values()} == set(m) and all(x.reference == x.name for x in m.values())


def test_reference_follows_the_folded_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    gm, _ = lower(model, (torch.randn(1, 3, 5, 5),), pipeline=[FoldBatchNormPass()])
    refs = {name: layer.matrix.reference for name, layer in layers(gm).items()}
    assert refs == {"_0": "_1", "_3": "_3"}
    assert layers(gm)["_0"].matrix.source == "0"


def test_a_layer_the_front_end_did_not_annotate_is_xb202():
    """A graph that bypassed the front end lacks the ``Source`` annotation: XB202 says who records it."""
    model, inputs = nn.Sequential(nn.Linear(4, 2)).eval(), (torch.randn(1, 4),)
    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(*inputs)
    with pytest.raises(CompileError) as info:
        run_passes([LowerIm2colPass()], gm, make_context(inputs), numeric=False)
    err = info.value
    assert err.code == "XB202" and err.location.node == "_0"
    assert "Source" in err.message and "xbcompiler.frontend.trace" in err.message
    assert any("lower-im2col" in note for note in err.__notes__)


def _corrupt(monkeypatch, how):
    real = lower_im2col_module.im2col_weight

    def corrupted(mod, geo):
        return how(real(mod, geo).copy())

    monkeypatch.setattr(lower_im2col_module, "im2col_weight", corrupted)


def _swap_rows(w):
    w[:, [0, 1]] = w[:, [1, 0]]  # (c, dy, dx) order broken: two rows exchanged
    return w


def test_internal_check_raises_xb201_on_a_corrupted_matrix(monkeypatch):
    _corrupt(monkeypatch, _swap_rows)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2)).eval()
    with pytest.raises(CompileError) as info:
        lower(model, (torch.randn(1, 2, 3, 3),))
    err = info.value
    assert err.code == "XB201" and err.location.node == "_0"
    assert any("lower-im2col" in note for note in err.__notes__)


def test_numeric_check_instrument_catches_what_an_unchecked_lowering_breaks(monkeypatch):
    _corrupt(monkeypatch, _swap_rows)
    model = nn.Sequential(nn.Conv2d(2, 3, 3)).eval()
    with pytest.raises(CompileError) as info:
        lower(model, (torch.randn(1, 2, 5, 5),), check=False)
    assert info.value.code == "XB201" and "changed the model's outputs" in info.value.message


def test_rtol_option_bounds_the_internal_check(monkeypatch):
    _corrupt(monkeypatch, lambda w: w * (1 + 1e-3))
    model = nn.Sequential(nn.Conv2d(2, 3, 3)).eval()
    inputs = (torch.randn(1, 2, 5, 5),)
    with pytest.raises(CompileError, match="relative error"):
        run_passes([LowerIm2colPass()], trace(model, inputs), make_context(inputs), numeric=False)
    gm = run_passes([LowerIm2colPass(rtol=1e-2)], trace(model, inputs), make_context(inputs), numeric=False)
    assert list(layers(gm)) == ["_0"]


@pytest.mark.parametrize("name", ["transformer_block", "functional_net", "shufflenet_small", "conv1d_net", "se_net"])
def test_zoo_models_lower_exactly(name):
    case = MODELS[name]
    model, inputs = case.build(), (case.example_input(),)
    gm, _ = lower(model, inputs, pipeline=[FoldBatchNormPass()])
    assert layers(gm)
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", ["convbn", "mlp", "functional_net"])
def test_golden(model_name):
    check_golden(f"{model_name}-lower-im2col", golden_text(model_name, LowerIm2colPass()))


def test_golden_failure_corrupted_matrix(monkeypatch):
    _corrupt(monkeypatch, _swap_rows)
    check_golden("convbn-lower-im2col-corrupted", golden_text("convbn", LowerIm2colPass()))
