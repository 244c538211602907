"""The bad-input suite (issue 14): every case ends in a coded error with exit status 2, writes nothing,
and never executes a pickle. The cases named in the issue's "Why" are all here."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from xbcompiler import cli

MODELS = '''
import torch
from torch import nn

def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()

def other():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()

def zero_outputs():
    return nn.Sequential(nn.Linear(8, 0)).eval()

def zero_inputs():
    return nn.Sequential(nn.Linear(0, 4)).eval()

def int_output():
    class Constant(nn.Module):
        def forward(self, x):
            return 3
    return Constant()

def nan_weight():
    m = nn.Sequential(nn.Linear(8, 4)).eval()
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
    return m

def inf_bias():
    m = nn.Sequential(nn.Linear(8, 4)).eval()
    with torch.no_grad():
        m[0].bias[1] = float("inf")
    return m

def nan_buffer():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    m[1].running_var.fill_(float("nan"))
    return m

def raises():
    raise ValueError("the factory broke")

def not_a_module():
    return 42
'''


class _Touch:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: str  # the XB code the error must carry ("" for argparse usage errors)
    makes: str = ""  # a path (relative to the case directory) that must not exist afterwards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory with a model file, a compiled netlist, data files and broken inputs."""
    root = tmp_path_factory.mktemp("bad")
    (root / "m.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.save(root / "x.npy", rng.random((2, 1, 8, 8), dtype=np.float32))
    np.save(root / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    np.save(root / "wrong.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.save(root / "nan.npy", np.full((4, 1, 8, 8), np.nan, np.float32))
    np.save(root / "inf.npy", np.full((4, 1, 8, 8), np.inf, np.float32))
    np.save(root / "strings.npy", np.array(["a", "b"]))
    np.save(root / "pickled.npy", np.array([_Touch(root / "PICKLE_RAN")], dtype=object), allow_pickle=True)
    (root / "junk.npy").write_bytes(b"not numpy")
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    (root / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (root / "bad.toml").write_text("[crossbar\nrows = 3\n")
    (root / "unknown.toml").write_text('schema = 1\nname = "t"\n[crossbar]\nbogus = 1\n')
    (root / "pickle.npz").write_bytes(b"PK\x03\x04 not a real archive")
    assert cli.main(["compile", f"{root}/m.py:small", "--input-shape", "1,1,8,8", "--target", "tiny",
                     "-o", str(root / "net"), "--calibrate", str(root / "x.npy")]) == 0
    netlist = json.loads((root / "net" / "netlist.json").read_text())
    for name, edit in NETLIST_EDITS.items():
        shutil.copytree(root / "net", root / name)
        doc = json.loads(json.dumps(netlist))
        text = edit(doc)
        (root / name / "netlist.json").write_text(text if isinstance(text, str) else json.dumps(doc))
    return root


def _set(path: str, value):
    def edit(doc):
        *keys, last = path.split(".")
        node = doc
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


NETLIST_EDITS = {
    "net_negative_shape": _set("inputs.0.shape", [-1, 8, 8]),
    "net_huge_shape": _set("inputs.0.shape", [100_000, 100_000, 100_000]),
    "net_deep": lambda doc: '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "net_bigint": lambda doc: json.dumps(doc).replace('"rows": ', '"rows": ' + "9" * 5000 + "0 * ", 1).replace(
        "0 * ", "", 1),
    "net_at_out_of_range": _set("crossbars.0.blocks.0.at", [1_000_000, 0]),
    "net_bad_input_index": _set("nodes.0.target", "7"),
    "net_bad_input_name": _set("nodes.0.target", "x"),
    "net_host_op_not_allowed": _set("nodes.2.target", "os.system"),
    "net_bad_version": _set("version", 99),
    "net_not_json": lambda doc: "{not json",
    "net_empty": lambda doc: "",
    "net_list": lambda doc: "[]",
    "net_wrong_rows_type": _set("crossbars.0.rows", "sixteen"),
    "net_unknown_field": _set("crossbars.0.colour", "red"),
}

NET = "net"
COMPILE = ("compile", "{root}/m.py:small", "--input-shape", "1,1,8,8", "--target", "tiny")

CASES = [
    # --- command-line values ---------------------------------------------------------------------
    Case("seed_too_big", ("emulate", NET, "--random", "2", "--seed", str(2**70)), "XB003"),
    Case("seed_negative", ("emulate", NET, "--random", "2", "--seed", "-3"), "XB003"),
    Case("seed_not_int", ("emulate", NET, "--random", "2", "--seed", "three"), "XB003"),
    Case("random_huge", ("emulate", NET, "--random", str(10**12)), "XB006"),
    Case("random_zero", ("emulate", NET, "--random", "0"), "XB003"),
    Case("verify_seed_too_big", ("verify", NET, "--model", "{root}/m.py:small", "--seed", str(2**70)), "XB003"),
    Case("verify_batch_huge", ("verify", NET, "--model", "{root}/m.py:small", "--batch", str(10**12)), "XB006"),
    Case("verify_batch_zero", ("verify", NET, "--model", "{root}/m.py:small", "--batch", "0"), "XB003"),
    Case("verify_tolerance_negative", ("verify", NET, "--model", "{root}/m.py:small", "--tolerance", "-1"), "XB003"),
    Case("verify_tolerance_nan", ("verify", NET, "--model", "{root}/m.py:small", "--tolerance", "nan"), "XB003"),
    Case("input_shape_huge", (*COMPILE[:3], "1,3,1000000,1000000", *COMPILE[4:], "-o", "out"), "XB006", "out"),
    Case("input_shape_negative", (*COMPILE[:3], "-1,8", *COMPILE[4:], "-o", "out"), "XB003", "out"),
    Case("input_shape_zero", (*COMPILE[:3], "1,0,8", *COMPILE[4:], "-o", "out"), "XB003", "out"),
    Case("input_shape_text", (*COMPILE[:3], "one,two", *COMPILE[4:], "-o", "out"), "XB003", "out"),
    Case("input_shape_wrong", (*COMPILE[:3], "1,1,9,9", *COMPILE[4:], "-o", "out"), "XB104", "out"),
    Case("compile_seed_too_big", (*COMPILE, "--seed", str(2**64), "-o", "out"), "XB003", "out"),
    Case("calibrate_random_huge", (*COMPILE, "--calibrate-random", str(10**12), "-o", "out"), "XB006", "out"),
    Case("max_chips_zero", (*COMPILE, "--max-chips", "0", "-o", "out"), "XB003", "out"),
    Case("dump_ir_is_a_file", (*COMPILE, "-o", "out", "--dump-ir", "a_file"), "XB004", "out"),
    Case("output_is_a_file", (*COMPILE, "-o", "a_file"), "XB004"),
    Case("no_output", COMPILE, "XB003"),
    Case("emulate_output_is_a_dir", ("emulate", NET, "--random", "2", "-o", "a_dir"), "XB003"),
    Case("emulate_output_empty", ("emulate", NET, "--random", "2", "-o", ""), "XB003"),
    Case("emulate_output_suffix", ("emulate", NET, "--random", "2", "-o", "out.txt"), "XB003", "out.txt"),
    Case("unknown_mode", ("emulate", NET, "--random", "2", "--mode", "quantum"), "XB505"),
    Case("set_without_device_mode", ("emulate", NET, "--random", "2", "--set", "device.sa1_rate=0.1"), "XB003"),
    Case("set_not_a_device_key", ("emulate", NET, "--random", "2", "--mode", "device", "--set", "crossbar.rows=8"),
         "XB407"),
    Case("set_rate_out_of_range", ("emulate", NET, "--random", "2", "--mode", "device", "--set",
                                   "device.sa1_rate=2"), "XB404"),
    Case("set_no_equals", ("emulate", NET, "--random", "2", "--mode", "device", "--set", "device.sa1_rate"), "XB407"),
    Case("calibrate_without_device_mode", ("emulate", NET, "--random", "2", "--calibrate", "x.npy"), "XB003"),
    Case("column_gain_without_calibration", ("emulate", NET, "--random", "2", "--mode", "device", "--set",
                                             "compensation.column_gain=true"), "XB540"),
    Case("fault_map_missing", ("emulate", NET, "--random", "2", "--mode", "device", "--set",
                               "device.fault_map=nowhere.npz"), "XB530"),
    Case("fault_map_junk", ("emulate", NET, "--random", "2", "--mode", "device", "--set",
                            "device.fault_map=pickle.npz"), "XB530"),
    Case("unknown_frontend", (*COMPILE, "--frontend", "onnx", "-o", "out"), "XB106", "out"),
    Case("unknown_pipeline", (*COMPILE, "--pipeline", "fastest", "-o", "out"), "XB605", "out"),
    Case("bad_pipeline_text", (*COMPILE, "--pipeline", "lower-im2col{{", "-o", "out"), "XB602", "out"),
    Case("unknown_pass", (*COMPILE, "--pipeline", "lower-im2col,teleport", "-o", "out"), "XB601", "out"),
    # --- targets ---------------------------------------------------------------------------------
    Case("target_is_a_dir", (*COMPILE[:5], "a_dir", "-o", "out"), "XB405", "out"),
    Case("target_nested_deep", (*COMPILE[:5], "deep.toml", "-o", "out"), "XB405", "out"),
    Case("target_malformed", (*COMPILE[:5], "bad.toml", "-o", "out"), "XB405", "out"),
    Case("target_unknown_key", (*COMPILE[:5], "unknown.toml", "-o", "out"), "XB401", "out"),
    Case("target_missing_file", (*COMPILE[:5], "missing.toml", "-o", "out"), "XB001", "out"),
    Case("target_unknown_name", (*COMPILE[:5], "isaac", "-o", "out"), "XB406", "out"),
    Case("set_unknown_key", (*COMPILE, "--set", "crossbar.colour=red", "-o", "out"), "XB401", "out"),
    Case("set_wrong_type", (*COMPILE, "--set", "crossbar.rows=many", "-o", "out"), "XB402", "out"),
    Case("set_out_of_range", (*COMPILE, "--set", "crossbar.rows=0", "-o", "out"), "XB404", "out"),
    # --- models ----------------------------------------------------------------------------------
    Case("model_zero_outputs", ("compile", "{root}/m.py:zero_outputs", "--input-shape", "1,8", "--target", "tiny",
                                "-o", "out"), "XB121", "out"),
    Case("model_zero_inputs", ("compile", "{root}/m.py:zero_inputs", "--input-shape", "1,0", "--target", "tiny",
                               "-o", "out"), "XB003", "out"),
    Case("model_int_output", ("compile", "{root}/m.py:int_output", "--input-shape", "1,8", "--target", "tiny",
                              "-o", "out"), "XB122", "out"),
    Case("model_nan_weight", ("compile", "{root}/m.py:nan_weight", "--input-shape", "1,8", "--target", "tiny",
                              "-o", "out"), "XB120", "out"),
    Case("model_inf_bias", ("compile", "{root}/m.py:inf_bias", "--input-shape", "1,8", "--target", "tiny",
                            "-o", "out"), "XB120", "out"),
    Case("model_nan_buffer", ("compile", "{root}/m.py:nan_buffer", "--input-shape", "1,1,8,8", "--target", "tiny",
                              "-o", "out"), "XB120", "out"),
    Case("model_factory_raises", ("compile", "{root}/m.py:raises", "--input-shape", "1,8", "--target", "tiny",
                                  "-o", "out"), "XB002", "out"),
    Case("model_not_a_module", ("compile", "{root}/m.py:not_a_module", "--input-shape", "1,8", "--target", "tiny",
                                "-o", "out"), "XB002", "out"),
    Case("model_no_factory", ("compile", "{root}/m.py:nothing", "--input-shape", "1,8", "--target", "tiny",
                              "-o", "out"), "XB002", "out"),
    Case("model_file_missing", ("compile", "{root}/none.py:small", "--input-shape", "1,8", "--target", "tiny",
                                "-o", "out"), "XB001", "out"),
    Case("verify_wrong_architecture", ("verify", NET, "--model", "{root}/m.py:other"), "XB506"),
    # --- data files ------------------------------------------------------------------------------
    Case("calibration_empty", (*COMPILE, "--calibrate", "empty.npy", "-o", "out"), "XB223", "out"),
    Case("calibration_nan", (*COMPILE, "--calibrate", "nan.npy", "-o", "out"), "XB223", "out"),
    Case("calibration_inf", (*COMPILE, "--calibrate", "inf.npy", "-o", "out"), "XB223", "out"),
    Case("calibration_strings", (*COMPILE, "--calibrate", "strings.npy", "-o", "out"), "XB505", "out"),
    Case("calibration_pickled", (*COMPILE, "--calibrate", "pickled.npy", "-o", "out"), "XB505", "out"),
    Case("calibration_junk", (*COMPILE, "--calibrate", "junk.npy", "-o", "out"), "XB505", "out"),
    Case("calibration_missing", (*COMPILE, "--calibrate", "missing.npy", "-o", "out"), "XB001", "out"),
    Case("input_pickled", ("emulate", NET, "--input", "pickled.npy"), "XB505"),
    Case("input_junk", ("emulate", NET, "--input", "junk.npy"), "XB505"),
    Case("input_wrong_shape", ("emulate", NET, "--input", "wrong.npy", "-o", "y.npy"), "XB505", "y.npy"),
    Case("input_missing", ("emulate", NET, "--input", "missing.npy"), "XB001"),
    Case("input_strings", ("emulate", NET, "--input", "strings.npy"), "XB505"),
    Case("too_many_inputs", ("emulate", NET, "--input", "x.npy", "--input", "x.npy"), "XB505"),
    # --- netlists --------------------------------------------------------------------------------
    Case("netlist_missing", ("emulate", "nowhere", "--random", "2"), "XB501"),
    Case("netlist_is_a_file", ("emulate", "a_file", "--random", "2"), "XB501"),
    *[Case(f"{name}_{command}", (command, name, *extra), code) for name, code in (
        ("net_negative_shape", "XB502"), ("net_deep", "XB502"), ("net_bigint", "XB502"),
        ("net_at_out_of_range", "XB510"), ("net_bad_input_index", "XB517"), ("net_bad_input_name", "XB517"),
        ("net_host_op_not_allowed", "XB502"), ("net_bad_version", "XB504"), ("net_not_json", "XB502"),
        ("net_empty", "XB502"), ("net_list", "XB502"), ("net_wrong_rows_type", "XB502"),
        ("net_unknown_field", "XB502"))
      for command, extra in (("emulate", ("--random", "2")), ("inspect", ()), ("report", ())) if
      not (command != "emulate" and name == "net_host_op_not_allowed")],
    Case("net_huge_declared_shape", ("emulate", "net_huge_shape", "--random", "2"), "XB006"),
    Case("inspect_unknown_crossbar", ("inspect", NET, "--crossbar", "t99.x99"), "XB507"),
    Case("report_plot_dir_is_a_file", ("report", NET, "--plot-dir", "a_file"), "XB004"),
    Case("report_inputs_pickled", ("report", NET, "--inputs", "pickled.npy"), "XB505"),
    # --- misuse ----------------------------------------------------------------------------------
    Case("no_command", (), ""),
    Case("unknown_command", ("frobnicate",), ""),
    Case("missing_argument", ("emulate",), ""),
    Case("both_input_and_random", ("emulate", NET, "--input", "x.npy", "--random", "2"), ""),
]


def test_there_are_at_least_80_cases():
    assert len(CASES) >= 80 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_coded_error(case, world, capsys, monkeypatch):
    monkeypatch.chdir(world)
    before = sorted(p.name for p in world.iterdir())
    code = cli.main([a.format(root=world) for a in case.args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    assert (f"error[{case.code}]" in err) if case.code else ("usage:" in err or "error:" in err), err
    if case.makes:
        assert not (world / case.makes).exists()
    assert sorted(p.name for p in world.iterdir()) == before  # nothing written, no temporary file left
    assert not (world / "PICKLE_RAN").exists()
