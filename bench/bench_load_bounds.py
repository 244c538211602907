"""Bounded netlist loading (issue 14): a ``weights.npz`` with a huge member the netlist does not name.

Compiles a small netlist, saves it twice: as written, and with a ``--gib`` GiB member appended to its
``weights.npz`` (stored, so the file really holds that many bytes). Each is loaded with
``xb.load_netlist`` in a fresh process; printed: the peak resident memory (``VmHWM``) and the wall
time of each, the exit status (the padded one must be refused with XB516), and their ratios, in one
run. Goal: the padded load peaks under 300 MB (before the loader checked member names: 1.76 GB, 17 s).

Run: ``python bench/bench_load_bounds.py [--gib 1.6]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import ROOT, report

GOAL_MB = 300
CHUNK = 1 << 24

# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report this process's peak
LOAD = """
import re, sys
import xbcompiler as xb
try:
    xb.load_netlist(sys.argv[1])
    code = "ok"
except xb.CompileError as exc:
    code = exc.code
print(code, re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1])
"""


def load(path: Path) -> tuple[str, float, float]:
    """(XB code or "ok", peak RSS in MB, seconds) of loading ``path`` in a fresh process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    return out[0], int(out[1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.6, help="size of the member the netlist does not name")
    args = parser.parse_args()
    import torch

    import xbcompiler as xb
    from tests.models import MODELS

    case = MODELS["lenet"]
    with tempfile.TemporaryDirectory() as tmp:
        plain, padded = Path(tmp, "plain"), Path(tmp, "padded")
        compiled = xb.compile(case.build(), (case.example_input()[:1],), "tiny")
        compiled.save(plain)
        compiled.save(padded)
        size = int(args.gib * (1 << 30))
        with zipfile.ZipFile(padded / "weights.npz", "a", compression=zipfile.ZIP_STORED) as zf, \
                zf.open("unnamed.npy", "w", force_zip64=True) as member:
            block = bytes(CHUNK)
            for start in range(0, size, CHUNK):
                member.write(block[:min(CHUNK, size - start)])
        del torch
        base_code, base_mb, base_s = load(plain)
        code, mb, seconds = load(padded)
    report("load_bounds_unnamed_member", member_gib=args.gib, code=code, peak_mb=round(mb, 1),
           goal_mb=GOAL_MB, met=code == "XB516" and mb < GOAL_MB, seconds=round(seconds, 2),
           plain_code=base_code, plain_peak_mb=round(base_mb, 1), plain_seconds=round(base_s, 2),
           peak_ratio=round(mb / base_mb, 3), time_ratio=round(seconds / base_s, 3))


if __name__ == "__main__":
    main()
