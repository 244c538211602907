"""``xbc emulate DIR (--input FILE.npy ... | --random N)``: run a compiled netlist on inputs.

``--mode device`` programs the netlist onto a chip first (``xb.program``) with ``--seed`` and the
``--set device.KEY=VALUE`` / ``--set compensation.KEY=VALUE`` overrides of its target (docs/faults.md);
``--calibrate FILE.npy`` is the batch ``compensation.column_gain`` measures the columns on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..diagnostics import CompileError
from .args import add_set, command_parser, int_arg, parse_overrides
from .console import EXIT_OK, console, say
from .files import write_atomically
from .models import load_npy, random_inputs


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "emulate", run, "run a compiled netlist on inputs")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="append", metavar="FILE.npy",
                        help="one input array (batch first); repeat for several inputs")
    source.add_argument("--random", metavar="N", help="run on N seeded random samples")
    p.add_argument("--seed", default="0", metavar="N",
                   help="seed of --random and of programming the chip in --mode device (default 0)")
    p.add_argument("--mode", default=None, help="emulator mode: ideal, integer or device (default: integer for a "
                                                "quantised netlist, else ideal); an unknown mode is XB505")
    add_set(p)
    p.add_argument("--calibrate", metavar="FILE.npy",
                   help="--mode device: inputs (batch first) that compensation.column_gain calibrates on")
    p.add_argument("-o", "--output", metavar="OUT.npy", help="write the output here (.npz for several outputs)")
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import emulate, load_netlist
    from ..verify import output_tensors

    seed = int_arg(args.seed, "--seed", 0)
    n = None if args.random is None else int_arg(args.random, "--random", 1)
    if args.output is not None and Path(args.output).suffix not in (".npy", ".npz"):
        raise CompileError("XB003", f"bad -o '{args.output}': expected a .npy (or .npz) file name")
    overrides = parse_overrides(args.overrides)
    if (overrides or args.calibrate is not None) and args.mode != "device":
        raise CompileError("XB003", "--set and --calibrate program a chip: they need --mode device",
                           hint="other target keys need a recompile: xbc compile --set KEY=VALUE")
    netlist = load_netlist(args.netlist)
    specs = netlist.doc.inputs
    if n is not None:
        inputs = random_inputs([(n, *s.shape) for s in specs], seed)
    else:
        inputs = tuple(load_npy(Path(p), specs[i] if i < len(specs) else None) for i, p in enumerate(args.input))
    with torch.no_grad():
        calibration = None if args.calibrate is None else load_npy(Path(args.calibrate), specs[0])
        device = {"seed": seed, "overrides": overrides, "calibration": calibration} if args.mode == "device" else {}
        result = emulate(netlist, inputs, mode=args.mode, **device)
    outputs = [t.detach().cpu().numpy() for t in output_tensors(result)]
    stdout = console()
    for i, arr in enumerate(outputs):
        flat = arr.reshape(-1)[:8]
        more = " ..." if arr.size > 8 else ""
        label = "output" if len(outputs) == 1 else f"output {i}"
        say(stdout, f"{label}: shape {list(arr.shape)} {arr.dtype}; first values "
                    f"{np.array2string(flat, precision=5, separator=', ', max_line_width=10_000)}{more}")
    if args.output is not None:
        write_outputs(Path(args.output), outputs)
        say(stdout, f"wrote {args.output}")
    return EXIT_OK


def write_outputs(path: Path, outputs: list) -> None:
    import numpy as np

    if path.suffix == ".npy" and len(outputs) != 1:
        raise CompileError("XB003", f"the model has {len(outputs)} outputs; write them with -o OUT.npz")

    def write(fh) -> None:
        if path.suffix == ".npy":
            np.save(fh, outputs[0], allow_pickle=False)
        else:
            np.savez(fh, **{f"output{i}": a for i, a in enumerate(outputs)})

    write_atomically(path, write, make_parents=True)
