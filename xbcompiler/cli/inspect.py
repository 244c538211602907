"""``xbc inspect DIR [--crossbar ID [--save FILE.npy] [--full]]``: what one crossbar holds, or the list.

Without ``--crossbar`` it lists the netlist's crossbars (id, layer, tile, chip). With it, it prints
that crossbar's id, layer, tile and chip, then its cells: the array
``Netlist.crossbar_cells(ID)`` returns (rows x columns; the programmed levels
for a quantised layer, the real weights for a float layer) with its shape, dtype and non-zero count.
``--save`` writes the array to a ``.npy`` file, atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError
from .args import command_parser
from .console import EXIT_OK, console, fmt, row, say, table
from .files import write_atomically

#: Arrays with more cells than this are printed summarised (numpy's ``threshold``); ``--full`` prints all.
THRESHOLD = 1000

#: What ``xbc inspect`` shows of a crossbar besides its cells, in order (see :func:`crossbar_fields`).
FIELDS = ("id", "layer", "tile", "chip")


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "inspect", run,
                       "show the cells of one crossbar of a compiled netlist, or list its crossbars")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--crossbar", metavar="ID", help="the crossbar to show, e.g. t0.x1 (without it: list them)")
    p.add_argument("--save", metavar="FILE.npy", help="write the crossbar's cells to this .npy file")
    p.add_argument("--full", action="store_true", help="print every cell, not a summary of a big array")
    return p


def crossbar_fields(netlist) -> list[dict[str, Any]]:
    """id, layer, tile and chip (:data:`FIELDS`) of every crossbar."""
    return [{k: getattr(x, k) for k in FIELDS} for x in netlist.crossbars]


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import load_netlist

    save = None if args.save is None else Path(args.save)
    if save is not None and args.crossbar is None:
        raise CompileError("XB003", "--save needs a crossbar: xbc inspect DIR --crossbar ID --save FILE.npy")
    if save is not None and save.suffix != ".npy":
        raise CompileError("XB003", f"bad --save '{args.save}': expected a .npy file name")
    netlist = load_netlist(args.netlist)
    stdout = console()
    if args.crossbar is None:
        found = crossbar_fields(netlist)
        t = table(f"{len(found)} crossbars", FIELDS, right=("tile", "chip"))
        for entry in found:
            row(t, *(entry[k] for k in FIELDS))
        stdout.print(t)
        return EXIT_OK

    cells = np.asarray(netlist.crossbar_cells(args.crossbar))  # an unknown id is a coded error
    if save is not None:  # before printing: a path that cannot be written prints nothing
        write_atomically(save, lambda fh: np.save(fh, cells, allow_pickle=False))
    info = next((e for e in crossbar_fields(netlist) if str(e["id"]) == args.crossbar), {"id": args.crossbar})
    say(stdout, f"crossbar: {args.crossbar}")
    for key in FIELDS[1:]:
        say(stdout, f"{key}: {fmt(info.get(key))}")
    say(stdout, f"shape: {' x '.join(str(d) for d in cells.shape)}")
    say(stdout, f"dtype: {cells.dtype}")
    say(stdout, f"non-zero cells: {np.count_nonzero(cells)} of {cells.size}")
    with np.printoptions(threshold=sys.maxsize if args.full else THRESHOLD, linewidth=max(stdout.width, 40)):
        text = np.array2string(cells)
    say(stdout, text)
    if save is not None:
        say(stdout, f"wrote {save}")
    return EXIT_OK
