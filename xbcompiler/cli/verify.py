"""``xbc verify DIR --model FILE.py:FACTORY``: check a compiled netlist against the model with the emulator."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..diagnostics import CompileError
from .args import check_elements, command_parser, float_arg, int_arg
from .console import (
    EXIT_MISMATCH,
    EXIT_OK,
    console,
    json_safe,
    one_line,
    print_verdict,
    print_verify,
    status_spinner,
)
from .models import load_model, load_npy


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "verify", run, "check a compiled netlist against the model with the emulator")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--model", required=True, metavar="FILE.py:FACTORY", help="the reference model")
    p.add_argument("--seed", default="0", metavar="N", help="seed of the random inputs (default 0)")
    p.add_argument("--batch", default="2", metavar="N", help="batch size of the random inputs (default 2)")
    p.add_argument("--tolerance", default="1e-4", metavar="X",
                   help="largest relative error accepted, per layer and at the output (default 1e-4)")
    p.add_argument("--inputs", metavar="FILE.npy",
                   help="inputs to verify on (a batch for the model's input), e.g. held-out data like the "
                        "calibration set; default: --batch seeded random ones")
    p.add_argument("--float-tolerance", default="auto", metavar="X|auto|none",
                   help="integer mode with --inputs: largest end-to-end relative error against the float model "
                        "(default auto: max(2**(4-b), 0.05) for the narrowest weight/input width b; none: report only)")
    p.add_argument("--mode", default=None, help="emulator mode (default: integer for a quantised netlist, else "
                                                "ideal); an unknown mode is XB505")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import load_netlist, verify

    seed = int_arg(args.seed, "--seed", 0)
    batch = int_arg(args.batch, "--batch", 1)
    tolerance = float_arg(args.tolerance, "--tolerance")
    float_tolerance = _float_tolerance(args.float_tolerance)
    netlist = load_netlist(args.netlist)
    inputs = None
    if args.inputs is not None:
        if len(netlist.doc.inputs) != 1:
            raise CompileError("XB003", f"--inputs gives one array but the netlist has {len(netlist.doc.inputs)} "
                                        "inputs", hint="verify a multi-input netlist from Python: "
                                                       "xbcompiler.verify(netlist, model, (x1, x2, ...))")
        inputs = load_npy(Path(args.inputs), netlist.doc.inputs[0])
        check_elements(inputs.shape, "--inputs")
    else:
        for spec in netlist.doc.inputs:
            check_elements((batch, *spec.shape), "--batch")
    model, _ = load_model(args.model)
    with status_spinner("verifying..."):
        report = run_verify(verify, netlist, model, args.model, inputs=inputs, mode=args.mode, tolerance=tolerance,
                            seed=seed, batch=batch, float_tolerance=float_tolerance)
    stdout = console()
    if args.json:
        print(json.dumps(json_safe(report.to_dict()), indent=2))
    else:
        print_verify(stdout, report)
        print_verdict(stdout, report)
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _float_tolerance(text: str) -> float | str | None:
    """``--float-tolerance``: ``auto``, ``none`` or a non-negative number."""
    word = str(text).strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    return float_arg(text, "--float-tolerance")


def run_verify(verify, netlist, model, spec: str, **kwargs):
    """``verify``; a model whose graph does not fit the netlist's layers is XB506, not a crash."""
    try:
        return verify(netlist, model, **kwargs)
    except KeyError as exc:
        raise CompileError("XB506", f"the model {spec} does not match the netlist: it has no node {exc}",
                           hint="verify against the model the netlist was compiled from") from exc
    except (RuntimeError, ValueError, IndexError) as exc:
        raise CompileError("XB506", f"the model {spec} does not match the netlist: {type(exc).__name__}: "
                                    f"{one_line(exc)}",
                           hint="verify against the model the netlist was compiled from (if it is that model, "
                                "rerun with --debug and report a bug)") from exc
