"""Ideal-mode emulator: single layers of every geometry against torch, inputs, errors, localisation, CUDA."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import xbcompiler as xb
from tests.conftest import compile_quiet, zoo_compile
from tests.models import MODELS
from xbcompiler.emulator.literal import derived_cells, read_back
from xbcompiler.netlist.placement import block_cells

TOL = 1e-5
#: tiny, plus an odd-sized variant: 24 rows, 20 physical columns = 5 logical columns (m_c = 4)
ODD = {"crossbar.rows": 24, "crossbar.cols": 20}
TARGETS = [("tiny", None), ("tiny", ODD), ("prime-like", None), ("isaac-like", None)]
TARGET_IDS = ["tiny", "tiny-24x5", "prime-like", "isaac-like"]


def rel_error(ref: torch.Tensor, got: torch.Tensor) -> float:
    assert ref.shape == got.shape, (ref.shape, got.shape)
    ref, got = ref.detach().double().cpu(), got.detach().double().cpu()
    return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30))


def seeded(module_factory, seed=0):
    torch.manual_seed(seed)
    return module_factory().eval()


# (id, module factory, input shape, check) -- `check(netlist)` asserts the case exercises what it claims
LAYERS = [
    ("grouped-several-row-blocks", lambda: nn.Conv2d(64, 32, 3, padding=1, groups=2), (2, 64, 7, 9),
     lambda nl, t: nl.layers[0].matrix_rows > t.crossbar.rows and nl.layers[0].groups == 2),
    ("grouped-blocks-straddle-channels", lambda: nn.Conv2d(10, 6, 3, groups=2), (2, 10, 6, 5),
     lambda nl, t: nl.layers[0].matrix_rows == 45),
    ("grouped-1x1", lambda: nn.Conv2d(24, 24, 1, groups=3, bias=False), (1, 24, 5, 5),
     lambda nl, t: nl.layers[0].groups == 3),
    ("depthwise", lambda: nn.Conv2d(12, 12, 3, padding=1, groups=12), (2, 12, 8, 8),
     lambda nl, t: nl.layers[0].groups == 12 and nl.layers[0].matrix_rows == 9),
    ("depthwise-multiplier-stride2", lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8), (2, 8, 9, 7),
     lambda nl, t: nl.layers[0].matrix_cols == 16),
    ("dilation", lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2), (2, 4, 9, 9),
     lambda nl, t: nl.layers[0].geometry.dilation == (2, 2)),
    ("dilation-asymmetric", lambda: nn.Conv2d(3, 5, (3, 2), padding=(1, 0), dilation=(2, 3)), (2, 3, 8, 11),
     lambda nl, t: nl.layers[0].geometry.dilation == (2, 3)),
    ("stride2-odd-width", lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 9, 11),
     lambda nl, t: nl.layers[0].output_shape == [8, 5, 6]),
    ("odd-kernel-stride", lambda: nn.Conv2d(3, 5, (3, 5), stride=(2, 1), padding=(1, 2), bias=False),
     (2, 3, 7, 13), lambda nl, t: nl.layers[0].geometry.kernel == (3, 5)),
    ("wide-dense", lambda: nn.Conv2d(20, 70, 3, padding=1), (1, 20, 5, 5),
     lambda nl, t: nl.layers[0].crossbars > 1),
    ("conv1d", lambda: nn.Conv1d(6, 10, 5, stride=2, padding=2), (2, 6, 33),
     lambda nl, t: nl.layers[0].kind == "conv1d" and nl.layers[0].geometry.kernel == (1, 5)),
    ("conv1d-grouped-dilated", lambda: nn.Conv1d(12, 8, 3, padding=3, dilation=3, groups=4), (2, 12, 21),
     lambda nl, t: nl.layers[0].groups == 4),
    ("linear-3d-input", lambda: nn.Linear(40, 20), (2, 7, 40),
     lambda nl, t: nl.layers[0].cycles * nl.layers[0].row_copies == 7),  # 7 vectors, folded or unfolded
    ("linear-4d-input-no-bias", lambda: nn.Linear(33, 9, bias=False), (2, 3, 5, 33),
     lambda nl, t: nl.layers[0].arrays.bias is None),
    ("linear-tall", lambda: nn.Linear(300, 3), (4, 300),
     lambda nl, t: nl.layers[0].row_tiles > 1),
]


@pytest.mark.parametrize("target,overrides", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("factory,shape,check", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
def test_single_layer(factory, shape, check, target, overrides):
    mod = seeded(factory)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    compiled = compile_quiet(mod, (x,), target, overrides=overrides)
    netlist = compiled.netlist
    assert len(netlist.layers) == 1
    assert check(netlist, compiled.target)
    with torch.no_grad():
        expected = mod(x)
    got = xb.emulate(netlist, x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert rel_error(expected, got) < TOL
    # the crossbars themselves (cells derived from the placement records) compute the same
    literal = xb.emulate(netlist, x, literal=True)
    assert literal.shape == expected.shape and literal.dtype == expected.dtype
    assert rel_error(expected, literal) < TOL
    # another batch size through the same (cached) emulators
    x3 = torch.randn(3, *shape[1:])
    with torch.no_grad():
        assert rel_error(mod(x3), xb.emulate(netlist, x3)) < TOL
        assert rel_error(mod(x3), xb.emulate(netlist, x3, literal=True)) < TOL
    report = xb.verify(netlist, mod, (x,))
    assert report.ok and report.max_rel < TOL, report.to_dict()


def test_grouped_conv_has_several_row_blocks_per_group():
    """The case the row-block reader must sum: one group's rows spread over several crossbars."""
    mod = seeded(lambda: nn.Conv2d(64, 32, 3, padding=1, groups=2))
    x = torch.randn(2, 64, 7, 9)
    netlist = compile_quiet(mod, (x,), "tiny", pipeline="fully-folded").netlist
    layer = netlist.layers[0]
    blocks = {(s.group, *s.rows) for c in netlist.crossbars for s in c.slices}
    assert {g for g, *_ in blocks} == {0, 1}
    assert len(blocks) == 2 * -(-layer.matrix_rows // 16)  # 2 groups x ceil(288 / 16) row blocks
    # the row blocks read back from the derived cells are those blocks, and together hold the matrix
    read = read_back(layer, netlist.layer_crossbars(layer), derived_cells(netlist, layer))
    assert {(b.group, int(b.rows[0]), int(b.rows[-1]) + 1) for b in read} == blocks
    summed = np.zeros_like(netlist.weight(layer))
    for b in read:
        summed[b.group][b.rows] += b.weight
    np.testing.assert_array_equal(summed, netlist.weight(layer))
    with torch.no_grad():
        assert rel_error(mod(x), xb.emulate(netlist, x)) < TOL
        assert rel_error(mod(x), xb.emulate(netlist, x, literal=True)) < TOL


def test_float64_inputs_run_in_float64():
    mod = seeded(lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2))
    x = torch.randn(2, 4, 5, 5)
    netlist = compile_quiet(mod, (x,), "tiny").netlist
    got = xb.emulate(netlist, x.double())
    literal = xb.emulate(netlist, x.double(), literal=True)
    assert got.dtype == literal.dtype == torch.float64
    with torch.no_grad():
        assert rel_error(mod.double()(x.double()), got) < 1e-12
        assert rel_error(mod.double()(x.double()), literal) < 1e-12


# --------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def mlp_netlist():
    return zoo_compile("mlp", "tiny").compiled.netlist


def test_accepts_tensor_tuple_and_list(mlp_netlist):
    x = MODELS["mlp"].example_input()
    a = xb.emulate(mlp_netlist, x)
    b = xb.emulate(mlp_netlist, (x,))
    c = xb.emulate(mlp_netlist, [x])
    assert torch.equal(a, b) and torch.equal(a, c)
    assert a.device.type == "cpu"


@pytest.mark.parametrize("bad", [
    lambda x: torch.randn(2, 1, 8, 9),  # wrong width
    lambda x: torch.randn(2, 8, 8),  # missing a dimension
    lambda x: torch.randn(2, 2, 8, 8),  # wrong channels
    lambda x: (x, x),  # two inputs for a one-input netlist
    lambda x: (),  # none
    lambda x: [x.numpy()],  # not a tensor
    lambda x: "x",
], ids=["width", "rank", "channels", "count", "empty", "numpy", "string"])
def test_bad_inputs_are_xb505(mlp_netlist, bad):
    with pytest.raises(xb.CompileError) as info:
        xb.emulate(mlp_netlist, bad(MODELS["mlp"].example_input()))
    assert info.value.code == "XB505"


def test_bad_input_count_with_two_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, a, b):
            return self.fc(a) + b

    model = seeded(Two)
    a, b = torch.randn(2, 4), torch.randn(2, 3)
    netlist = compile_quiet(model, (a, b), "tiny").netlist
    with torch.no_grad():
        assert rel_error(model(a, b), xb.emulate(netlist, (a, b))) < TOL
    for bad in [a, (a,), (a, b, b), (b, a)]:
        with pytest.raises(xb.CompileError) as info:
            xb.emulate(netlist, bad)
        assert info.value.code == "XB505"


def test_unknown_mode_is_xb505(mlp_netlist):
    with pytest.raises(xb.CompileError) as info:
        xb.emulate(mlp_netlist, MODELS["mlp"].example_input(), mode="quantum")
    assert info.value.code == "XB505"


def test_verify_with_seeded_random_inputs(mlp_netlist):
    model = zoo_compile("mlp", "tiny").model
    a = xb.verify(mlp_netlist, model, batch=3, seed=5)
    b = xb.verify(mlp_netlist, model, batch=3, seed=5)
    assert a.ok and a.max_rel < TOL
    assert a.to_dict() == b.to_dict()
    assert [c.name for c in a.layers] == [layer.name for layer in mlp_netlist.layers]


# ------------------------------------------------------------------------------------ localisation


def corrupted(netlist: xb.Netlist, layer: str, local: int, delta: float = 1.0) -> xb.Netlist:
    """A copy of ``netlist`` with ``delta`` added to every weight the layer's ``local``-th crossbar holds.

    The matrix is stored once (format 2): with one copy of each weight, changing the weights a
    crossbar's placement records name changes that crossbar's cells and no other's.
    """
    record = netlist.layer(layer)
    assert record.copies == 1
    x = netlist.layer_crossbars(record)[local]
    weight = netlist.weight(record)
    held = np.zeros(weight.shape, dtype=bool)
    for s in x.slices:
        held[s.group, s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]] = True
    for b in x.blocks:
        _, _, m_row, m_col = block_cells(record, b)
        held[b.group][m_row, m_col] = True
    assert held.any()
    bad = xb.Netlist(netlist.doc, {**netlist.arrays, record.arrays.weight.key: weight + np.float32(delta) * held})
    # the derived cells differ on that crossbar only
    for y in netlist.layer_crossbars(record):
        same = np.array_equal(bad.crossbar_cells(y.id), netlist.crossbar_cells(y.id))
        assert same == (y.id != x.id), y.id
    return bad


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 40)  # on tiny: K = 10 fits 16 rows, 40 columns -> 10 crossbars of 4
        self.fc2 = nn.Linear(40, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("local", [0, 5, 9])
def test_first_mismatch_names_the_corrupted_crossbar(local):
    model = seeded(TwoLinear)
    x = torch.randn(4, 10)
    netlist = compile_quiet(model, (x,), "tiny").netlist
    assert xb.verify(netlist, model, (x,)).ok
    layer = netlist.layer("fc1")
    assert layer.crossbars == 10
    want = netlist.crossbars[layer.first_crossbar + local].id

    bad = corrupted(netlist, "fc1", local)
    report = xb.verify(bad, model, (x,))
    assert not report.ok
    first = report.first_mismatch
    assert first is not None and first.name == "fc1" and not first.ok
    assert first.first_mismatch == want
    assert first.rel > report.tolerance
    # the original netlist (and its cached emulator) is untouched
    again = xb.verify(netlist, model, (x,))
    assert again.ok and again.first_mismatch is None


def test_first_mismatch_in_a_later_conv_layer():
    zc = zoo_compile("digits_cnn", "tiny")
    netlist, model, x = zc.compiled.netlist, zc.model, zc.x
    layer = netlist.layers[1]  # 16 -> 32 channels, 3x3: 144 rows = 9 row tiles x 8 column tiles
    assert layer.row_tiles > 1 and layer.col_tiles > 1
    local = 3  # row tile 0, column tile 3
    xbar = netlist.crossbars[layer.first_crossbar + local]
    assert xbar.slices[0].rows[0] == 0
    report = xb.verify(corrupted(netlist, layer.name, local), model, (x,))
    assert not report.ok
    assert [c.ok for c in report.layers[:1]] == [True]  # the layer before is fine
    assert report.first_mismatch.name == layer.name
    assert report.first_mismatch.first_mismatch == xbar.id


def test_first_mismatch_in_a_lower_row_tile_names_a_crossbar_of_those_columns():
    """verify localises by output channel: the named crossbar holds the mismatching columns."""
    zc = zoo_compile("digits_cnn", "tiny")
    netlist, model, x = zc.compiled.netlist, zc.model, zc.x
    layer = netlist.layers[1]
    first = layer.first_crossbar
    local = 2 * layer.col_tiles + 5  # row tile 2, column tile 5
    cols = netlist.crossbars[first + local].slices[0].cols
    report = xb.verify(corrupted(netlist, layer.name, local), model, (x,))
    named = report.first_mismatch.first_mismatch
    holder = netlist.crossbar(named)
    assert holder.layer == layer.name and holder.slices[0].cols == cols


# -------------------------------------------------------------------------------------------- CUDA


#: CPU and CUDA kernels sum in different orders; the cross-device comparisons allow for that.
CUDA_TOL = 1e-4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")


@needs_cuda
def test_emulator_runs_on_cuda():
    zc = zoo_compile("shufflenet_small", "prime-like")
    netlist, model, x = zc.compiled.netlist, zc.model, zc.x
    cpu = xb.emulate(netlist, x)
    xc = x.cuda()
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    got = xb.emulate(netlist, xc)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags  # restored
    assert isinstance(got, torch.Tensor) and got.is_cuda
    assert rel_error(cpu, got) < CUDA_TOL
    literal = xb.emulate(netlist, xc, literal=True)  # the crossbars themselves, on the device
    assert literal.is_cuda and rel_error(cpu, literal) < CUDA_TOL
    with torch.no_grad():
        assert rel_error(model(x), got) < CUDA_TOL
    # the reference model on CUDA must not use TF32 either
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        report = xb.verify(netlist, copy.deepcopy(model).cuda(), (xc,))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert report.ok and report.max_rel < CUDA_TOL, report.to_dict()


@needs_cuda
def test_emulator_cuda_structured_outputs():
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 6, 3, padding=1, groups=2)
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            f = self.conv(x)
            return {"pooled": self.fc(f.mean(-1)), "features": (f, f.amax(-1))}

    model = seeded(Heads)
    x = torch.randn(3, 2, 17)
    netlist = compile_quiet(model, (x,), "tiny").netlist
    got = xb.emulate(netlist, x.cuda())
    assert set(got) == {"pooled", "features"} and isinstance(got["features"], tuple)
    with torch.no_grad():
        ref = model(x)
    for r, g in [(ref["pooled"], got["pooled"]), (ref["features"][0], got["features"][0]),
                 (ref["features"][1], got["features"][1])]:
        assert g.is_cuda and rel_error(r, g) < CUDA_TOL
