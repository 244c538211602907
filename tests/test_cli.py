"""The `xbc` command line, run in-process through `xbcompiler.cli.main` (and once as a console script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xbcompiler
from xbcompiler import cli
from xbcompiler.diagnostics import CODES

MODELS = Path(__file__).parent / "data" / "cli_models.py"
SMALL = f"{MODELS}:small"
SHAPE = ["--input-shape", "1,3,8,8"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(result, code: str, out_dir: Path | None = None) -> None:
    status, _, err = result
    assert status == 2, err
    assert f"error[{code}]" in err, err
    assert "Traceback" not in err
    if out_dir is not None:
        assert not (out_dir / "netlist.json").exists()
        assert not (out_dir / "weights.npz").exists()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """`small` compiled for `tiny` once for the module (tests copy it before changing anything)."""
    out = tmp_path_factory.mktemp("compiled") / "small"
    assert cli.main(["compile", SMALL, *SHAPE, "--target", "tiny", "-o", str(out)]) == 0
    return out


def summary(out: Path) -> dict:
    return json.loads((out / "netlist.json").read_text())["summary"]


# ------------------------------------------------------------------------------------------ compile


def test_compile_verify_round_trip(tmp_path, capsys):
    out = tmp_path / "net"
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "-o", out)
    assert status == 0, err
    assert (out / "netlist.json").is_file() and (out / "weights.npz").is_file()
    for word in ("layer", "kind", "strategy", "crossbars", "cycles", "conv2d", "linear", "totals", "chips", "host_ops"):
        assert word in stdout
    assert f"crossbars {summary(out)['crossbars']}" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left

    status, stdout, err = run(capsys, "verify", out, "--model", SMALL)
    assert status == 0, err
    assert "verified: max relative error" in stdout
    for col in ("reference", "max abs", "rel", "first mismatch"):
        assert col in stdout

    status, stdout, _ = run(capsys, "verify", out, "--model", SMALL, "--json", "--batch", "3", "--seed", "7")
    assert status == 0
    report = json.loads(stdout)
    assert report["ok"] is True and len(report["layers"]) == 2


def test_set_override_changes_crossbar_count(compiled, tmp_path, capsys):
    out = tmp_path / "rows32"
    status, _, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--set", "crossbar.rows=32", "-o", out)
    assert status == 0, err
    assert summary(out)["crossbars"] < summary(compiled)["crossbars"]
    assert json.loads((out / "netlist.json").read_text())["target"]["crossbar"]["rows"] == 32


def test_max_chips_refuses_a_model_that_needs_more(tmp_path, capsys):
    out = tmp_path / "big"
    result = run(capsys, "compile", f"{MODELS}:big", *SHAPE, "--target", "tiny", "--max-chips", "1", "-o", out)
    assert_bad_input(result, "XB302", out)
    assert not out.exists()
    err = result[2]
    assert "place-tiles{max-chips=1,method=min-traffic}" in err  # the repro command carries the rewritten pipeline
    assert "reproduce: xbc compile" in err and "--pipeline '" in err


def test_many_chips_warns_without_max_chips(tmp_path, capsys):
    status, stdout, err = run(capsys, "compile", f"{MODELS}:big", *SHAPE, "--target", "tiny", "-o", tmp_path / "o")
    assert status == 0, err
    assert summary(tmp_path / "o")["chips"] > 1
    assert "warning: [XB310]" in stdout


def test_coverage_only_prints_every_node_and_writes_nothing(tmp_path, capsys):
    from xbcompiler.frontend.coverage import coverage
    from xbcompiler.frontend.trace import trace

    sys.path.insert(0, str(MODELS.parent))
    try:
        import cli_models
    finally:
        sys.path.remove(str(MODELS.parent))
    rows = coverage(trace(cli_models.small(), (torch.randn(1, 3, 8, 8),)))
    before = set(os.listdir(tmp_path))
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--coverage")
    assert status == 0, err
    for r in rows:
        assert r.node in stdout
    for placement in ("on crossbar", "on host", "folded"):
        assert placement in stdout
    assert "totals" not in stdout  # coverage only, no compile summary
    assert set(os.listdir(tmp_path)) == before


def test_coverage_with_output_prints_coverage_and_summary(tmp_path, capsys):
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--coverage", "-o", tmp_path / "o")
    assert status == 0, err
    assert "on crossbar" in stdout and "totals" in stdout
    assert (tmp_path / "o" / "netlist.json").is_file()


@pytest.mark.parametrize("pipeline", [
    "fully-folded",
    "fold-batchnorm,lower-im2col{rtol=1e-4},lower-to-xbar,map-fully-folded,place-tiles{max-chips=4}",
])
def test_pipeline_option(pipeline, tmp_path, capsys):
    out = tmp_path / "o"
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--pipeline", pipeline, "-o", out)
    assert status == 0, err
    recorded = json.loads((out / "netlist.json").read_text())["pipeline"]
    assert "place-tiles" in recorded
    if "{" in pipeline:
        assert recorded == "fold-batchnorm,lower-im2col{rtol=0.0001},lower-to-xbar,map-fully-folded," \
                           "place-tiles{max-chips=4}"
    assert f"pipeline: {recorded}" in stdout


def test_instruments_and_dump_ir(tmp_path, capsys):
    dumps = tmp_path / "dumps"
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--instrument",
                              "verify-each,numeric-check", "--instrument", "timing", "--dump-ir", dumps,
                              "-o", tmp_path / "o")
    assert status == 0, err
    assert "timings:" in stdout and "place-tiles" in stdout
    names = sorted(p.name for p in dumps.iterdir())
    assert "01-fold-batchnorm-before.txt" in names and "05-place-tiles-after.txt" in names


def test_instrument_adds_to_the_default_verify_each():
    from xbcompiler.cli.compile import instruments_for

    def names(items, dump_dir=None):
        return [type(i).name for i in instruments_for(items, dump_dir)]

    assert instruments_for([], None) is None  # the driver's default: verify-each
    assert names(["timing"]) == ["verify-each", "timing"]
    assert names(["numeric-check,verify-each", "timing"]) == ["numeric-check", "verify-each", "timing"]
    assert names(["timing"], "dumps") == ["verify-each", "timing", "dump-ir"]
    assert names([], "dumps") == ["verify-each", "dump-ir"]


def test_instrument_keeps_verify_each_on(tmp_path, capsys, monkeypatch):
    from xbcompiler.pipeline import VerifyEach

    verified = []
    after = VerifyEach.after

    def counting(self, pass_, ir, ctx, index):
        verified.append(pass_.name)
        return after(self, pass_, ir, ctx, index)

    monkeypatch.setattr(VerifyEach, "after", counting)
    status, stdout, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "--instrument", "timing",
                              "-o", tmp_path / "o")
    assert status == 0, err
    assert "timings:" in stdout
    assert "place-tiles" in verified and len(verified) == len(set(verified))  # every pass verified, once


def test_input_shape_defaults_to_the_files_input_shape_and_several_inputs(tmp_path, capsys):
    status, _, err = run(capsys, "compile", SMALL, "--target", "tiny", "-o", tmp_path / "a")
    assert status == 0, err
    assert summary(tmp_path / "a")["crossbars"] > 0
    status, _, err = run(capsys, "compile", f"{MODELS}:two_inputs", "--input-shape", "1,8", "--input-shape", "1,6",
                         "--target", "tiny", "-o", tmp_path / "b")
    assert status == 0, err
    doc = json.loads((tmp_path / "b" / "netlist.json").read_text())
    assert [i["shape"] for i in doc["inputs"]] == [[8], [6]]
    assert run(capsys, "verify", tmp_path / "b", "--model", f"{MODELS}:two_inputs")[0] == 0


def test_existing_output_directory_is_updated_in_place(compiled, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status, _, err = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "-o", out)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "netlist.json", "weights.npz"]
    assert (out / "netlist.json").read_bytes() == (compiled / "netlist.json").read_bytes()


def test_failed_save_leaves_nothing(tmp_path, capsys, monkeypatch):
    from xbcompiler.driver import CompiledModel

    def fail(self, directory):
        Path(directory, "weights.npz").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CompiledModel, "save", fail)
    out = tmp_path / "new" / "o"
    result = run(capsys, "compile", SMALL, *SHAPE, "--target", "tiny", "-o", out)
    assert_bad_input(result, "XB004", out)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor its new parent remain


# ---------------------------------------------------------------------------------------- bad input


BAD_TOML = 'schema = 1\nname = "broken\n[crossbar]\nrows = 16\n'


@pytest.mark.parametrize("case, code", [
    ("malformed-toml", "XB405"),
    ("unknown-key", "XB401"),
    ("unknown-target", "XB406"),
    ("bad-override", "XB407"),
    ("unsupported-op", "XB103"),
    ("data-dependent", "XB102"),
    ("factory-raises", "XB002"),
    ("no-such-factory", "XB002"),
    ("not-a-module", "XB002"),
    ("syntax-error", "XB002"),
    ("missing-model-file", "XB001"),
    ("bad-input-shape", "XB003"),
    ("zero-input-shape", "XB003"),
    ("no-colon", "XB003"),
    ("bad-max-chips", "XB003"),
    ("no-output", "XB003"),
    ("unknown-pass", "XB601"),
    ("bad-pipeline-text", "XB602"),
    ("unknown-instrument", "XB003"),
    ("wrong-shape-for-model", "XB104"),
])
def test_compile_bad_input(case, code, tmp_path, capsys):
    toml = tmp_path / "broken.toml"
    toml.write_text(BAD_TOML)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def f(:\n    pass\n")
    model, target, shape, extra = SMALL, "tiny", SHAPE, []
    if case == "malformed-toml":
        target = toml
    elif case == "unknown-key":
        extra = ["--set", "crossbar.rowz=32"]
    elif case == "unknown-target":
        target = "tinny"
    elif case == "bad-override":
        extra = ["--set", "crossbar.rows"]
    elif case == "unsupported-op":
        model, shape = f"{MODELS}:unsupported_op", ["--input-shape", "1,8"]
    elif case == "data-dependent":
        model, shape = f"{MODELS}:data_dependent", ["--input-shape", "1,4"]
    elif case == "factory-raises":
        model = f"{MODELS}:raises"
    elif case == "no-such-factory":
        model = f"{MODELS}:smal"
    elif case == "not-a-module":
        model = f"{MODELS}:not_a_module"
    elif case == "syntax-error":
        model = f"{syntax}:f"
    elif case == "missing-model-file":
        model = f"{tmp_path / 'nope.py'}:small"
    elif case == "bad-input-shape":
        shape = ["--input-shape", "1,three,8,8"]
    elif case == "zero-input-shape":
        shape = ["--input-shape", "1,0,8,8"]
    elif case == "no-colon":
        model = str(MODELS)
    elif case == "bad-max-chips":
        extra = ["--max-chips", "0"]
    elif case == "unknown-pass":
        extra = ["--pipeline", "fold-batchnorm,lower-imcol"]
    elif case == "bad-pipeline-text":
        extra = ["--pipeline", "fold-batchnorm{,lower-im2col"]
    elif case == "unknown-instrument":
        extra = ["--instrument", "verify-each,timming"]
    elif case == "wrong-shape-for-model":
        shape = ["--input-shape", "1,5,8,8"]
    out = tmp_path / "out"
    argv = ["compile", model, *shape, "--target", target, *extra]
    if case != "no-output":
        argv += ["-o", out]
    result = run(capsys, *argv)
    assert_bad_input(result, code, out)
    assert not out.exists()
    if case == "factory-raises":
        assert "raises" in result[2] and "checkpoint weights.pt is missing" in result[2]
        assert "cli_models.py" in result[2]
    if case == "unknown-key":
        assert "crossbar.rows" in result[2]  # the suggestion


def test_usage_errors_exit_2(capsys):
    status, _, err = run(capsys, "compile", SMALL)  # --target is required
    assert status == 2 and "--target" in err
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys)[0] == 2


def test_debug_shows_the_traceback(tmp_path, capsys):
    status, _, err = run(capsys, "--debug", "compile", f"{MODELS}:raises", *SHAPE, "--target", "tiny", "-o", tmp_path)
    assert status == 2
    assert "Traceback" in err and "error[XB002]" in err
    status, _, err = run(capsys, "compile", f"{MODELS}:raises", *SHAPE, "--target", "tiny", "-o", tmp_path, "--debug")
    assert status == 2 and "Traceback" in err


def test_internal_error_exits_70(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(cli.targets, "run", broken)
    status, _, err = run(capsys, "targets")
    assert status == cli.EXIT_INTERNAL == 70
    assert "internal error" in err and "--debug" in err and "Traceback" not in err
    status, _, err = run(capsys, "--debug", "targets")
    assert status == 70 and "Traceback" in err


# ------------------------------------------------------------------------------------------- verify


def test_verify_detects_a_mismatch(compiled, capsys):
    status, stdout, err = run(capsys, "verify", compiled, "--model", f"{MODELS}:small_other_seed")
    assert status == 1, err
    assert "MISMATCH" in stdout and "Traceback" not in err
    status, stdout, _ = run(capsys, "verify", compiled, "--model", f"{MODELS}:small_other_seed", "--json")
    assert status == 1 and json.loads(stdout)["ok"] is False


def test_verify_tolerance(compiled, capsys):
    assert run(capsys, "verify", compiled, "--model", f"{MODELS}:small_other_seed", "--tolerance", "1e9")[0] == 0
    assert_bad_input(run(capsys, "verify", compiled, "--model", SMALL, "--tolerance", "-1"), "XB003")
    assert_bad_input(run(capsys, "verify", compiled, "--model", SMALL, "--batch", "0"), "XB003")


@pytest.mark.parametrize("damage, code", [
    ("invalid-json", "XB502"),
    ("schema", "XB502"),
    ("weights", "XB503"),
    ("missing-dir", "XB501"),
    ("missing-weights", "XB501"),
])
def test_verify_bad_netlist(damage, code, compiled, tmp_path, capsys):
    net = tmp_path / "net"
    if damage != "missing-dir":
        shutil.copytree(compiled, net)
    if damage == "invalid-json":
        text = (net / "netlist.json").read_text()
        (net / "netlist.json").write_text(text[: len(text) // 2])
    elif damage == "schema":
        doc = json.loads((net / "netlist.json").read_text())
        doc["layers"][0]["crossbars"] = "many"
        (net / "netlist.json").write_text(json.dumps(doc))
    elif damage == "weights":
        arrays = dict(np.load(net / "weights.npz"))
        key = min(arrays)
        arrays[key] = arrays[key] + 1
        np.savez(net / "weights.npz", **arrays)
    elif damage == "missing-weights":
        (net / "weights.npz").unlink()
    assert_bad_input(run(capsys, "verify", net, "--model", SMALL), code)


def test_verify_against_a_different_architecture_is_bad_input(compiled, capsys):
    result = run(capsys, "verify", compiled, "--model", f"{MODELS}:two_inputs")
    assert result[0] == 2 and "Traceback" not in result[2]
    assert "error[XB" in result[2]


# ------------------------------------------------------------------------------------------ emulate


def test_emulate_npy_matches_the_library(compiled, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status, stdout, err = run(capsys, "emulate", compiled, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert status == 0, err
    assert "shape [3, 10]" in stdout
    got = np.load(tmp_path / "y.npy", allow_pickle=False)
    expected = xbcompiler.emulate(xbcompiler.load_netlist(compiled), torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, expected)

    np.save(tmp_path / "one.npy", x[0])  # one sample without its batch dimension
    assert run(capsys, "emulate", compiled, "--input", tmp_path / "one.npy", "-o", tmp_path / "y1.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), expected[:1], rtol=1e-5, atol=1e-6)


def test_emulate_random_and_bad_inputs(compiled, tmp_path, capsys):
    status, stdout, _ = run(capsys, "emulate", compiled, "--random", "4")
    assert status == 0 and "shape [4, 10]" in stdout and "first values" in stdout
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), np.float32))
    assert_bad_input(run(capsys, "emulate", compiled, "--input", tmp_path / "wrong.npy"), "XB505")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_bad_input(run(capsys, "emulate", compiled, "--input", tmp_path / "obj.npy"), "XB505")
    assert_bad_input(run(capsys, "emulate", compiled, "--input", tmp_path / "none.npy"), "XB001")
    assert run(capsys, "emulate", compiled)[0] == 2  # --input or --random is required


# --------------------------------------------------------------------------------- targets, passes


def test_targets_lists_builtins(capsys):
    status, stdout, _ = run(capsys, "targets")
    assert status == 0
    for name in xbcompiler.list_targets():
        assert name in stdout
    assert "16x16" in stdout and "128x128" in stdout and "16x8" in stdout and "differential" in stdout


def test_targets_shows_one_target_with_overrides(tmp_path, capsys):
    from xbcompiler.target import KEYS

    status, stdout, _ = run(capsys, "targets", "tiny", "--set", "crossbar.rows=32")
    assert status == 0
    for key in KEYS:
        assert key in stdout
    assert any(line.split()[:2] == ["crossbar.rows", "32"] for line in stdout.splitlines())
    path = Path(xbcompiler.list_targets()["tiny"])
    assert run(capsys, "targets", path)[0] == 0
    assert_bad_input(run(capsys, "targets", "nope"), "XB406")
    assert_bad_input(run(capsys, "targets", "tiny", "--set", "crossbar.rowz=3"), "XB401")


def test_passes_lists_passes_options_and_pipelines(capsys):
    from xbcompiler.pipeline import NAMED_PIPELINES, registered_passes

    status, stdout, _ = run(capsys, "passes")
    assert status == 0
    for name in registered_passes():
        assert name in stdout
    for name in NAMED_PIPELINES:
        assert name in stdout
    assert "max-chips" in stdout and "int | None" in stdout and "mapped" in stdout
    assert "verify-each" in stdout


# ---------------------------------------------------------------------------------- console script


def test_console_script(tmp_path):
    exe = shutil.which("xbc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe is not None, "the xbc console script is not installed (pip install -e .)"
    out = tmp_path / "o"
    proc = subprocess.run([exe, "compile", f"{MODELS}:raises", *SHAPE, "--target", "tiny", "-o", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "error[XB002]" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and xbcompiler.__version__ in proc.stdout


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xbcompiler.cli", "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and xbcompiler.__version__ in proc.stdout


def test_no_library_module_imports_the_cli():
    """The command line sits on top: prune/, report/ and the rest of the package never import xbcompiler.cli."""
    import ast

    root = Path(xbcompiler.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[1] == "cli":
            continue
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                    if node.level else node.module or ""
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            found += [f"{path.relative_to(root.parent)}:{node.lineno}" for n in names
                      if n == "xbcompiler.cli" or n.startswith("xbcompiler.cli.")]
    assert found == []


def test_every_code_the_cli_uses_is_registered():
    import re

    files = sorted(Path(cli.__file__).parent.glob("*.py"))  # the cli package: every command module
    assert len(files) >= len(cli.COMMANDS)
    text = "".join(f.read_text() for f in files)
    assert set(re.findall(r'"(XB\d{3})"', text)) <= set(CODES)
