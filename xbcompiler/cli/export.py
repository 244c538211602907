"""``xbc export DIR --format neurosim|crosssim|csv [-o FILE]``: a saved netlist in another tool's format.

The file goes to ``-o FILE`` (``-o -``: stdout, for the one-file formats) or, by default, into ``DIR``
under the format's name (``NetWork.csv``, ``crosssim.json``, ``crossbars.csv``); ``neurosim`` also
writes the ``Param.cpp`` values next to it (``NetWork.param.txt``). Each file is written whole or not
at all. What the format cannot express is printed to stderr as ``note:`` lines (docs/export.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..diagnostics import CompileError, Location
from ..export import FORMATS
from .args import command_parser
from .console import EXIT_OK
from .files import write_atomically


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "export", run,
                       "write a compiled netlist in another tool's format: NeuroSim, CrossSim or a CSV of crossbars")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="; ".join(f"{f.name}: {f.doc}" for f in FORMATS.values()))
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the file to write ('-': stdout, not for neurosim); default: "
                        + ", ".join(f"DIR/{f.default_file} ({f.name})" for f in FORMATS.values()))
    return p


def output_path(args: argparse.Namespace, default_file: str) -> Path | None:
    """Where to write (None: stdout); XB003 for stdout with a two-file format, XB004 for a path that cannot
    be a file (a directory, or in a folder that does not exist)."""
    if args.output == "-":
        if args.format == "neurosim":
            raise CompileError("XB003", "--format neurosim writes two files and cannot go to stdout",
                               hint="give a file name: -o NetWork.csv (the Param.cpp values go to NetWork.param.txt)")
        return None
    path = Path(args.output) if args.output else Path(args.netlist) / default_file
    if path.is_dir():
        raise CompileError("XB004", f"cannot write {path}: it is a directory", location=Location(file=str(path)),
                           hint="give a file name, e.g. -o " + str(path / default_file))
    if not path.parent.is_dir():
        raise CompileError("XB004", f"cannot write {path}: folder {path.parent} does not exist",
                           location=Location(file=str(path)), hint="create the folder first")
    return path


def run(args: argparse.Namespace) -> int:
    from .. import load_netlist

    form = FORMATS[args.format]
    path = output_path(args, form.default_file)
    result = form.make(load_netlist(args.netlist))
    if path is None:
        sys.stdout.write(result.text)
    else:
        written = [write_atomically(path.with_suffix(c.suffix), _bytes(c.text)) for c in result.companions]
        written.insert(0, write_atomically(path, _bytes(result.text)))  # the main file last: the others go with it
        for p in written:
            print(f"wrote {p}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def _bytes(text: str):
    data = text.encode()
    return lambda fh: fh.write(data)
