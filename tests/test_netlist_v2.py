"""Netlist format 2: compact storage, typed records, derived cells, literal == fast, load-time checks, saving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compile_quiet
from models import MODELS

import xbcompiler as xb
from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.program import ToeplitzBlock
from xbcompiler.mapping.placement import place
from xbcompiler.mapping.shape import shape_of
from xbcompiler.netlist import Netlist, generated_schema, schema
from xbcompiler.netlist.encoding import Encoding
from xbcompiler.netlist.placement import crossbar_matrix_cells
from xbcompiler.netlist.store import failing_at

STRATEGIES = ("fully-folded", "semi-folded", "fully-unfolded")
ROOT = Path(__file__).resolve().parents[1]


def _compile(name: str, pipeline: str, calibrate: bool = False, target: str = "tiny", **overrides):
    case = MODELS[name]
    model, x = case.build(), case.example_input()
    cal = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(1)) if calibrate else None
    return model, x, compile_quiet(model, (x[:1],), target, pipeline=pipeline, calibration=cal,
                                   overrides=overrides or None)


def _pruned_model():
    """A conv net whose first layer has whole column groups of zeros (so pruned layouts are emitted)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3)).eval()
    with torch.no_grad():
        model[0].weight[[0, 2, 3], 0:2] = 0  # column groups of semi-folded crossbars (recombination)
        model[0].weight[5, 2:4] = 0
        model[2].weight[:, 1] = 0  # an input channel of every output (row compaction)
    return model, torch.randn(2, 4, 7, 7)


# --- the format -------------------------------------------------------------------------------------

def test_bundled_schema_is_generated_from_the_types():
    assert schema() == generated_schema(), \
        "regenerate it: python -c 'from xbcompiler.netlist import write_schema; write_schema()'"


@pytest.mark.parametrize("pipeline", STRATEGIES)
def test_each_weight_is_stored_once(pipeline, tmp_path):
    _, _, compiled = _compile("resnet_digits", pipeline)
    net = compiled.netlist
    for layer in net.layers:
        assert net.weight(layer).shape == (layer.groups, layer.matrix_rows, layer.n_g)
    stored = sum(a.size for k, a in net.arrays.items() if k.endswith("/weight"))
    assert stored == net.summary["weights"]
    compiled.save(tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "out" / "weights.npz") as zf:
        assert not any(name.endswith("cells.npy") for name in zf.namelist())


@pytest.mark.parametrize("pipeline", STRATEGIES)
def test_round_trip_is_byte_identical(pipeline, tmp_path):
    _, _, compiled = _compile("functional_net", pipeline, calibrate=True)
    compiled.save(tmp_path / "a")
    loaded = xb.load_netlist(tmp_path / "a")
    assert loaded.doc.layers == compiled.netlist.doc.layers and loaded.doc.crossbars == compiled.netlist.doc.crossbars
    loaded.save(tmp_path / "b")
    for name in ("netlist.json", "weights.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_netlist_is_immutable():
    _, _, compiled = _compile("mlp", "fully-folded")
    net = compiled.netlist
    with pytest.raises(AttributeError):
        net.doc.layers[0].copies = 3
    with pytest.raises(TypeError):
        net.arrays["x"] = np.zeros(1)
    with pytest.raises(ValueError):
        net.weight(net.layers[0])[0, 0, 0] = 1.0


def test_version_1_is_refused_with_a_hint(tmp_path):
    _, _, compiled = _compile("mlp", "fully-folded")
    compiled.save(tmp_path / "n")
    doc = json.loads((tmp_path / "n" / "netlist.json").read_text())
    doc["version"] = 1
    (tmp_path / "n" / "netlist.json").write_text(json.dumps(doc))
    with pytest.raises(CompileError) as err:
        xb.load_netlist(tmp_path / "n")
    assert err.value.code == "XB504" and "recompile" in err.value.hint


# --- derived cells ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline", ("semi-folded", "fully-unfolded"))
def test_crossbar_cells_equal_the_compilers_placement(pipeline):
    """The document's formula (netlist package) and the compiler's placement function agree cell for cell."""
    _, _, compiled = _compile("lenet", pipeline)
    net, program = compiled.netlist, compiled.program
    blocks = {}
    for b in program.blocks:
        blocks.setdefault(b.crossbar, []).append(b)
    checked = 0
    for x in program.crossbars[::7]:
        m, plan = program.matrices[x.layer], program.plans[x.layer]
        want = np.zeros((x.rows, x.cols), dtype=np.float32)
        for b in blocks[x.index]:
            assert isinstance(b, ToeplitzBlock)
            place(want, b, m.weight, shape_of(m), plan.w_o, plan.w_i)
        np.testing.assert_array_equal(net.crossbar_cells(x.id), want)
        checked += 1
    assert checked > 3


@pytest.mark.parametrize("overrides", [{"encoding.flip_columns": False}, {"encoding.flip_columns": True},
                                       {"encoding.signed": "offset", "encoding.flip_columns": False}])
def test_quantised_crossbar_cells_are_levels_that_sum_to_the_weights(overrides):
    _, _, compiled = _compile("digits_cnn", "semi-folded", calibrate=True, target="isaac-like", **overrides)
    net = compiled.netlist
    flipped = False
    for layer in net.layers:
        enc = Encoding(layer.quant.encoding)
        for x in net.layer_crossbars(layer)[:3]:
            cells = net.crossbar_cells(x.id)
            assert cells.shape == (x.rows, x.physical_cols)
            assert cells.min() >= 0 and cells.max() <= enc.max_level
            levels = cells.reshape(x.rows, x.cols, -1)[..., :enc.planes]
            held = crossbar_matrix_cells(layer, x, np.ones(net.weight(layer).shape, dtype=bool))
            if layer.quant.encoding.flip_columns:  # ISAAC: no stored column sums to more than half its maximum
                natural = enc.levels(crossbar_matrix_cells(layer, x, net.weight(layer).astype(np.int64)))
                assert (2 * levels.sum(0) <= held.sum(0)[:, None] * enc.max_level).all()
                flipped |= bool((np.moveaxis(natural, 0, -1) * held[..., None] != levels).any())
                continue
            value = sum(s * (levels[..., p].astype(np.int64) << k)
                        for p, (s, k) in enumerate(zip(enc.plane_signs, enc.plane_shifts)))
            wq = crossbar_matrix_cells(layer, x, net.weight(layer).astype(np.int64))
            np.testing.assert_array_equal(np.where(held, value - enc.weight_offset, 0), wq)
    assert flipped == bool(overrides.get("encoding.flip_columns"))


def test_unknown_crossbar_is_coded():
    _, _, compiled = _compile("mlp", "fully-folded")
    with pytest.raises(CompileError) as err:
        compiled.netlist.crossbar_cells("t999.x0")
    assert err.value.code == "XB507"


# --- literal execution is the oracle of the fast path -----------------------------------------------

@pytest.mark.parametrize("pipeline", STRATEGIES)
@pytest.mark.parametrize("name", ["lenet", "functional_net", "conv1d_net", "transformer_block", "resnet_digits"])
def test_literal_equals_fast_ideal(name, pipeline):
    _, x, compiled = _compile(name, pipeline)
    fast = xb.emulate(compiled.netlist, x)
    literal = xb.emulate(compiled.netlist, x, literal=True)
    scale = float(fast.abs().max())
    assert float((fast - literal).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("pipeline", ("fully-folded", "semi-folded"))
@pytest.mark.parametrize("overrides", [{"adc.mode": "lossless"}, {"precision.adc_bits": 4, "adc.rounding": "floor"},
                                       {"encoding.flip_columns": True, "precision.adc_bits": 5}])
def test_literal_equals_fast_integer_bit_for_bit(pipeline, overrides):
    _, x, compiled = _compile("digits_cnn", pipeline, calibrate=True, target="isaac-like", **overrides)
    fast = xb.emulate(compiled.netlist, x, mode="integer")
    literal = xb.emulate(compiled.netlist, x, mode="integer", literal=True)
    assert torch.equal(fast, literal)


@pytest.mark.parametrize("pipeline,post", [("semi-folded", "recombine-pruned-columns"),
                                           ("fully-folded", "compact-pruned-rows")])
def test_literal_equals_fast_on_pruned_layouts(pipeline, post):
    model, x = _pruned_model()
    text = f"fold-batchnorm,lower-im2col,lower-to-xbar,map-{pipeline},{post},place-tiles"
    compiled = compile_quiet(model, (x[:1],), "tiny", pipeline=text)
    assert any(layer.pruned_weights for layer in compiled.netlist.layers)
    fast, literal = xb.emulate(compiled.netlist, x), xb.emulate(compiled.netlist, x, literal=True)
    with torch.no_grad():
        want = model(x)
    assert float((fast - literal).abs().max()) <= 1e-5 * float(want.abs().max())
    assert float((fast - want).abs().max()) <= 1e-5 * float(want.abs().max())


# --- a tampered netlist is refused or harmless ------------------------------------------------------

def _int_paths(value, path=()):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _int_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _int_paths(v, (*path, i))


def _pattern(path) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def _set(doc, path, value):
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


#: Fields whose valid values include negative numbers: for them only values far outside any range are tried.
SIGNED = {"input_exponent", "output_exponent", "weight_exponents", "shifts", "weight", "out_row", "column_channels",
          "row_inputs", "args", "kwargs", "output", "sign"}


def _bad_values(path) -> tuple[int, ...]:
    far = (10 ** 7, 1 << 40, -(1 << 40))
    return far if SIGNED & {p for p in path if isinstance(p, str)} else (-1, *far)


def _tamper_cases(doc: dict, per_pattern: int = 1):
    """Every distinct integer field (by path pattern), its first occurrences, in the document."""
    seen: dict[tuple, int] = {}
    for path in _int_paths(doc):
        pattern = _pattern(path)
        if seen.get(pattern, 0) < per_pattern:
            seen[pattern] = seen.get(pattern, 0) + 1
            yield path


@pytest.mark.parametrize("pipeline,calibrate", [("semi-folded", False), ("fully-folded", True),
                                                ("fully-unfolded", False), ("recombine", False)])
@pytest.mark.slow
def test_tampered_integer_fields_are_refused_or_harmless(pipeline, calibrate, tmp_path):
    """Every integer field (each distinct JSON path pattern once) set out of range: a coded error or no change."""
    if pipeline == "recombine":
        model, x = _pruned_model()
        compiled = compile_quiet(model, (x[:1],), "tiny", pipeline="fold-batchnorm,lower-im2col,lower-to-xbar,"
                                 "map-semi-folded,recombine-pruned-columns,place-tiles")
    else:
        model, x, compiled = _compile("digits_cnn", pipeline, calibrate)
    good = tmp_path / "good"
    compiled.save(good)
    want = xb.emulate(xb.load_netlist(good), x)
    text = (good / "netlist.json").read_text()
    doc = json.loads(text)
    outcomes = {"refused": 0, "harmless": 0}
    for k, path in enumerate(_tamper_cases(doc)):
        values = _bad_values(path)
        for bad in (values[k % len(values)],):  # one value per field, cycling through the kinds
            edited = json.loads(text)
            _set(edited, path, bad)
            d = tmp_path / "bad"
            d.mkdir(exist_ok=True)
            (d / "netlist.json").write_text(json.dumps(edited))
            (d / "weights.npz").write_bytes((good / "weights.npz").read_bytes())
            try:
                got = xb.emulate(xb.load_netlist(d), x)
            except CompileError:
                outcomes["refused"] += 1
                continue
            assert torch.equal(got, want), f"{'.'.join(map(str, path))} = {bad} changed the output without an error"
            outcomes["harmless"] += 1
    assert outcomes["refused"] > 20, outcomes


def test_edited_target_section_is_refused(tmp_path):
    _, _, compiled = _compile("mlp", "fully-folded")
    compiled.save(tmp_path / "n")
    text = (tmp_path / "n" / "netlist.json").read_text()
    doc = json.loads(text)
    for path in _int_paths(doc["target"]):
        edited = json.loads(text)
        _set(edited["target"], path, _get(doc["target"], path) + 1)
        (tmp_path / "n" / "netlist.json").write_text(json.dumps(edited))
        with pytest.raises(CompileError) as err:
            xb.load_netlist(tmp_path / "n")
        assert err.value.code == "XB514"


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@pytest.mark.parametrize("edit,code", [
    (lambda d: d["crossbars"][0].update(layer=d["layers"][-1]["name"]), "XB517"),
    (lambda d: d["layers"][0].update(first_crossbar=999), "XB517"),
    (lambda d: d["crossbars"][0]["blocks"].append(dict(d["crossbars"][0]["blocks"][0])), "XB511"),
    (lambda d: [b.update(slice=0) for x in d["crossbars"] for b in x.get("blocks", ()) if b.get("slice") == 1],
     "XB512"),  # every copy still counted, but width slice 1 computed by nothing
    (lambda d: d["crossbars"][0].update(tile=d["crossbars"][1]["tile"], slot=d["crossbars"][1]["slot"]), "XB513"),
])
def test_schema_valid_inconsistent_edits_are_coded(edit, code, tmp_path):
    _, _, compiled = _compile("lenet", "semi-folded")
    compiled.save(tmp_path / "n")
    doc = json.loads((tmp_path / "n" / "netlist.json").read_text())
    edit(doc)
    (tmp_path / "n" / "netlist.json").write_text(json.dumps(doc))
    with pytest.raises(CompileError) as err:
        xb.load_netlist(tmp_path / "n")
    assert err.value.code == code


def test_unnamed_and_compressed_archive_members_are_refused(tmp_path):
    _, _, compiled = _compile("mlp", "fully-folded")
    compiled.save(tmp_path / "n")
    blob = tmp_path / "n" / "weights.npz"
    original = blob.read_bytes()
    with zipfile.ZipFile(blob, "a") as zf:
        zf.writestr("payload.npy", b"\0" * 1000)
    with pytest.raises(CompileError) as err:
        xb.load_netlist(tmp_path / "n")
    assert err.value.code == "XB516"
    blob.write_bytes(original)
    with zipfile.ZipFile(blob) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(blob, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CompileError) as err:
        xb.load_netlist(tmp_path / "n")
    assert err.value.code == "XB515"


# --- saving -----------------------------------------------------------------------------------------

SAVE_STEPS = ("mkdtemp", "write weights.npz", "write netlist.json", "rename old", "rename new", "remove old")


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("step", SAVE_STEPS)
def test_a_failed_save_leaves_the_earlier_netlist(step, tmp_path):
    _, _, first = _compile("mlp", "fully-folded")
    _, _, second = _compile("mlp", "semi-folded")
    out = tmp_path / "out"
    first.save(out)
    before = _snapshot(out)
    try:
        with failing_at(step, OSError(28, "No space left on device")):
            second.save(out)
    except CompileError as exc:
        assert exc.code == "XB004"
    after = _snapshot(out)
    assert after in (before, _snapshot_of(second, tmp_path))
    if step != "remove old":
        assert after == before
    xb.load_netlist(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] + (["ref"] if (tmp_path / "ref").exists() else [])


def _snapshot_of(compiled, tmp_path: Path) -> dict[str, bytes]:
    compiled.save(tmp_path / "ref")
    return _snapshot(tmp_path / "ref")


@pytest.mark.parametrize("step", SAVE_STEPS)
def test_a_killed_save_leaves_a_whole_netlist_and_no_leftovers(step, tmp_path):
    _, _, first = _compile("mlp", "fully-folded")
    out = tmp_path / "out"
    first.save(out)
    before = _snapshot(out)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import torch
        from models import MODELS
        import xbcompiler as xb
        from xbcompiler.netlist import store
        case = MODELS["mlp"]
        compiled = xb.compile(case.build(), (case.example_input()[:1],), "tiny", pipeline="semi-folded")
        store._before_step = lambda name: os._exit(9) if name == {step!r} else None
        compiled.save({str(out)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    net = xb.load_netlist(out)  # recovers an interrupted swap and removes leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert _snapshot(out) == before or net.layers[0].strategy == "semi-folded"


def test_saved_files_follow_the_umask(tmp_path):
    _, _, compiled = _compile("mlp", "fully-folded")
    old = os.umask(0o027)
    try:
        compiled.save(tmp_path / "n")
    finally:
        os.umask(old)
    assert (tmp_path / "n").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "n" / "netlist.json").stat().st_mode & 0o777 == 0o640


def test_save_refuses_to_replace_a_folder_that_is_not_a_netlist(tmp_path):
    _, _, compiled = _compile("mlp", "fully-folded")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("keep me")
    with pytest.raises(CompileError) as err:
        compiled.save(tmp_path / "docs")
    assert err.value.code == "XB004"
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "keep me"


def test_netlist_object_has_no_mutable_document():
    _, _, compiled = _compile("mlp", "fully-folded")
    assert isinstance(compiled.netlist, Netlist)
    builtins = compiled.netlist.to_builtins()
    builtins["layers"][0]["copies"] = 99
    assert compiled.netlist.layers[0].copies != 99
