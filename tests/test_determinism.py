"""Two compiles of the same model save byte-identical files, whatever ``PYTHONHASHSEED`` is.

Each compile runs in a fresh interpreter with its own hash seed, because string hashing decides the
iteration order of sets of names: placing ResNet-20 used to follow such a set
(``xbcompiler/mapping/traffic.py``), and with ``PYTHONHASHSEED=2`` one crossbar landed on another tile
than with 0 or 1. The saved directories are compared generically, every file byte for byte, so the
test does not depend on which files the netlist format writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "resnet20"  # min-traffic placement on a residual graph: several producers per layer
TARGET = "isaac-like"
SEEDS = ("0", "1", "2")  # before the fix, 2 placed a crossbar of ResNet-20 differently from 0 and 1

COMPILE = textwrap.dedent("""
    import sys, warnings
    import xbcompiler as xb
    from tests.models import MODELS

    case = MODELS[sys.argv[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(case.build(), case.example_input(), sys.argv[2])
    compiled.save(sys.argv[3])
""")


def saved_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, with its bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def first_difference(a: bytes, b: bytes) -> str:
    """Where two byte strings first differ, with a little context."""
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"byte {at} of {len(a)} / {len(b)}: {a[max(0, at - 40):at + 40]!r} vs {b[max(0, at - 40):at + 40]!r}"


def compile_under_hash_seeds(out: Path) -> dict[str, dict[str, bytes]]:
    """Compile MODEL once per seed, each in its own interpreter (run side by side); their saved files."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    runs = {}
    for seed in SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
        runs[seed] = subprocess.Popen([sys.executable, "-c", COMPILE, MODEL, TARGET, str(out / f"hashseed-{seed}")],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for seed, run in runs.items():
        _, err = run.communicate(timeout=900)
        assert run.returncode == 0, f"the compile with PYTHONHASHSEED={seed} failed:\n{err[-3000:]}"
    return {seed: saved_files(out / f"hashseed-{seed}") for seed in SEEDS}


@pytest.mark.slow
def test_compiles_are_byte_identical_under_any_hash_seed(tmp_path):
    saved = compile_under_hash_seeds(tmp_path)
    first, *others = SEEDS
    assert saved[first], "compiled.save wrote no files"
    for seed in others:
        assert sorted(saved[seed]) == sorted(saved[first]), \
            f"PYTHONHASHSEED={first} and ={seed} saved different files"
        differ = {name: first_difference(saved[first][name], saved[seed][name])
                  for name in saved[first] if saved[seed][name] != saved[first][name]}
        assert not differ, f"{MODEL} on {TARGET}: PYTHONHASHSEED={first} and ={seed} saved different bytes:\n" + \
            "\n".join(f"  {name}: {where}" for name, where in differ.items())
