"""End to end: compile -> save -> load -> verify/emulate for every zoo model on every built-in target.

Also: compile leaves the user's model alone, batch-size independence, byte-identical output of repeated
compiles, several inputs with tuple/dict outputs, and functional / ``W @ x`` weights on crossbars.
"""

from __future__ import annotations

import warnings

import msgspec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbcompiler as xb
from tests.conftest import TARGETS, compile_quiet, state_bytes, training_flags, zoo_compile
from tests.models import MODELS

#: Relative error (max |emulated - model| / max |model|, per layer and on the outputs) every model meets.
STRICT = 1e-5
#: Models checked only with verify's default tolerance (1e-4). ResNet-56 stacks 56 crossbar layers
#: (55 of them with a folded BatchNorm); the emulator sums row blocks in a different order than torch's
#: convolution, and those float32 accumulation-order differences grow to ~2e-5 over 56 layers.
#: That is rounding, not a mapping error, so it is held to the default tolerance only.
DEFAULT_TOLERANCE_ONLY = {"resnet56"}

HOST_WEIGHT_OPS = {"torch.nn.functional.conv1d", "torch.nn.functional.conv2d", "torch.nn.functional.linear",
                   "torch.matmul", "operator.matmul"}


def rel_error(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.detach().double(), got.detach().double()
    assert ref.shape == got.shape
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((ref - got).abs().max()) if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def assert_same_structure(ref, got, tol: float, where: str = "output") -> None:
    """``got`` has the structure of ``ref`` (tensors, tuples, lists, dicts) and every tensor agrees."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{where}: expected a tensor, got {type(got).__name__}"
        assert got.shape == ref.shape and got.dtype == ref.dtype, where
        err = rel_error(ref, got)
        assert err < tol, f"{where}: relative error {err:.3e} >= {tol:g}"
    elif isinstance(ref, dict):
        assert isinstance(got, dict) and set(got) == set(ref), f"{where}: keys {sorted(got)} != {sorted(ref)}"
        for k in ref:
            assert_same_structure(ref[k], got[k], tol, f"{where}[{k!r}]")
    elif isinstance(ref, (tuple, list)):
        assert type(got) is type(ref) and len(got) == len(ref), f"{where}: {type(got).__name__} of {len(got)}"
        for i, (r, g) in enumerate(zip(ref, got)):
            assert_same_structure(r, g, tol, f"{where}[{i}]")
    else:
        assert got == ref, where


def save_load(compiled: xb.CompiledModel, directory) -> xb.Netlist:
    compiled.save(directory)
    return xb.load_netlist(directory)


# ------------------------------------------------------------------------------------ zoo x targets


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_round_trip(name, target, tmp_path):
    zc = zoo_compile(name, target)
    model, x = zc.model, zc.x
    # compile never modifies the user's model
    assert state_bytes(model) == zc.state_before
    assert training_flags(model) == zc.flags_before

    netlist = save_load(zc.compiled, tmp_path)
    # the loaded document is the compiled one plus the checksum of weights.npz; the arrays are equal
    assert set(netlist.doc.blobs) == {"weights.npz"}
    assert msgspec.structs.replace(netlist.doc, blobs=zc.compiled.netlist.doc.blobs) == zc.compiled.netlist.doc
    assert set(netlist.arrays) == set(zc.compiled.netlist.arrays)
    for key, array in zc.compiled.netlist.arrays.items():
        assert netlist.arrays[key].dtype == array.dtype and np.array_equal(netlist.arrays[key], array), key
    report = xb.verify(netlist, model, (x,))
    assert report.ok, report.to_dict()
    assert report.layers and len(report.layers) == len(netlist.layers)
    tol = 1e-4 if name in DEFAULT_TOLERANCE_ONLY else STRICT
    if name not in DEFAULT_TOLERANCE_ONLY:
        assert report.max_rel < STRICT, report.to_dict()

    with torch.no_grad():
        expected = model(x)
    got = xb.emulate(netlist, x)
    assert_same_structure(expected, got, tol)
    # the crossbars themselves (cells derived from the placement records, literal execution) agree too
    assert_same_structure(expected, xb.emulate(netlist, x, literal=True), tol)
    # the compiled model is callable like the model and gives the same outputs
    assert_same_structure(expected, zc.compiled(x), tol)


# ------------------------------------------------------------------------------ model left untouched


@pytest.mark.parametrize("name", ["digits_cnn", "vgg_small", "transformer_block"])
def test_compile_leaves_train_mode_model_untouched(name):
    """BN running stats, num_batches_tracked, dropout and the training flags survive compile + verify."""
    case = MODELS[name]
    model = case.build().train()
    x = case.example_input()
    before, flags = state_bytes(model), training_flags(model)
    assert all(flags.values())
    compiled = compile_quiet(model, (x,), "prime-like")
    assert state_bytes(model) == before
    assert training_flags(model) == flags
    # the netlist is the inference (eval) function of the model
    report = xb.verify(compiled.netlist, model, (x,))
    assert report.ok and report.max_rel < STRICT, report.to_dict()
    assert state_bytes(model) == before
    assert training_flags(model) == flags
    model.eval()
    with torch.no_grad():
        assert_same_structure(model(x), xb.emulate(compiled.netlist, x), STRICT)


def test_compile_does_not_touch_requires_grad_or_grads():
    case = MODELS["lenet"]
    model = case.build()
    model.features[0].weight.requires_grad_(False)
    model.classifier[0].weight.grad = torch.ones_like(model.classifier[0].weight)
    before = state_bytes(model)
    compile_quiet(model, (case.example_input(),), "isaac-like")
    assert state_bytes(model) == before
    assert not model.features[0].weight.requires_grad and model.classifier[2].weight.requires_grad
    assert torch.equal(model.classifier[0].weight.grad, torch.ones_like(model.classifier[0].weight))


# ----------------------------------------------------------------------------------------- batch size


@pytest.mark.parametrize("name,target", [("resnet_digits", "tiny"), ("transformer_block", "isaac-like"),
                                         ("conv1d_net", "prime-like")])
def test_batch_size_independent(name, target, tmp_path):
    case = MODELS[name]
    model = case.build()
    gen = torch.Generator().manual_seed(7)
    x5 = torch.randn((5, *case.input_shape[1:]), generator=gen)
    c1 = compile_quiet(model, (x5[:1],), target)
    c3 = compile_quiet(model, (x5[:3],), target)
    assert c1.netlist.doc.inputs[0].shape == list(case.input_shape[1:])
    got = xb.emulate(c1.netlist, x5)
    assert got.shape[0] == 5
    with torch.no_grad():
        assert_same_structure(model(x5), got, STRICT)
    c1.save(tmp_path / "b1")
    c3.save(tmp_path / "b3")
    for f in ("netlist.json", "weights.npz"):
        assert (tmp_path / "b1" / f).read_bytes() == (tmp_path / "b3" / f).read_bytes(), f


# --------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name,target", [("shufflenet_small", "prime-like"), ("functional_net", "tiny"),
                                         ("se_net", "isaac-like")])
def test_two_compiles_are_byte_identical(name, target, tmp_path):
    case = MODELS[name]
    x = case.example_input()
    first = compile_quiet(case.build(), (x,), target)
    second = compile_quiet(case.build(), (x,), target)  # a fresh, equal model
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    for f in ("netlist.json", "weights.npz"):
        a, b = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
        assert a == b, f
    # saving twice is byte-identical too (no timestamps)
    first.save(tmp_path / "c")
    for f in ("netlist.json", "weights.npz"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes(), f


# ---------------------------------------------------------------------------- several inputs / outputs


class TwoInputs(nn.Module):
    """Image + vector inputs; returns a tuple of a tensor and a dict of tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc_img = nn.Linear(8, 5)
        self.fc_vec = nn.Linear(6, 5)

    def forward(self, img, vec):
        f = F.relu(self.bn(self.conv(img)))
        a = self.fc_img(f.mean(dim=(2, 3)))
        b = self.fc_vec(vec)
        return a + b, {"features": f, "logits": torch.stack([a, b], 1)}


def test_several_inputs_tuple_and_dict_outputs(tmp_path):
    torch.manual_seed(3)
    model = TwoInputs()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    img, vec = torch.randn(2, 3, 6, 7, generator=gen), torch.randn(2, 6, generator=gen)
    for target in TARGETS:
        compiled = compile_quiet(model, (img, vec), target)
        netlist = save_load(compiled, tmp_path / target)
        assert [i.shape for i in netlist.doc.inputs] == [[3, 6, 7], [6]]
        assert {layer.name for layer in netlist.layers} == {"conv", "fc_img", "fc_vec"}
        report = xb.verify(netlist, model, (img, vec))
        assert report.ok and report.max_rel < STRICT, report.to_dict()
        with torch.no_grad():
            expected = model(img, vec)
        got = xb.emulate(netlist, (img, vec))
        assert isinstance(got, tuple) and isinstance(got[1], dict)
        assert_same_structure(expected, got, STRICT)
        # another batch size through the same netlist
        img3, vec3 = torch.randn(3, 3, 6, 7, generator=gen), torch.randn(3, 6, generator=gen)
        with torch.no_grad():
            assert_same_structure(model(img3, vec3), xb.emulate(netlist, [img3, vec3]), STRICT)


# ------------------------------------------------------------------------------ functional weights


def test_functional_net_maps_functional_ops_onto_crossbars():
    zc = zoo_compile("functional_net", "prime-like")
    netlist = zc.compiled.netlist
    kinds = [layer.kind for layer in netlist.layers]
    # F.conv2d x3, F.linear, x @ Parameter
    assert sorted(kinds) == ["conv2d", "conv2d", "conv2d", "linear", "matmul"]
    host = {n.target for n in netlist.doc.nodes if n.op == "host"}
    assert not host & HOST_WEIGHT_OPS, host
    matmul = next(layer for layer in netlist.layers if layer.kind == "matmul")
    assert (matmul.matrix_rows, matmul.matrix_cols) == (32, 10)
    grouped = [layer for layer in netlist.layers if layer.groups == 4]
    assert len(grouped) == 1 and grouped[0].geometry.stride == (2, 2)
    # no parameter of the model is left as a host constant: all weights sit on crossbars
    assert netlist.doc.constants == []
    report = xb.verify(netlist, zc.model, (zc.x,))
    assert report.ok and report.max_rel < STRICT


class LeftMatmul(nn.Module):
    """``W @ x`` with the parameter on the left, then ``x @ V`` on the right."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(8, 6) / 6 ** 0.5)
        self.V = nn.Parameter(torch.randn(5, 3) / 5 ** 0.5)

    def forward(self, x):  # [B, 6, 5]
        return torch.relu(self.W @ x) @ self.V  # [B, 8, 3]


@pytest.mark.parametrize("target", TARGETS)
def test_parameter_on_the_left_of_matmul(target, tmp_path):
    torch.manual_seed(1)
    model = LeftMatmul().eval()
    x = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(2))
    compiled = compile_quiet(model, (x,), target)
    netlist = save_load(compiled, tmp_path)
    layers = netlist.layers
    assert [layer.kind for layer in layers] == ["matmul", "matmul"]
    # W [8, 6] is applied as x^T @ W^T: 6 rows, 8 columns on the crossbars
    assert (layers[0].matrix_rows, layers[0].matrix_cols) == (6, 8)
    assert (layers[1].matrix_rows, layers[1].matrix_cols) == (5, 3)
    assert netlist.doc.constants == []
    report = xb.verify(netlist, model, (x,))
    assert report.ok and report.max_rel < STRICT, report.to_dict()
    x4 = torch.randn(4, 6, 5)
    with torch.no_grad():
        assert_same_structure(model(x4), xb.emulate(netlist, x4), STRICT)


def test_one_chip_compile_emits_no_warning():
    """A model that fits one chip compiles without XBWarning (multi-chip warnings: tests/test_netlist.py)."""
    case = MODELS["lenet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", xb.XBWarning)
        compiled = xb.compile(case.build(), (case.example_input(),), "isaac-like")
    assert compiled.summary["chips"] == 1
