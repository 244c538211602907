"""Change one weight of a saved netlist and let ``xbc verify`` name the crossbar and column it broke
(issue 15, item 6).

1. Compile a small MLP for the ``tiny`` target and save it (``netlist.json`` + ``weights.npz``).
2. Rewrite ``weights.npz`` by hand with one weight changed: the netlist records the sha256 of
   ``weights.npz``, so ``xbc verify`` refuses it before running anything (XB503, exit 2).
3. Edit the same weight the documented way: load the netlist, replace the layer's matrix and save it
   through the library, which writes the new checksum (docs/netlist.md, "Blobs"). The edited cell is
   found independently, by comparing every crossbar's cells (``Netlist.crossbar_cells``) before and after.
4. ``xbc verify DIR --model examples/verify_edit.py:make_model`` exits 1 and names the first mismatching
   layer, crossbar and column: the cell of step 3 (checked with the library's ``xb.verify``, which the
   command runs).

Runs in a few seconds, offline: ``python examples/verify_edit.py [--out DIR]`` (default: a temporary
folder). Exit 0 when verify named the edited crossbar and column.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import xbcompiler as xb

LAYER = "_2"  # the second Linear: 16 inputs, 12 outputs on three 16x4 crossbars of `tiny`
ROW, COLUMN = 3, 9  # the weight W[0][ROW, COLUMN] of its matrix: input feature 3, output feature 9


def make_model() -> nn.Module:
    """A small MLP (fixed seed); also the ``--model`` of ``xbc verify``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).eval()


def xbc(*args: str) -> subprocess.CompletedProcess:
    """Run ``xbc ARGS`` (as ``python -m xbcompiler.cli``), echo its output, return the finished process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "xbcompiler.cli", *args], capture_output=True, text=True,
                          env=env, check=False)
    print(f"$ xbc {' '.join(args)}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})\n")
    return proc


def edited_weights(netlist: xb.Netlist) -> dict[str, np.ndarray]:
    """The netlist's arrays with ``W[0][ROW, COLUMN]`` of ``LAYER`` raised by 1."""
    key = netlist.layer(LAYER).arrays.weight.key
    weight = netlist.arrays[key].copy()
    weight[0, ROW, COLUMN] += 1.0
    return {**netlist.arrays, key: weight}


def changed_cells(before: xb.Netlist, after: xb.Netlist) -> list[tuple[str, int, int]]:
    """``(crossbar id, row, column)`` of every cell that differs between two netlists of one mapping."""
    return [(x.id, int(r), int(c)) for x in before.crossbars
            for r, c in zip(*np.nonzero(before.crossbar_cells(x.id) != after.crossbar_cells(x.id)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the netlist goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.out or Path(tmp)) / "mlp"
        model_spec = f"{Path(__file__).resolve()}:make_model"
        xb.compile(make_model(), (torch.randn(1, 16),), "tiny").save(out)
        original = xb.load_netlist(out)

        print("2. weights.npz rewritten by hand: the checksum in netlist.json no longer matches")
        np.savez(out / "weights.npz", **edited_weights(original))
        xbc("verify", str(out), "--model", model_spec)

        print("3. the documented edit: replace the array and save through the library (new checksum)")
        xb.Netlist(original.doc, edited_weights(original)).save(out)
        [(crossbar, row, column)] = changed_cells(original, xb.load_netlist(out))
        print(f"W[0][{ROW}, {COLUMN}] of layer {LAYER} changed cell ({row}, {column}) of crossbar {crossbar}\n")

        print("4. verify")
        proc = xbc("verify", str(out), "--model", model_spec)
        bad = xb.verify(xb.load_netlist(out), make_model()).first_mismatch  # what the command printed
        named = (bad.name, bad.first_mismatch, bad.first_mismatch_column)
        found = named == (LAYER, crossbar, column) and proc.returncode == 1
        print(f"verify named layer {named[0]}, crossbar {named[1]}, column {named[2]}: "
              f"{'the edited cell' if found else 'NOT the edited cell'}")
        return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
