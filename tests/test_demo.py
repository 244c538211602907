"""`xbc demo`: the digits CNN trained, compiled, verified, emulated and programmed onto faulty chips; its folder."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import xbcompiler as xb
import xbcompiler.demo
from xbcompiler import cli
from xbcompiler.cli.demo import check_output, write_output
from xbcompiler.demo import FAULT_ENCODINGS, INPUT_SHAPE, DemoResult, make_model
from xbcompiler.diagnostics import CompileError
from xbcompiler.modelfile import load_model

PNG = b"\x89PNG\r\n\x1a\n"


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[DemoResult, str, Path]:
    """`xbc demo -o DIR` once for the module: the library's result, stdout and the folder."""
    out = tmp_path_factory.mktemp("demo") / "xbc-demo"
    results, run_demo = [], xbcompiler.demo.run_demo

    def spy(*args, **kwargs):
        results.append(run_demo(*args, **kwargs))
        return results[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(xbcompiler.demo, "run_demo", spy)
        status, stdout, err = run("demo", "-o", out)
    assert status == 0, err
    return results[0], stdout, out


def report(out: Path) -> dict:
    return json.loads((out / "demo.json").read_text())


@pytest.mark.slow
def test_demo_prints_the_numbers_and_names_the_folder(demo):
    _, stdout, out = demo
    for words in ("bit-exact", "float", "emulated (integer mode)", "crossbars", "tile", "chip", "cycles", "energy",
                  "latency", "stuck-at faults", *FAULT_ENCODINGS):
        assert words in stdout, words
    assert stdout.rstrip().splitlines()[-1] == f"output: {out}/"


@pytest.mark.slow
def test_demo_report_holds_what_it_printed(demo):
    _, stdout, out = demo
    r = report(out)
    assert r["target"] == "isaac-like" and r["test_images"] == 450
    assert r["verify"]["mode"] == "integer" and r["verify"]["bit_exact"]
    assert r["float_accuracy"] > 90 and abs(r["emulated_accuracy"] - r["float_accuracy"]) <= 2
    assert f"float {r['float_accuracy']:.2f} %" in stdout and f"{r['emulated_accuracy']:.2f} %" in stdout
    for key in ("crossbars", "tiles", "chips", "cycles"):
        assert isinstance(r[key], int) and r[key] > 0, key
    assert r["energy_pj"] > 0 and r["latency_ns"] > 0
    faults = {f["encoding"]: f for f in r["faults"]["encodings"]}
    assert set(faults) == set(FAULT_ENCODINGS) and r["faults"]["sa1_rate"] > 0
    assert faults["offset"]["fault_free_accuracy"] == r["emulated_accuracy"]  # isaac-like's own encoding
    for f in faults.values():
        assert 0 <= f["accuracy"] <= 100 and f"{f['accuracy']:6.2f} %" in stdout
        assert abs(f["fault_free_accuracy"] - r["float_accuracy"]) <= 2
    assert faults["differential-zero-high"]["overrides"]["encoding.flip_columns"] is False
    assert sorted(r["files"]) == sorted(p.name for p in out.iterdir())


@pytest.mark.slow
def test_demo_folder_loads(demo):
    _, _, out = demo
    netlist = xb.load_netlist(out)
    assert netlist.quantised and netlist.doc.target["name"] == "isaac-like"
    for name in ("occupancy.png", "layers.png", "faults.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    assert "<html" in (out / "report.html").read_text()
    costs = json.loads((out / "costs.json").read_text())
    assert costs["totals"]["crossbars"] == report(out)["crossbars"]
    model, _ = load_model(f"{out / 'model.py'}:model")  # the trained model: the netlist is its integer twin
    x = torch.from_numpy(np.load(out / "inputs.npy"))
    assert x.shape[1:] == INPUT_SHAPE[1:]
    check = xb.verify(netlist, model, x, mode="integer")
    assert check.output_rel == 0 and not any(c.mismatches for c in check.layers)
    assert run("report", out)[0] == 0


@pytest.mark.slow
def test_demo_folder_counts_as_a_previous_demo(demo):
    check_output(demo[2])  # rerunning into it is allowed


@pytest.mark.slow
def test_default_folder_is_xbc_demo_and_a_rerun_replaces_it(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xbcompiler.demo, "run_demo", lambda *a, **k: demo[0])
    for _ in range(2):
        status, stdout, _ = run("demo")
        assert status == 0 and stdout.rstrip().splitlines()[-1] == "output: xbc-demo/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xbc-demo"]
    assert sorted(p.name for p in (tmp_path / "xbc-demo").iterdir()) == sorted(p.name for p in demo[2].iterdir())


@pytest.mark.slow
def test_a_mismatch_exits_1_and_names_the_crossbar(demo, tmp_path, monkeypatch):
    result = demo[0]
    assert result.bit_exact
    first, *rest = result.verify.layers
    bad = dataclasses.replace(result.verify, layers=[
        dataclasses.replace(first, ok=False, mismatches=3, first_mismatch="t0.x1"), *rest])
    monkeypatch.setattr(xbcompiler.demo, "run_demo", lambda *a, **k: dataclasses.replace(result, verify=bad))
    status, stdout, _ = run("demo", "-o", tmp_path / "d")
    assert status == 1 and "MISMATCH" in stdout and "t0.x1" in stdout and "bit-exact" not in stdout
    assert not dataclasses.replace(result, verify=bad).bit_exact
    assert (tmp_path / "d" / "demo.json").is_file()  # the folder is written for a look at what went wrong


# ------------------------------------------------------------------------------------------ the folder


class FakeResult:
    """Writes ``files`` (and a demo.json listing them) like DemoResult.save; ``fail`` raises midway."""

    def __init__(self, files=("a.txt",), fail: BaseException | None = None):
        self.files, self.fail = files, fail

    def save(self, folder):
        folder = Path(folder)
        for name in self.files:
            (folder / name).write_text("new")
        if self.fail is not None:
            raise self.fail
        (folder / "demo.json").write_text(json.dumps({"files": [*self.files, "demo.json"]}))
        return folder


def test_demo_refuses_a_foreign_folder_before_any_work(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    status, stdout, err = run("demo", "-o", foreign)
    assert status == 2 and "error[XB004]" in err and "Traceback" not in err and not stdout
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    status, _, err = run("demo", "-o", tmp_path / "file")
    assert status == 2 and "error[XB004]" in err and (tmp_path / "file").read_text() == "x"
    (foreign / "demo.json").write_text(json.dumps({"files": ["demo.json"]}))  # a demo.json that does not list notes
    with pytest.raises(CompileError, match="no earlier xbc demo"):
        check_output(foreign)
    (foreign / "demo.json").write_text("not json")
    with pytest.raises(CompileError):
        check_output(foreign)


def test_bad_target_is_a_coded_error(tmp_path):
    status, _, err = run("demo", "--target", "nope", "-o", tmp_path / "d")
    assert status == 2 and "error[XB406]" in err and not (tmp_path / "d").exists()
    status, _, err = run("demo", "--set", "crossbar.rowz=3", "-o", tmp_path / "d")
    assert status == 2 and "error[XB401]" in err and not (tmp_path / "d").exists()


def test_an_empty_folder_and_a_new_one_are_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty)
    write_output(FakeResult(), empty)
    assert sorted(p.name for p in empty.iterdir()) == ["a.txt", "demo.json"]
    new = tmp_path / "x" / "y"
    write_output(FakeResult(), new)
    assert (new / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "x"]  # no temporary folder left


def test_a_previous_demo_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "demo"
    write_output(FakeResult(("old.png", "a.txt")), out)
    check_output(out)
    write_output(FakeResult(("a.txt",)), out)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "demo.json"]  # old.png went with the old folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_a_failed_write_leaves_the_old_folder_and_no_partial_output(tmp_path, error):
    out = tmp_path / "demo"
    write_output(FakeResult(("a.txt",)), out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else CompileError
    with pytest.raises(expected):
        write_output(FakeResult(("a.txt", "b.txt"), fail=error), out)
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    with pytest.raises(expected):
        write_output(FakeResult(fail=error), tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# ------------------------------------------------------------------------------------------- the model


def test_demo_model_is_seeded_and_leaves_the_global_rng_alone():
    x = torch.rand(2, *INPUT_SHAPE[1:])
    state = torch.random.get_rng_state()
    a, b, c = make_model(), make_model(0), make_model(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    kinds = {type(m).__name__ for m in a.modules()}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Linear"} <= kinds
