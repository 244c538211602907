"""``xbc inspect DIR [--crossbar ID [--save FILE.npy] [--full]]`` (docs/cli.md).

The crossbar tests need ``Netlist.crossbar_cells`` (the cells of one crossbar, rows first) and the
diagnostic code XB507 for an unknown crossbar, both from the netlist rework; without them they fail
with exit status 70.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import xbcompiler as xb
from xbcompiler import cli

MODELS = Path(__file__).parent / "data" / "cli_models.py"
SMALL = f"{MODELS}:small"


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """`small` compiled (float) for `tiny`."""
    out = tmp_path_factory.mktemp("inspect") / "float"
    assert cli.main(["compile", SMALL, "--input-shape", "1,3,8,8", "--target", "tiny", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def quantised(tmp_path_factory) -> Path:
    """`small` compiled for `tiny` with power-of-two quantisation."""
    out = tmp_path_factory.mktemp("inspect") / "quant"
    assert cli.main(["compile", SMALL, "--input-shape", "1,3,8,8", "--target", "tiny", "--calibrate-random", "4",
                     "-o", str(out)]) == 0
    return out


def crossbars(d: Path) -> list[dict]:
    """The crossbar records of the saved file, each with its id ``t<tile>.x<slot>`` (not stored)."""
    return [{**x, "id": f"t{x['tile']}.x{x['slot']}"} for x in json.loads((d / "netlist.json").read_text())["crossbars"]]


def test_list_crossbars(compiled, capsys):
    status, out, err = run(capsys, "inspect", compiled)
    assert status == 0, err
    entries = crossbars(compiled)
    assert f"{len(entries)} crossbars" in out
    for word in ("id", "layer", "tile", "chip"):
        assert word in out
    lines = out.splitlines()
    for e in entries:
        assert any(line.split()[:4] == [e["id"], e["layer"], str(e["tile"]), str(e["chip"])] for line in lines), e


def test_help_has_an_example(capsys):
    status, out, _ = run(capsys, "inspect", "--help")
    assert status == 0
    assert "examples:" in out and "xbc inspect out --crossbar t0.x1" in out and "--save FILE.npy" in out


def test_show_one_crossbar(compiled, capsys):
    entry = crossbars(compiled)[1]
    status, out, err = run(capsys, "inspect", compiled, "--crossbar", entry["id"])
    assert status == 0, err
    assert f"crossbar: {entry['id']}" in out
    assert f"layer: {entry['layer']}" in out and f"tile: {entry['tile']}" in out and f"chip: {entry['chip']}" in out
    cells = xb.load_netlist(compiled).crossbar_cells(entry["id"])
    assert f"shape: {' x '.join(str(d) for d in cells.shape)}" in out
    assert f"dtype: {cells.dtype}" in out
    assert f"non-zero cells: {np.count_nonzero(cells)} of {cells.size}" in out
    assert "[[" in out  # the array itself


@pytest.mark.parametrize("which", ["compiled", "quantised"])
def test_save_writes_the_crossbar_cells(which, request, tmp_path, capsys):
    d = request.getfixturevalue(which)
    entry = crossbars(d)[0]
    path = tmp_path / "cells.npy"
    status, out, err = run(capsys, "inspect", d, "--crossbar", entry["id"], "--save", path)
    assert status == 0, err
    assert f"wrote {path}" in out
    saved = np.load(path, allow_pickle=False)
    assert saved.ndim == 2 and saved.shape[0] == entry["rows"]
    expected = xb.load_netlist(d).crossbar_cells(entry["id"])
    assert saved.dtype == expected.dtype
    np.testing.assert_array_equal(saved, expected)
    assert saved.dtype.kind in ("iu" if which == "quantised" else "f")  # levels, or the real weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.npy"]  # no temporary file left


def test_unknown_crossbar_is_bad_input(compiled, tmp_path, capsys):
    path = tmp_path / "cells.npy"
    status, _, err = run(capsys, "inspect", compiled, "--crossbar", "t999.x999", "--save", path)
    assert status == 2, err
    assert "XB507" in err and "Traceback" not in err
    assert not path.exists()


def test_save_into_a_missing_directory_is_bad_input(compiled, tmp_path, capsys):
    entry = crossbars(compiled)[0]
    path = tmp_path / "missing" / "cells.npy"
    status, _, err = run(capsys, "inspect", compiled, "--crossbar", entry["id"], "--save", path)
    assert status == 2, err
    assert "error[XB004]" in err and "Traceback" not in err
    assert not path.exists() and not path.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_full_prints_every_cell(compiled, capsys):
    entry = crossbars(compiled)[0]
    cells = xb.load_netlist(compiled).crossbar_cells(entry["id"])
    status, out, err = run(capsys, "inspect", compiled, "--crossbar", entry["id"], "--full")
    assert status == 0, err
    assert "..." not in out
    if cells.size > 1000:  # summarised without --full
        assert "..." in run(capsys, "inspect", compiled, "--crossbar", entry["id"])[1]


@pytest.mark.parametrize("argv, code", [
    (["--save", "x.npy"], "XB003"),  # --save needs --crossbar
    (["--crossbar", "t0.x0", "--save", "x.txt"], "XB003"),  # not a .npy name
])
def test_bad_flags(argv, code, compiled, tmp_path, capsys):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    status, _, err = run(capsys, "inspect", compiled, *argv)
    assert status == 2 and f"error[{code}]" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_netlist_is_bad_input(tmp_path, capsys):
    status, _, err = run(capsys, "inspect", tmp_path / "nothing")
    assert status == 2 and "XB501" in err
