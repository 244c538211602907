"""The netlist format: schema, required fields, summary, crossbar ids, rejected inputs, chip limits.

docs/netlist.md documents the format; the last tests keep it in step with the schema.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path

import jsonschema
import msgspec
import numpy as np
import pytest
import torch

import xbcompiler as xb
from tests.conftest import ROOT, zoo_compile
from tests.models import MODELS
from xbcompiler.netlist import schema

LAYER_KEYS = ("name", "source", "kind", "strategy", "matrix_rows", "matrix_cols", "groups", "crossbars", "cycles")
SUMMARY_KEYS = ("crossbars", "tiles", "chips", "host_ops")
CASES = [("functional_net", "tiny"), ("transformer_block", "prime-like"), ("shufflenet_small", "isaac-like"),
         ("conv1d_net", "tiny"), ("densenet_small", "prime-like")]


@pytest.fixture
def saved(tmp_path) -> Path:
    """A saved MLP netlist (tiny target) in a fresh directory."""
    zc = zoo_compile("mlp", "tiny")
    zc.compiled.save(tmp_path)
    return tmp_path


def expect_error(code: str, fn, *args):
    with pytest.raises(xb.CompileError) as info:
        fn(*args)
    assert info.value.code == code, info.value.render()
    return info.value


# ------------------------------------------------------------------------------------------- schema


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(schema())


@pytest.mark.parametrize("name,target", CASES)
def test_saved_netlist_validates_against_schema(name, target, tmp_path):
    zc = zoo_compile(name, target)
    zc.compiled.save(tmp_path)
    doc = json.loads((tmp_path / "netlist.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["format"] == "xbcompiler-netlist" and doc["version"] == 2
    assert doc["pipeline"] == zc.compiled.pipeline
    assert doc["target"] == zc.compiled.target.to_dict()
    assert doc["target_fingerprint"] == zc.compiled.target.fingerprint()
    in_memory = json.loads(json.dumps(zc.compiled.netlist.to_builtins()))  # tuples as JSON arrays
    assert {k: v for k, v in doc.items() if k != "blobs"} == {k: v for k, v in in_memory.items() if k != "blobs"}
    assert set(doc["blobs"]) == {"weights.npz"}
    # the file is canonical JSON: compact, sorted keys, a trailing newline; reading and writing it again
    # gives the same bytes
    raw = (tmp_path / "netlist.json").read_bytes()
    assert raw == xb.load_netlist(tmp_path).json_bytes()
    assert raw == msgspec.json.encode(doc, order="sorted") + b"\n"
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1 and list(doc) == sorted(doc)


@pytest.mark.parametrize("name,target", CASES)
def test_layers_summary_and_crossbars(name, target):
    zc = zoo_compile(name, target)
    netlist, tgt = zc.compiled.netlist, zc.compiled.target
    doc, plain = netlist.doc, netlist.to_builtins()  # typed records, and netlist.json as plain JSON
    for layer, written in zip(doc.layers, plain["layers"]):
        for key in LAYER_KEYS:
            assert key in written, (layer.name, key)
        assert layer.strategy == "fully-folded"
        assert layer.kind in ("conv1d", "conv2d", "linear", "matmul")
        assert layer.matrix_cols % layer.groups == 0
        assert layer.cycles >= 1
        # the matrix is stored once, [groups, K_g, N_g]; no per-crossbar cells array
        weight = layer.arrays.weight
        assert weight.key == f"layers/{layer.name}/weight" and weight.dtype == "float32"
        assert weight.shape == [layer.groups, layer.matrix_rows, layer.n_g]
        assert netlist.weight(layer).shape == tuple(weight.shape) and netlist.weight(layer).dtype == np.float32
        assert "cells" not in written["arrays"] and f"layers/{layer.name}/cells" not in netlist.arrays
        # every crossbar of the layer is a whole target crossbar; its derived cells have that shape
        xbars = netlist.layer_crossbars(layer)
        assert all((x.rows, x.cols) == (tgt.crossbar.rows, tgt.logical_cols) for x in xbars)
        if xbars:
            cells = netlist.crossbar_cells(xbars[0].id)
            assert cells.shape == (tgt.crossbar.rows, tgt.logical_cols) and cells.dtype == np.float32
    summary = netlist.summary
    for key in SUMMARY_KEYS:
        assert key in summary
    assert summary["crossbars"] == sum(layer.crossbars for layer in doc.layers) == len(doc.crossbars)
    assert summary["tiles"] == len({x.tile for x in doc.crossbars})
    assert summary["chips"] == max(x.chip for x in doc.crossbars) + 1
    assert summary["host_ops"] == sum(1 for n in doc.nodes if n.op == "host")
    assert summary["layers"] == len(doc.layers) == sum(1 for n in doc.nodes if n.op == "xbar")

    ids = set()
    per_tile = tgt.hierarchy.crossbars_per_tile
    for i, x in enumerate(doc.crossbars):  # a crossbar's index is its position in the list
        m = re.fullmatch(r"t(\d+)\.x(\d+)", x.id)
        assert m, x.id
        assert (int(m[1]), int(m[2])) == (x.tile, x.slot)
        assert x.slot < per_tile
        assert x.tile * per_tile + x.slot == i  # tiles filled in crossbar order
        assert x.chip == x.tile // tgt.hierarchy.tiles
        assert x.physical_cols == x.cols * tgt.m_c <= tgt.crossbar.cols
        assert netlist.crossbar(x.id) is x
        ids.add(x.id)
    assert len(ids) == len(doc.crossbars)
    # layers own consecutive crossbars, in node order
    for layer in doc.layers:
        owned = doc.crossbars[layer.first_crossbar:layer.first_crossbar + layer.crossbars]
        assert all(x.layer == layer.name for x in owned)
        assert netlist.layer_crossbars(layer) == owned


def test_weights_npz_holds_exactly_the_named_arrays(saved):
    netlist = xb.load_netlist(saved)
    with np.load(saved / "weights.npz", allow_pickle=False) as npz:
        names = set(npz.files)
        for name in names:
            assert npz[name].dtype == np.float32
            assert np.array_equal(npz[name], netlist.arrays[name])
    expected = {c.key for c in netlist.doc.constants}
    expected |= {ref.key for layer in netlist.layers for field in layer.arrays.__struct_fields__
                 if (ref := getattr(layer.arrays, field)) is not None}
    assert names == expected == set(netlist.arrays)
    blob = netlist.doc.blobs["weights.npz"]
    assert blob.bytes == (saved / "weights.npz").stat().st_size
    assert blob.sha256 == hashlib.sha256((saved / "weights.npz").read_bytes()).hexdigest()


def test_emulate_a_saved_directory(saved):
    case = MODELS["mlp"]
    x = case.example_input()
    model = zoo_compile("mlp", "tiny").model
    with torch.no_grad():
        torch.testing.assert_close(xb.emulate(str(saved), x), model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xb.emulate(saved, x), model(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- load rejects


def test_missing_netlist_json(saved):
    (saved / "netlist.json").unlink()
    expect_error("XB501", xb.load_netlist, saved)


def test_missing_weights(saved):
    (saved / "weights.npz").unlink()
    expect_error("XB501", xb.load_netlist, saved)


def test_missing_directory(tmp_path):
    expect_error("XB501", xb.load_netlist, tmp_path / "nowhere")


@pytest.mark.parametrize("text", [b"{not json", b"", b"\xff\xfe\x00garbage", b"[1, 2"])
def test_invalid_json(saved, text):
    (saved / "netlist.json").write_bytes(text)
    expect_error("XB502", xb.load_netlist, saved)


def _edit_doc(directory: Path, edit) -> None:
    doc = json.loads((directory / "netlist.json").read_text())
    edit(doc)
    (directory / "netlist.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("edit,where", [
    (lambda d: d.pop("layers"), None),
    (lambda d: d.__setitem__("format", "something-else"), "`$.format`"),
    (lambda d: d.__setitem__("nodes", "not a list"), "`$.nodes`"),
    (lambda d: d["nodes"][1].__setitem__("op", "python"), "`$.nodes[1].op`"),
    (lambda d: d["nodes"][1].__setitem__("name", "bad name; import os"), "`$.nodes[1].name`"),
    (lambda d: d["crossbars"][0].__setitem__("slot", "x0"), "`$.crossbars[0].slot`"),
    (lambda d: d["crossbars"][0].__setitem__("id", "t0.x0"), "`$.crossbars[0]`"),  # ids are derived, not stored
    (lambda d: d["layers"][0].__setitem__("strategy", "clever"), "`$.layers[0].strategy`"),
    (lambda d: d["layers"][0]["arrays"]["weight"].pop("key"), "`$.layers[0].arrays.weight`"),
    (lambda d: d["summary"].pop("chips"), "`$.summary`"),
    (lambda d: d["blobs"]["weights.npz"].__setitem__("sha256", "nothex"), "`$.blobs["),
    (lambda d: d["inputs"].clear(), "`$.inputs`"),
], ids=["no-layers", "format", "nodes-type", "node-op", "node-name", "crossbar-slot", "crossbar-id", "strategy",
        "array-key", "summary", "sha-pattern", "no-inputs"])
def test_schema_violation(saved, edit, where):
    _edit_doc(saved, edit)
    err = expect_error("XB502", xb.load_netlist, saved)
    assert "schema" in err.message
    if where is not None:  # the message names the offending field by its JSON path
        assert where in err.message, err.message


@pytest.mark.parametrize("version", [1, 0, 3, 99])
def test_unsupported_version(saved, version):
    _edit_doc(saved, lambda d: d.__setitem__("version", version))
    err = expect_error("XB504", xb.load_netlist, saved)
    assert str(version) in err.message
    assert "recompile" in err.hint


def test_modified_weights(saved):
    blob = bytearray((saved / "weights.npz").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (saved / "weights.npz").write_bytes(bytes(blob))
    expect_error("XB503", xb.load_netlist, saved)


def test_truncated_weights(saved):
    blob = (saved / "weights.npz").read_bytes()
    (saved / "weights.npz").write_bytes(blob[:len(blob) // 3])
    expect_error("XB503", xb.load_netlist, saved)


class _Touch:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_weights_replaced_with_matching_checksum_but_pickled_arrays(saved, tmp_path):
    """A blob whose checksum matches but holds an object (pickled) array is not loaded (nor unpickled)."""
    marker = tmp_path / "unpickled"
    netlist = xb.load_netlist(saved)
    arrays = dict(netlist.arrays)
    arrays[netlist.layer("fc1").arrays.weight.key] = np.array([_Touch(marker)], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # every named member present, one of them pickled
    blob = buf.getvalue()
    (saved / "weights.npz").write_bytes(blob)
    _edit_doc(saved, lambda d: d["blobs"]["weights.npz"].__setitem__("sha256", hashlib.sha256(blob).hexdigest()))
    with pytest.raises(xb.CompileError) as info:
        xb.load_netlist(saved)
    assert info.value.code in ("XB502", "XB503", "XB515"), info.value.render()
    assert "fc1" in info.value.message
    assert not marker.exists()


def test_array_with_wrong_shape(tmp_path):
    netlist = zoo_compile("mlp", "tiny").compiled.netlist
    key = netlist.layers[0].arrays.weight.key
    weight = netlist.arrays[key]
    broken = xb.Netlist(netlist.doc, {**netlist.arrays, key: weight[:, :1]})
    assert broken.weight(netlist.layers[0]).shape != weight.shape
    broken.save(tmp_path / "smaller")  # save recomputes the checksum: only the shape is wrong
    expect_error("XB515", xb.load_netlist, tmp_path / "smaller")  # the member is smaller than declared
    same_size = xb.Netlist(netlist.doc, {**netlist.arrays, key: weight.reshape(weight.shape[0], -1, 1)})
    same_size.save(tmp_path / "reshaped")
    expect_error("XB502", xb.load_netlist, tmp_path / "reshaped")  # same bytes, another header


def test_array_missing(tmp_path):
    netlist = zoo_compile("mlp", "tiny").compiled.netlist
    arrays = dict(netlist.arrays)
    del arrays[netlist.layers[-1].arrays.bias.key]
    xb.Netlist(netlist.doc, arrays).save(tmp_path)
    expect_error("XB502", xb.load_netlist, tmp_path)


# --------------------------------------------------------------------------- nothing gets executed


def _host_node(doc: dict) -> dict:
    return next(n for n in doc["nodes"] if n["op"] == "host")


@pytest.mark.parametrize("op", ["os.system", "builtins.eval", "subprocess.run", "torch.nn.functional.relu "])
def test_host_op_outside_allow_list_is_rejected(saved, tmp_path, op):
    marker = tmp_path / "executed"
    doc = json.loads((saved / "netlist.json").read_text())
    node = _host_node(doc)
    node["target"], node["args"], node["kwargs"] = op, [f"touch {marker}"], {}
    (saved / "netlist.json").write_text(json.dumps(doc))
    netlist = xb.load_netlist(saved)  # the schema does not restrict op names; the emulator does
    try:
        err = expect_error("XB502", xb.emulate, netlist, MODELS["mlp"].example_input())
        assert node["name"] in err.message or op in err.message
    finally:
        assert not marker.exists()


def test_forbidden_getattr_is_rejected(saved):
    doc = json.loads((saved / "netlist.json").read_text())
    node = _host_node(doc)
    node["target"], node["args"], node["kwargs"] = "builtins.getattr", [{"ref": "x"}, "__class__"], {}
    (saved / "netlist.json").write_text(json.dumps(doc))
    netlist = xb.load_netlist(saved)
    expect_error("XB502", xb.emulate, netlist, MODELS["mlp"].example_input())


def test_unknown_argument_wrapper_is_not_evaluated(saved):
    doc = json.loads((saved / "netlist.json").read_text())
    _host_node(doc)["args"] = [{"eval": "__import__('os').getcwd()"}, 1]
    (saved / "netlist.json").write_text(json.dumps(doc))
    netlist = xb.load_netlist(saved)
    # decoding accepts only the wrappers of xbcompiler.ir.values; anything else is refused, never run
    with pytest.raises((xb.CompileError, ValueError), match="unknown encoded value|XB50"):
        xb.emulate(netlist, MODELS["mlp"].example_input())


# ---------------------------------------------------------------------------------------- chip limit

PIPELINE = "fold-batchnorm,lower-im2col,lower-to-xbar,map-fully-folded,place-tiles"


def test_max_chips_refuses_a_model_needing_more():
    case = MODELS["lenet"]  # 980 crossbars on tiny (128 per chip): 8 chips
    err = expect_error("XB302", xb.compile, case.build(), (case.example_input(),), "tiny",
                       PIPELINE + "{max-chips=1}")
    assert "8 chips" in err.message


def test_without_max_chips_warns_and_spills():
    case = MODELS["lenet"]
    with pytest.warns(xb.XBWarning, match="chips"):
        compiled = xb.compile(case.build(), (case.example_input(),), "tiny", PIPELINE)
    assert compiled.summary["chips"] == 8  # > 1
    assert any("chips" in w for w in compiled.warnings)
    chips = {x.chip for x in compiled.netlist.crossbars}
    assert chips == set(range(8))


def test_max_chips_at_the_limit_compiles():
    case = MODELS["lenet"]
    with pytest.warns(xb.XBWarning):
        compiled = xb.compile(case.build(), (case.example_input(),), "tiny", PIPELINE + "{max-chips=8}")
    assert compiled.summary["chips"] == 8


def test_one_chip_model_does_not_warn():
    case = MODELS["mlp"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", xb.XBWarning)
        compiled = xb.compile(case.build(), (case.example_input(),), "tiny", PIPELINE + "{max-chips=1}")
    assert compiled.summary["chips"] == 1


# ------------------------------------------------------------------------------------ documentation


def test_docs_describe_every_schema_field():
    text = (ROOT / "docs" / "netlist.md").read_text()
    defs = schema()["$defs"]  # one definition per record type (generated from xbcompiler.netlist.types)
    keys = set()
    for record in ("Document", "Layer", "Crossbar", "Node", "InputSpec", "Constant", "Summary", "Slice", "Block"):
        keys |= set(defs[record]["required"])
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, missing
    for wrapper in ("ref", "tuple", "dict", "slice", "ellipsis", "float", "dtype", "memory_format"):
        assert f'"{wrapper}"' in text, wrapper

