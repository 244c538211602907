"""Custom passes and edited netlists (issue 15, item 6): ``examples/custom_pass.py`` and ``examples/verify_edit.py``.

The plugin package of ``examples/plugin/`` is tested in ``tests/test_plugin.py``.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch

import xbcompiler as xb
from xbcompiler import cli
from xbcompiler.netlist.placement import used_extent
from xbcompiler.pipeline import (
    NAMED_PIPELINES,
    format_pipeline,
    parse_pipeline,
    register_pass,
    registered_passes,
    resolve_pipeline,
    unregister_pass,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str):
    """``examples/NAME.py`` imported as a module (registered in ``sys.modules``, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


custom = load_example("custom_pass")
edit = load_example("verify_edit")


@pytest.fixture
def registered():
    """``idle-columns`` registered by name for one test, forgotten afterwards."""
    register_pass(custom.IdleColumnsPass)
    yield custom.IdleColumnsPass
    unregister_pass(custom.IdleColumnsPass.name)


def idle_columns(netlist: xb.Netlist) -> dict[str, dict[str, int]]:
    """Per layer: crossbars, logical columns and columns past the last one a record covers, from the netlist."""
    out: dict[str, dict[str, int]] = {}
    for layer in netlist.layers:
        xbars = netlist.layer_crossbars(layer)
        columns = sum(x.cols for x in xbars)
        out[layer.name] = {"crossbars": len(xbars), "columns": columns,
                           "idle": columns - sum(used_extent(layer, x)[1] for x in xbars)}
    return out


def compile_cnn(pipeline, **kwargs) -> xb.CompiledModel:
    return xb.compile(custom.make_model(), (torch.randn(1, 1, 8, 8),), "tiny", pipeline, **kwargs)


# ---------------------------------------------------------------------------------- custom_pass.py


def test_idle_columns_inserted_as_an_object(tmp_path):
    passes = resolve_pipeline("default")
    passes.insert(len(passes) - 1, custom.IdleColumnsPass())
    compiled = compile_cnn(passes)
    compiled.save(tmp_path / "net")
    netlist = xb.load_netlist(tmp_path / "net")
    recorded = netlist.doc.provenance["idle-columns"]
    assert recorded == idle_columns(netlist) == compiled.report["idle-columns"]
    assert recorded["_3"]["idle"] > 0  # the 10 outputs of the Linear leave columns of 4-column crossbars idle
    assert netlist.doc.pipeline.split(",")[-2:] == ["idle-columns", "place-tiles{method=min-traffic}"]
    assert compiled.warnings == []  # nothing exceeds the default 50 %
    assert "idle-columns" not in registered_passes()  # an object needs no registration


def test_idle_columns_by_name_in_a_textual_pipeline(tmp_path, registered):
    text = ",".join(NAMED_PIPELINES["default"]) + ",idle-columns{warn-above=0.1}"
    compiled = compile_cnn(text)
    compiled.save(tmp_path / "net")
    netlist = xb.load_netlist(tmp_path / "net")
    assert netlist.doc.pipeline == text
    assert parse_pipeline(text)[-1] == registered(warn_above=0.1)
    counts = idle_columns(netlist)
    assert netlist.doc.provenance["idle-columns"] == counts
    loud = sorted(name for name, c in counts.items() if c["idle"] > 0.1 * c["columns"])
    assert loud == ["_3"]
    idle, columns = counts["_3"]["idle"], counts["_3"]["columns"]
    assert compiled.warnings == [f"layer _3 leaves {idle} of {columns} crossbar columns idle"]
    assert format_pipeline([registered()]) == "idle-columns"


def test_idle_columns_by_name_from_the_command_line(tmp_path, capsys, registered):
    model = f"{EXAMPLES / 'custom_pass.py'}:make_model"
    text = ",".join(NAMED_PIPELINES["fully-folded"]) + ",idle-columns{warn-above=0}"
    status = cli.main(["compile", model, "--input-shape", "1,1,8,8", "--target", "tiny", "--pipeline", text,
                       "-o", str(tmp_path / "net")])
    out, err = capsys.readouterr()
    assert status == 0, err
    netlist = xb.load_netlist(tmp_path / "net")
    assert netlist.doc.provenance["idle-columns"] == idle_columns(netlist)
    assert "crossbar columns idle" in out + err


@pytest.mark.slow
def test_custom_pass_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "custom_pass.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for variant in ("object", "text"):
        netlist = xb.load_netlist(tmp_path / variant)
        assert netlist.doc.provenance["idle-columns"] == idle_columns(netlist)
        assert "idle-columns" in netlist.doc.pipeline
    assert proc.stdout.count("provenance['idle-columns']") == 2
    assert "warning: layer _3 leaves" in proc.stdout


# ---------------------------------------------------------------------------------- verify_edit.py


def edit_and_save(netlist: xb.Netlist, out: Path, layer: str, index: tuple[int, int, int], delta) -> xb.Netlist:
    """Change one weight of ``layer`` the documented way (replace the array, save through the library), reload."""
    key = netlist.layer(layer).arrays.weight.key
    weight = netlist.arrays[key].copy()
    weight[index] += delta
    xb.Netlist(netlist.doc, {**netlist.arrays, key: weight}).save(out)
    return xb.load_netlist(out)


def reverse_columns(netlist: xb.Netlist, layer: str) -> xb.Netlist:
    """``netlist`` with the logical columns of ``layer``'s first crossbar reversed, as ``remap-faults`` may permute them."""
    first = netlist.layer(layer).first_crossbar
    xbars = list(netlist.doc.crossbars)
    xbars[first] = msgspec.structs.replace(xbars[first], column_permutation=list(reversed(range(xbars[first].cols))))
    return xb.Netlist(msgspec.structs.replace(netlist.doc, crossbars=xbars), dict(netlist.arrays))


@pytest.mark.parametrize("pipeline", ["default", "fully-folded"])
@pytest.mark.parametrize("permuted", [False, True])
def test_verify_names_the_crossbar_and_column_of_an_edited_weight(tmp_path, capsys, pipeline, permuted):
    model = edit.make_model()
    original = xb.compile(model, (torch.randn(1, 16),), "tiny", pipeline).netlist
    layer = original.layer(edit.LAYER)
    if permuted:  # output 1 sits on the layer's first crossbar (4 logical columns): reversing them moves it
        original = reverse_columns(original, edit.LAYER)
    edited = edit_and_save(original, tmp_path / "net", edit.LAYER, (0, 5, 1), 0.5)
    [(crossbar, row, column)] = edit.changed_cells(original, edited)
    assert (crossbar, row) == (original.crossbars[layer.first_crossbar].id, 5)
    assert column == (2 if permuted else 1)
    bad = xb.verify(edited, model).first_mismatch
    assert (bad.name, bad.first_mismatch, bad.first_mismatch_column) == (edit.LAYER, crossbar, column)
    status = cli.main(["verify", str(tmp_path / "net"), "--model", f"{EXAMPLES / 'verify_edit.py'}:make_model"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"first mismatching layer {edit.LAYER} (crossbar {crossbar}, column {column})" in " ".join(out.split())


def test_verify_integer_mode_names_the_crossbar_and_column_of_an_edited_code(tmp_path):
    model = edit.make_model()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    original = xb.compile(model, (x[:1],), "tiny", calibration=x).netlist
    assert original.quantised
    code = int(original.weight(edit.LAYER)[0, 7, 10])
    edited = edit_and_save(original, tmp_path / "net", edit.LAYER, (0, 7, 10), -1 if code > 0 else 1)
    [crossbar] = {x for x, _, _ in edit.changed_cells(original, edited)}
    cells = [c for x, _, c in edit.changed_cells(original, edited)]  # the bit lines of one logical column
    m_c = original.crossbar(crossbar).physical_cols // original.crossbar(crossbar).cols
    report = xb.verify(edited, model, batch=32)  # enough samples that input 7 (after a ReLU) is driven
    assert report.mode == "integer"
    bad = report.first_mismatch
    assert (bad.name, bad.first_mismatch) == (edit.LAYER, crossbar)
    assert {c // m_c for c in cells} == {bad.first_mismatch_column} == {10 % 4}


def test_a_hand_edited_weights_file_is_refused_before_verify(tmp_path, capsys):
    out = tmp_path / "net"
    netlist = xb.compile(edit.make_model(), (torch.randn(1, 16),), "tiny").netlist
    netlist.save(out)
    np.savez(out / "weights.npz", **edit.edited_weights(netlist))
    status = cli.main(["verify", str(out), "--model", f"{EXAMPLES / 'verify_edit.py'}:make_model"])
    assert status == 2 and "error[XB503]" in capsys.readouterr().err


@pytest.mark.slow
def test_verify_edit_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "verify_edit.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = " ".join(proc.stdout.split())
    assert "error[XB503]" in text and "(exit 2)" in text and "(exit 1)" in text
    crossbar, column = re.search(r"changed cell \(\d+, (\d+)\) of crossbar (t\d+\.x\d+)", text).group(2, 1)
    assert f"first mismatching layer {edit.LAYER} (crossbar {crossbar}, column {column})" in text
    assert "the edited cell" in text and "NOT the edited cell" not in text
