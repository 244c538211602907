"""``xbc compile FILE.py:FACTORY --target T -o DIR``: compile a model to a crossbar netlist."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..diagnostics import CompileError, Location
from .args import add_set, command_parser, int_arg, parse_overrides, parse_shape, shape_text
from .console import (
    EXIT_OK,
    console,
    merge_warnings,
    print_coverage,
    print_summary,
    say,
    status_spinner,
    xb_warnings,
)
from .files import save_atomically
from .models import load_model, load_npy, module_shapes, random_inputs


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "compile", run, "compile a model to a crossbar netlist")
    p.add_argument("model", metavar="FILE.py:FACTORY", help="Python file and the function in it returning the model")
    p.add_argument("--input-shape", action="append", default=[], metavar="SHAPE",
                   help="shape of one example input, batch first (e.g. 1,3,32,32); repeat for several inputs; "
                        "default: the file's INPUT_SHAPE")
    p.add_argument("--target", required=True, metavar="NAME|PATH", help="built-in target name or .toml file")
    add_set(p)
    p.add_argument("--pipeline", default="default", metavar="SPEC",
                   help="named pipeline or pass list, e.g. 'fold-batchnorm,lower-im2col,...' (default: default)")
    p.add_argument("--max-chips", metavar="N", help="fail (XB302) when the model needs more than N chips")
    p.add_argument("--frontend", default="auto", metavar="auto|export|fx",
                   help="capture with torch.export (export), symbolic tracing (fx), or export falling back to "
                        "tracing (auto, the default)")
    p.add_argument("--coverage", action="store_true",
                   help="print where every node runs; without -o, print only that and compile nothing")
    p.add_argument("--instrument", action="append", default=[], metavar="LIST",
                   help="instruments around every pass, in addition to verify-each (always on), "
                        "e.g. numeric-check,timing")
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR before and after every pass to DIR")
    p.add_argument("--seed", default="0", metavar="N", help="seed of the example inputs and the passes (default 0)")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for netlist.json and weights.npz")
    calibrate = p.add_mutually_exclusive_group()
    calibrate.add_argument("--calibrate", metavar="FILE.npy",
                           help="quantise with power-of-two scales, calibrated on these inputs (batch first)")
    calibrate.add_argument("--calibrate-random", metavar="N",
                           help="quantise with power-of-two scales, calibrated on N seeded random inputs")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import compile as xb_compile
    from ..frontend.capture import capture, check_frontend
    from ..frontend.coverage import coverage
    from ..frontend.trace import check_inputs
    from ..target import load_target

    # cheap checks first, so a typo costs no model import
    seed = int_arg(args.seed, "--seed", 0)
    check_frontend(args.frontend)
    shapes = [parse_shape(s) for s in args.input_shape]
    max_chips = None if args.max_chips is None else int_arg(args.max_chips, "--max-chips", 1)
    if args.output is None and not args.coverage:
        raise CompileError("XB003", "compile needs -o DIR",
                           hint="pass -o DIR for the netlist, or --coverage to only print operator coverage")
    out = Path(args.output) if args.output is not None else None
    for flag, path in (("-o", out), ("--dump-ir", None if args.dump_ir is None else Path(args.dump_ir))):
        if path is not None and path.exists() and not path.is_dir():
            raise CompileError("XB004", f"{flag} {path} exists and is not a directory", location=Location(file=str(path)))
    overrides = parse_overrides(args.overrides)
    target = load_target(args.target, overrides)
    instruments = instruments_for(args.instrument, args.dump_ir)
    passes = pipeline_for(args.pipeline, max_chips) if out is not None else None

    model, module = load_model(args.model)
    shapes = shapes or module_shapes(module, args.model)
    inputs = random_inputs(shapes, seed)
    stdout = console()

    if out is None:  # --coverage only: trace and classify, nothing compiled or written
        with status_spinner("capturing the model..."), xb_warnings() as found:
            captured = capture(model, check_inputs(inputs), args.frontend)
            rows = coverage(captured.gm)
        print_coverage(stdout, rows)
        say(stdout, f"front end: {captured.frontend}" + (f" (torch.export failed: {captured.fallback})"
                                                         if captured.fallback else ""))
        for w in found:
            say(stdout, f"warning: {w}", "yellow")
        return EXIT_OK

    repro = repro_command(args, shapes, seed)
    with status_spinner(f"compiling for {target.name}..."), xb_warnings() as found:
        cm = xb_compile(model, inputs, target, passes, overrides=None, instruments=instruments, seed=seed,
                        repro=repro, calibration=calibration(args, shapes, seed), frontend=args.frontend)
    save_atomically(cm, out)  # compiled fully in memory first: an error above leaves nothing in DIR
    if args.coverage:
        print_coverage(stdout, cm.coverage)
        say(stdout, f"front end: {cm.netlist.doc.provenance['frontend']['used']}")
    print_summary(stdout, cm.netlist, merge_warnings(found, cm.warnings))
    if cm.timings:
        say(stdout, "timings: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in cm.timings.items()))
    say(stdout, f"wrote {out / 'netlist.json'} and {out / 'weights.npz'}")
    return EXIT_OK


def calibration(args: argparse.Namespace, shapes: Sequence[Sequence[int]], seed: int):
    """``--calibrate FILE.npy`` (one input) or ``--calibrate-random N`` as calibration inputs; None without."""
    if args.calibrate is not None:
        return load_npy(Path(args.calibrate), None)
    if args.calibrate_random is not None:
        n = int_arg(args.calibrate_random, "--calibrate-random", 1)
        return random_inputs([(n, *s[1:]) for s in shapes], seed + 1)
    return None


def pipeline_for(spec: str, max_chips: int | None) -> list:
    """The resolved pass list; ``--max-chips`` rewrites the ``place-tiles`` pass's option."""
    from ..pipeline import resolve_pipeline

    passes = resolve_pipeline(spec)
    if max_chips is None:
        return passes
    hits = [i for i, p in enumerate(passes) if p.name == "place-tiles"]
    if not hits:
        raise CompileError("XB003", "--max-chips needs a 'place-tiles' pass in the pipeline",
                           details=[f"pipeline: {spec}"])
    for i in hits:
        try:
            passes[i] = dataclasses.replace(passes[i], max_chips=max_chips)
        except (TypeError, ValueError) as exc:
            raise CompileError("XB003", f"--max-chips: pass 'place-tiles' takes no max_chips option ({exc})") from None
    return passes


def instruments_for(items: Sequence[str], dump_dir: str | None) -> list | None:
    """The default ``verify-each`` plus the ``--instrument`` lists (joined) and ``--dump-ir``.

    None (the driver's default, verify-each alone) when neither flag is given. The named instruments are
    added to the default, never replace it: ``verify-each`` runs first unless the lists name it
    themselves (then it runs where they put it, not twice).
    """
    from ..pipeline import DumpIR, VerifyEach, instruments_from_names

    text = ",".join(i.strip().strip(",") for i in items if i.strip().strip(","))
    if not text and dump_dir is None:
        return None
    found = instruments_from_names(text) if text else []
    if not any(isinstance(i, VerifyEach) for i in found):
        found.insert(0, VerifyEach())
    if dump_dir is None:
        return found
    dumps = [i for i in found if isinstance(i, DumpIR)]
    if not dumps:
        found.append(DumpIR(dir=Path(dump_dir)))
    for d in dumps:
        if d.dir is None:
            d.dir = Path(dump_dir)
    return found


def repro_command(args: argparse.Namespace, shapes: Sequence[Sequence[int]], seed: int) -> str:
    """A command reproducing this compile with ``--pipeline '{pipeline}'`` for the failing prefix."""
    q = shlex.quote
    parts = ["xbc", "compile", q(args.model)]
    parts += [f"--input-shape {shape_text(s)}" for s in shapes]
    parts += ["--target", q(args.target)]
    if args.frontend != "auto":
        parts += ["--frontend", q(args.frontend)]
    parts += [f"--set {q(s)}" for s in args.overrides]
    parts += ["--pipeline", "'{pipeline}'"]
    parts += [f"--instrument {q(i)}" for i in args.instrument]
    if args.dump_ir:
        parts += ["--dump-ir", q(args.dump_ir)]
    if args.calibrate is not None:
        parts += ["--calibrate", q(args.calibrate)]
    if args.calibrate_random is not None:
        parts += ["--calibrate-random", q(args.calibrate_random)]
    parts += ["--seed", str(seed), "-o", q(args.output)]
    return " ".join(parts)
