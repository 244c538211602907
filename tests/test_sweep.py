"""Sweeps on Ray (issue 13): spec validation, trial expansion, the compile cache, failing trials, resume
after a kill, a changed spec, the report. Tiny: an MLP on a few digits, a local Ray with one CPU."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # a dev dependency: the sweep tests must run, never skip

import xbcompiler as xb
from xbcompiler.campaign import expand, load_spec
from xbcompiler.campaign.report import load, summarise
from xbcompiler.campaign.results import ResultStore, SweepMeta, read_rows
from xbcompiler.campaign.work import TrialResult
from xbcompiler.cli import main
from xbcompiler.diagnostics import CompileError

MODEL = Path(__file__).parent / "data" / "sweep_model.py"
ROOT = Path(__file__).resolve().parent.parent

BASE = """schema = 1
name = "tiny"
[model]
factory = "sweep_model.py:mlp"
input_shape = [1, 1, 8, 8]
[data]
limit = {limit}
calibration = 16
[compile]
target = "tiny"
mode = "device"
"""


def write_spec(folder: Path, grid: str, *, limit: int = 24, extra: str = "") -> Path:
    shutil.copy(MODEL, folder / "sweep_model.py")
    path = folder / "spec.toml"
    path.write_text(BASE.format(limit=limit) + extra + "[grid]\n" + grid)
    return path


def calls(folder: Path) -> int:
    path = folder / "sweep_model.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def csv_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


# --------------------------------------------------------------------------------------------------
# specs refused before anything runs


def _refused(tmp_path: Path, capsys, spec: Path, code: str) -> str:
    out = tmp_path / "out"
    status = main(["sweep", str(spec), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"error[{code}]" in err and "Traceback" not in err
    assert not out.exists()
    return err


def test_unknown_key_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, '"device.sa1_rat" = [0.0, 0.1]\n')
    err = _refused(tmp_path, capsys, spec, "XB701")
    assert "device.sa1_rate" in err  # the nearest key is suggested
    spec.write_text(spec.read_text().replace("[compile]", "[compile]\ntargett = 1"))
    _refused(tmp_path, capsys, spec, "XB701")


def test_bad_range_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, write_spec(tmp_path, '"device.sa1_rate" = [0.0, 1.5]\n'), "XB704")
    assert "device.sa1_rate" in err
    _refused(tmp_path, capsys, write_spec(tmp_path, '"crossbar.rows" = [4]\n'), "XB704")
    _refused(tmp_path, capsys, write_spec(tmp_path, 'seed = [0]\n', limit=-1), "XB704")
    _refused(tmp_path, capsys, write_spec(tmp_path, 'pipeline = ["no-such-pipeline"]\n'), "XB704")


def test_missing_factory_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, "seed = [0, 1]\n")
    spec.write_text(spec.read_text().replace("sweep_model.py:mlp", "sweep_model.py:mlpp"))
    assert "model.factory" in _refused(tmp_path, capsys, spec, "XB704")
    spec.write_text(spec.read_text().replace("sweep_model.py:mlpp", "nowhere.py:mlp"))
    _refused(tmp_path, capsys, spec, "XB704")
    assert calls(tmp_path) == 0


def test_other_spec_problems_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, "seed = [0, 1]\n")
    spec.write_text(spec.read_text().replace('mode = "device"', 'mode = "integer"'))
    _refused(tmp_path, capsys, spec, "XB704")  # a chip seed without device mode
    spec.write_text(spec.read_text().replace('target = "tiny"\n', ""))
    _refused(tmp_path, capsys, spec, "XB703")
    spec.write_text("schema = [")
    _refused(tmp_path, capsys, spec, "XB705")
    spec.write_text(BASE.format(limit=4))  # nothing to vary
    _refused(tmp_path, capsys, spec, "XB703")


def test_ray_missing_is_coded(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    _refused(tmp_path, capsys, write_spec(tmp_path, "seed = [0]\n"), "XB005")


def test_core_imports_without_ray():
    code = "import sys; sys.modules['ray'] = None; import xbcompiler, xbcompiler.cli, xbcompiler.campaign.report"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_every_spec_key_documented():
    from xbcompiler.campaign.spec import KEYS, TABLES

    text = (ROOT / "docs" / "sweeps.md").read_text()
    missing = [k for k in [*KEYS, *TABLES] if f"`{k}`" not in text and f"[{k}]" not in text]
    assert not missing


def test_example_spec_is_the_200_trial_study():
    trials = expand(load_spec(ROOT / "examples" / "sweeps" / "fault_rates.toml"))
    assert len(trials) == 200 and len({t.compile_key for t in trials}) == 2
    assert all(t.program["device.sa0_rate"] == pytest.approx(t.program["device.sa1_rate"] / 5.2) for t in trials)


# --------------------------------------------------------------------------------------------------
# trials


def test_trials_grid_random_derived(tmp_path):
    extra = ('[derived]\n"device.sa0_rate" = { from = "device.sa1_rate", scale = 0.5 }\n'
             '[random]\ntrials = 3\nseed = 7\n"device.program_sigma" = { low = 0.0, high = 0.2 }\n')
    spec = load_spec(write_spec(tmp_path, '"device.sa1_rate" = [0.0, 0.1]\n"precision.adc_bits" = [4, 6]\n',
                                extra=extra))
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 3 and len({t.id for t in trials}) == 12
    assert [t.id for t in trials] == [t.id for t in expand(spec)]  # ids and draws are stable
    assert all(t.derived["device.sa0_rate"] == 0.5 * t.values["device.sa1_rate"] for t in trials)
    assert all(0 <= t.program["device.program_sigma"] <= 0.2 for t in trials)
    assert len({t.compile_key for t in trials}) == 2  # device keys and seeds share a compile


# --------------------------------------------------------------------------------------------------
# running


def test_compile_cache_and_failing_trial(tmp_path, local_ray):
    # sa0 + sa1 = 1.2 cannot be programmed: those trials fail in the worker, the others finish
    grid = '"device.sa0_rate" = [0.0, 0.6]\n"device.sa1_rate" = [0.6]\n"precision.adc_bits" = [4, 6]\nseed = [0, 1]\n'
    spec = write_spec(tmp_path, grid)
    outcome = xb.sweep(spec, tmp_path / "out")
    assert (outcome.trials, outcome.ran, outcome.failed, outcome.lost) == (8, 8, 4, 0)
    assert outcome.compiles == 2
    assert calls(tmp_path) == 1 + 2  # the factory: once for the weights, once per distinct compile
    rows = csv_rows(tmp_path / "out")
    assert len(rows) == 8
    failed = [r for r in rows if r["status"] != "ok"]
    assert {r["status"] for r in failed} == {"XB404"} and all(r["device.sa0_rate"] == "0.6" for r in failed)
    assert all("sa0_rate" in r["message"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(0 <= float(r["accuracy"]) <= 100 and int(r["crossbars"]) > 0 for r in ok)
    assert len({r["fingerprint"] for r in ok}) == 2
    assert set(rows[0]) == {"trial", "device.sa0_rate", "device.sa1_rate", "precision.adc_bits", "seed", "status",
                            "accuracy", "crossbars", "chips", "energy_uj", "latency_us", "seconds", "fingerprint",
                            "message"}
    if importlib.util.find_spec("pyarrow") is not None:  # Parquet beside the CSV: the same rows
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / "out" / "results.parquet").to_pydict()
        assert set(table) == set(rows[0]) and sorted(table["trial"]) == sorted(r["trial"] for r in rows)
    again = xb.sweep(spec, tmp_path / "out")  # nothing left to run
    assert (again.ran, again.skipped, again.compiles) == (0, 8, 0) and calls(tmp_path) == 3
    # the report: one point per (sa0, adc bits), the seeds averaged; failures counted
    meta, rows = load(tmp_path / "out")
    points = summarise(meta, rows)
    assert len(points) == 4 and all(p.trials == 2 for p in points)
    assert sorted(p.failed for p in points) == [0, 0, 2, 2]
    assert all((p.metrics["accuracy"] is None) == (p.failed == 2) for p in points)
    assert main(["sweep-report", str(tmp_path / "out"), "--x", "device.sa0_rate", "--lines", "precision.adc_bits"]) == 0
    assert (tmp_path / "out" / "accuracy-vs-device_sa0_rate.png").stat().st_size > 0
    assert (tmp_path / "out" / "pareto-accuracy-crossbars.png").exists()


def test_changed_spec_refused_unless_forced(tmp_path, local_ray, capsys):
    spec = write_spec(tmp_path, "seed = [0]\n", limit=8)
    out = tmp_path / "out"
    assert xb.sweep(spec, out).ran == 1
    before = (out / "results.csv").read_bytes()
    spec.write_text(spec.read_text().replace("limit = 8", "limit = 9"))
    with pytest.raises(CompileError) as err:
        xb.sweep(spec, out)
    assert err.value.code == "XB706" and (out / "results.csv").read_bytes() == before
    spec.write_text(spec.read_text().replace("seed = [0]", "seed = [0, 1]"))  # more seeds alone: allowed
    spec.write_text(spec.read_text().replace("limit = 9", "limit = 8"))
    assert xb.sweep(spec, out).ran == 1
    spec.write_text(spec.read_text().replace("limit = 8", "limit = 9"))
    assert xb.sweep(spec, out, force=True).ran == 2
    assert len(csv_rows(out)) == 2


def test_partial_last_row_dropped(tmp_path):
    meta = SweepMeta("t", "lock", ("seed",), (), {})
    store = ResultStore.open(tmp_path, meta)
    store.append({"seed": 0}, TrialResult("a", "ok", 50.0, 3, 1, 0.1, 0.2, 0.5, "f"))
    store.close()
    with (tmp_path / "results.csv").open("a") as fh:
        fh.write("b,1,ok,5")  # a kill in the middle of a row
    rows = read_rows(tmp_path, meta)
    assert [r.trial for r in rows] == ["a"] and rows[0].metrics["accuracy"] == 50.0
    assert (tmp_path / "results.csv").read_text().endswith("\n")


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    # enough slow-ish trials that the kill lands mid-run: 2000 test samples per trial, one worker
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_test=rng.random((2000, 1, 8, 8), dtype=np.float32),
             y_test=rng.integers(0, 10, 2000), x_train=rng.random((32, 1, 8, 8), dtype=np.float32),
             y_train=rng.integers(0, 10, 32))
    spec = write_spec(tmp_path, '"device.sa1_rate" = [0.0, 0.01, 0.02, 0.05]\nseed = [0, 1, 2, 3, 4]\n',
                      limit=0)
    spec.write_text(spec.read_text().replace("[data]", '[data]\nsource = "data.npz"'))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xbcompiler.cli", "sweep", str(spec), "-o", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.csv").exists() and len((out / "results.csv").read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed = len(csv_rows(out))
    assert 2 <= killed < 20
    done = subprocess.run([*command, "--json"], check=False, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = csv_rows(out)
    ids = [r["trial"] for r in rows]
    assert len(ids) == 20 and len(set(ids)) == 20  # every trial exactly once
    assert sorted(ids) == sorted(t.id for t in expand(load_spec(spec)))
    assert json.loads(done.stdout)["skipped"] == killed


@pytest.mark.slow
def test_bench_sweep_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_sweep.py"), "--quick"], check=False,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"bench"')]
    runs = {row["bench"]: row for row in lines}
    assert runs["sweep_digits_w1"]["trials"] == runs["sweep_digits_w2"]["trials"] == 4
    assert runs["sweep_digits_w1"]["compiles"] == 2 and runs["sweep_digits_w1"]["failed"] == 0
    assert {"speedup", "goal", "met"} <= runs["sweep_digits_speedup"].keys()


def test_address_joins_an_existing_cluster_and_workers_size_a_local_one():
    from xbcompiler.campaign.runner import _init

    class FakeRay:
        def __init__(self):
            self.calls = []

        def is_initialized(self):
            return False

        def init(self, **kwargs):
            self.calls.append(kwargs)

    joined, local = FakeRay(), FakeRay()
    assert _init(joined, 4, "ray://head:10001") and _init(local, 3, None)
    assert joined.calls[0]["address"] == "ray://head:10001" and "num_cpus" not in joined.calls[0]
    assert local.calls[0]["num_cpus"] == 3 and "address" not in local.calls[0]
