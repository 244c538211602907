"""The ``xbc`` command line: compile, verify, emulate, targets, passes, demo (docs/cli.md).

Exit status:

- ``0`` success;
- ``1`` verification found a mismatch (``xbc verify``, ``xbc demo``);
- ``2`` bad input: a coded :class:`~xbcompiler.diagnostics.CompileError` (printed with its
  ``render()``, no traceback) or a command-line usage error reported by argparse;
- ``70`` internal error, i.e. a bug in xbcompiler (``EX_SOFTWARE``); rerun with ``--debug`` to see the
  traceback. ``130`` when interrupted.

Every command takes ``--debug`` (before or after the command name) to print tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import traceback
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .diagnostics import CompileError, Location, XBWarning
from .prune.command import cmd_prune, prune_arguments
from .report.command import cmd_report, report_arguments

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

DEMO_TARGET = "isaac-like"

_SHAPE_HINT = "write the shape as comma-separated positive integers, batch first, e.g. --input-shape 1,3,32,32"


# --------------------------------------------------------------------------------------------------
# entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xbc`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return _status(exc.code)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("xbc: error: a command is required (try xbc --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except CompileError as exc:
        if args.debug:
            traceback.print_exc()
        print(_render(exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("xbc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `xbc passes | head`: stop quietly, as the Python docs advise
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 -- anything else is a bug in xbcompiler
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (a bug in xbcompiler; rerun with --debug to see the traceback)"
        print(f"xbc: internal error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_INTERNAL


def _status(code: object) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_BAD_INPUT


def _render(exc: CompileError) -> str:
    """The error's own text plus the notes the pass manager added (failing pass, repro command)."""
    notes = [f"  note: {n}" for n in getattr(exc, "__notes__", ())]
    return "\n".join([exc.render(), *notes])


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


# --------------------------------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``xbc`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="xbc", description="Compile PyTorch models onto ReRAM crossbar accelerators and check the result.",
        epilog="exit status: 0 ok, 1 verification mismatch, 2 bad input, 70 internal error")
    parser.add_argument("--version", action="version", version=f"xbc (xbcompiler) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(command=None)
    # a sub-command's --debug sets the flag only when given, so `xbc --debug compile` works too
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(command=name, func=func)
        return p

    p = add("compile", cmd_compile, "compile a model to a crossbar netlist")
    p.add_argument("model", metavar="FILE.py:FACTORY", help="Python file and the function in it returning the model")
    p.add_argument("--input-shape", action="append", default=[], metavar="SHAPE",
                   help="shape of one example input, batch first (e.g. 1,3,32,32); repeat for several inputs; "
                        "default: the file's INPUT_SHAPE")
    p.add_argument("--target", required=True, metavar="NAME|PATH", help="built-in target name or .toml file")
    _add_set(p)
    p.add_argument("--pipeline", default="default", metavar="SPEC",
                   help="named pipeline or pass list, e.g. 'fold-batchnorm,lower-im2col,...' (default: default)")
    p.add_argument("--max-chips", metavar="N", help="fail (XB302) when the model needs more than N chips")
    p.add_argument("--coverage", action="store_true",
                   help="print where every node runs; without -o, print only that and compile nothing")
    p.add_argument("--instrument", action="append", default=[], metavar="LIST",
                   help="instruments around every pass, e.g. verify-each,numeric-check,timing "
                        "(default: verify-each)")
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR before and after every pass to DIR")
    p.add_argument("--seed", default="0", metavar="N", help="seed of the example inputs and the passes (default 0)")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for netlist.json and weights.npz")
    calibrate = p.add_mutually_exclusive_group()
    calibrate.add_argument("--calibrate", metavar="FILE.npy",
                           help="quantise with power-of-two scales, calibrated on these inputs (batch first)")
    calibrate.add_argument("--calibrate-random", metavar="N",
                           help="quantise with power-of-two scales, calibrated on N seeded random inputs")

    p = add("verify", cmd_verify, "check a compiled netlist against the model with the emulator")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--model", required=True, metavar="FILE.py:FACTORY", help="the reference model")
    p.add_argument("--seed", default="0", metavar="N", help="seed of the random inputs (default 0)")
    p.add_argument("--batch", default="2", metavar="N", help="batch size of the random inputs (default 2)")
    p.add_argument("--tolerance", default="1e-4", metavar="X",
                   help="largest relative error accepted, per layer and at the output (default 1e-4)")
    p.add_argument("--mode", default=None, help="emulator mode (default: integer for a quantised netlist, else "
                                                "ideal); an unknown mode is XB505")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = add("emulate", cmd_emulate, "run a compiled netlist on inputs")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="append", metavar="FILE.npy",
                        help="one input array (batch first); repeat for several inputs")
    source.add_argument("--random", metavar="N", help="run on N seeded random samples")
    p.add_argument("--seed", default="0", metavar="N", help="seed of --random (default 0)")
    p.add_argument("--mode", default=None, help="emulator mode (default: integer for a quantised netlist, else "
                                                "ideal); an unknown mode is XB505")
    p.add_argument("-o", "--output", metavar="OUT.npy", help="write the output here (.npz for several outputs)")

    p = add("targets", cmd_targets, "list built-in targets, or show one target in full")
    p.add_argument("target", nargs="?", metavar="NAME|PATH", help="show this target's every key")
    _add_set(p)

    add("passes", cmd_passes, "list registered passes, their options, named pipelines and instruments")

    p = add("demo", cmd_demo, "compile and verify the bundled demo CNN (offline)")
    p.add_argument("--target", default=DEMO_TARGET, metavar="NAME|PATH", help=f"default {DEMO_TARGET}")
    _add_set(p)
    p.add_argument("-o", "--output", metavar="DIR", help="keep the netlist here (default: a temporary directory)")

    p = add("report", cmd_report, "print the cost report of a compiled netlist; --plot writes PNG plots")
    report_arguments(p)

    p = add("prune", cmd_prune, "prune a classifier for the target's crossbars and write the pruned netlist")
    prune_arguments(p)
    _add_set(p)
    return parser


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a target key, e.g. crossbar.rows=256 (repeatable)")


# --------------------------------------------------------------------------------------------------
# values from the command line


def _int_arg(text: str, flag: str, lo: int | None = None) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise CompileError("XB003", f"bad {flag} '{text}': expected an integer") from None
    if lo is not None and value < lo:
        raise CompileError("XB003", f"bad {flag} '{text}': must be at least {lo}")
    return value


def _float_arg(text: str, flag: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise CompileError("XB003", f"bad {flag} '{text}': expected a number") from None
    if not math.isfinite(value) or value < 0:
        raise CompileError("XB003", f"bad {flag} '{text}': expected a finite number >= 0")
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,3,32,32`` (or ``(1, 3, 32, 32)``) as a tuple of positive ints; XB003 otherwise."""
    body = str(text).strip().removeprefix("(").removesuffix(")").strip().rstrip(",")
    try:
        dims = tuple(int(p.strip()) for p in body.split(","))
    except ValueError:
        raise CompileError("XB003", f"bad --input-shape '{text}'", hint=_SHAPE_HINT) from None
    if not body or any(d <= 0 for d in dims):
        raise CompileError("XB003", f"bad --input-shape '{text}': every size must be a positive integer",
                           hint=_SHAPE_HINT)
    return dims


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a dict (later ones win)."""
    from .target import parse_override

    return dict(parse_override(item) for item in items)


def _shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(d) for d in shape)


# --------------------------------------------------------------------------------------------------
# loading the user's model


def split_model_spec(spec: str) -> tuple[Path, str]:
    """``path/to/file.py:factory`` -> (path, factory name); XB003 without the colon."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name.strip():
        raise CompileError("XB003", f"bad model '{spec}': expected FILE.py:FACTORY",
                           hint="name the Python file and the function in it that returns the model, "
                                "e.g. models.py:make_model")
    return Path(path), name.strip()


def load_module(path: Path) -> types.ModuleType:
    """Execute a Python file as a fresh module (never from a stale bytecode cache); XB001 / XB002."""
    if not path.is_file():
        what = "is a directory, not a Python file" if path.is_dir() else "not found"
        raise CompileError("XB001", f"model file {path} {what}", location=Location(file=str(path)))
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_xbc_model_{path.stem.replace('-', '_')}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = str(path.resolve())
    folder = str(path.resolve().parent)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        source = path.read_bytes()
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 -- the user's own model file
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise CompileError("XB002", f"importing {path} failed: {type(exc).__name__}: {_one_line(exc)}",
                           location=Location(file=str(path)),
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def load_model(spec: str) -> tuple[Any, types.ModuleType]:
    """Import ``FILE.py`` and call ``FACTORY()``; returns (model, module). XB001, XB002, XB003."""
    from torch import nn

    path, factory_name = split_model_spec(spec)
    module = load_module(path)
    where = Location(file=str(path))
    obj: Any = module
    for part in factory_name.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            close = difflib.get_close_matches(factory_name, names, n=1)
            raise CompileError("XB002", f"{path} has no factory '{factory_name}'", location=where,
                               hint=f"did you mean '{close[0]}'?" if close else None,
                               details=[f"callables in the file: {', '.join(sorted(names)) or '(none)'}"])
        obj = getattr(obj, part)
    if not callable(obj):
        raise CompileError("XB002", f"'{factory_name}' in {path} is not callable ({type(obj).__name__})",
                           location=where)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        model = obj()
    except (Exception, SystemExit) as exc:
        raise CompileError("XB002", f"factory {path}:{factory_name}() raised {type(exc).__name__}: "
                                    f"{_one_line(exc)}", location=where,
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not isinstance(model, nn.Module):
        raise CompileError("XB002", f"factory {path}:{factory_name}() returned {type(model).__name__}, "
                                    "not a torch.nn.Module", location=where)
    return model, module


def _module_shapes(module: types.ModuleType, spec: str) -> list[tuple[int, ...]]:
    """The model file's ``INPUT_SHAPE`` (one shape or a list of shapes) when --input-shape is absent."""
    value = getattr(module, "INPUT_SHAPE", None)
    if value is None:
        raise CompileError("XB003", "compile needs --input-shape",
                           hint=f"{_SHAPE_HINT}; or define INPUT_SHAPE in {split_model_spec(spec)[0]}")
    try:
        shapes = [value] if all(isinstance(d, int) for d in value) else list(value)
        return [parse_shape(s if isinstance(s, str) else _shape_text(s)) for s in shapes]
    except TypeError:
        raise CompileError("XB003", f"bad INPUT_SHAPE {value!r} in {split_model_spec(spec)[0]}",
                           hint="a tuple of ints, or a list of such tuples for several inputs") from None


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> tuple:
    """Seeded ``torch.randn`` tensors of ``shapes`` (one generator, in order)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tuple(s), generator=gen) for s in shapes)


# --------------------------------------------------------------------------------------------------
# console helpers


def _console(stderr: bool = False):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would raise SystemExit(1), which reads as "mismatch"
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    # piped output is not cut to 80 columns; colours only on a terminal
    return _Console(file=stream, width=None if tty else 200, highlight=False, soft_wrap=False,
                    no_color=not tty, emoji=False)


def _status_spinner(message: str):
    """A rich spinner on stderr while work runs, only when stderr is a terminal."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return contextlib.nullcontext()
    return _console(stderr=True).status(message)


def _table(title: str | None, columns: Sequence[str], right: Sequence[str] = ()):
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left", overflow="fold")
    return table


def _row(table, *cells: object) -> None:
    from rich.text import Text

    table.add_row(*(Text(_fmt(c)) for c in cells))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _say(console, text: str, style: str | None = None) -> None:
    from rich.text import Text

    console.print(Text(text, style=style or ""))


@contextlib.contextmanager
def _xb_warnings() -> Iterator[list[str]]:
    """Collect the compiler's coded warnings for the report; other warnings are shown as usual."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", XBWarning)
        try:
            yield found
        finally:
            for w in caught:
                if issubclass(w.category, XBWarning):
                    found.append(str(w.message))
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _merge_warnings(coded: Sequence[str], plain: Sequence[str]) -> list[str]:
    """Coded warnings, then the driver's warnings that no coded one already says."""
    out = list(dict.fromkeys(coded))
    out += [w for w in dict.fromkeys(plain) if not any(w in c for c in out)]
    return out


# --------------------------------------------------------------------------------------------------
# printing reports


def print_summary(console, netlist, warning_lines: Sequence[str] = ()) -> None:
    """The per-layer table, totals and warnings of a netlist."""
    doc = netlist.doc
    target = doc.get("target", {}).get("name", "?")
    table = _table(f"{len(netlist.layers)} crossbar layers for target {target}",
                   ["layer", "kind", "strategy", "K", "N", "groups", "crossbars", "cycles"],
                   right=["K", "N", "groups", "crossbars", "cycles"])
    for layer in netlist.layers:
        _row(table, layer["name"], layer["kind"], layer["strategy"], layer["matrix_rows"], layer["matrix_cols"],
             layer["groups"], layer["crossbars"], layer["cycles"])
    console.print(table)
    s = netlist.summary
    _say(console, f"pipeline: {doc.get('pipeline', '?')}")
    totals = [f"crossbars {s['crossbars']}", f"tiles {s['tiles']}", f"chips {s['chips']}",
              f"host_ops {s['host_ops']}"]
    if "weights" in s:
        totals.append(f"weights {s['weights']}")
    if "cell_utilisation" in s:
        totals.append(f"cell utilisation {100 * s['cell_utilisation']:.1f}%")
    _say(console, "totals: " + ", ".join(totals))
    for w in warning_lines:
        _say(console, f"warning: {w}", "yellow")


def print_coverage(console, rows) -> None:
    """Every node of the traced model: where it runs and why."""
    table = _table(f"coverage: {len(rows)} nodes", ["node", "op", "placement", "why"])
    for r in rows:
        _row(table, r.node, r.op, _PLACEMENT.get(r.placement, r.placement), r.why)
    console.print(table)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.placement] = counts.get(r.placement, 0) + 1
    _say(console, "coverage: " + ", ".join(f"{_PLACEMENT.get(k, k)} {v}" for k, v in counts.items()))


_PLACEMENT = {"crossbar": "on crossbar", "host": "on host", "folded": "folded", "removed": "removed"}


def print_verify(console, report) -> None:
    """The per-layer error table and the output error of a :class:`VerifyReport`."""
    table = _table(f"verify ({report.mode} mode, tolerance {report.tolerance:g})",
                   ["layer", "reference", "max abs", "rel", "ok", "first mismatch"],
                   right=["max abs", "rel"])
    for c in report.layers:
        _row(table, c.name, c.reference, c.max_abs, c.rel, c.ok, c.first_mismatch)
    console.print(table)
    _say(console, f"output: max abs error {report.output_max_abs:.3g}, relative error {report.output_rel:.3g}")
    if report.float_rel is not None:
        mismatches = sum(c.mismatches for c in report.layers)
        _say(console, f"integer outputs differing from the integer reference: {mismatches}; end-to-end relative "
                      f"error against the float model: {report.float_rel:.3g} (reported, not checked)")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# xbc compile


def cmd_compile(args: argparse.Namespace) -> int:
    from . import compile as xb_compile
    from .frontend.coverage import coverage
    from .frontend.trace import check_inputs, trace
    from .target import load_target

    # cheap checks first, so a typo costs no model import
    seed = _int_arg(args.seed, "--seed", 0)
    shapes = [parse_shape(s) for s in args.input_shape]
    max_chips = None if args.max_chips is None else _int_arg(args.max_chips, "--max-chips", 1)
    if args.output is None and not args.coverage:
        raise CompileError("XB003", "compile needs -o DIR",
                           hint="pass -o DIR for the netlist, or --coverage to only print operator coverage")
    out = Path(args.output) if args.output is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise CompileError("XB004", f"output {out} exists and is not a directory", location=Location(file=str(out)))
    overrides = parse_overrides(args.overrides)
    target = load_target(args.target, overrides)
    instruments = _instruments(args.instrument, args.dump_ir)
    passes = _pipeline(args.pipeline, max_chips) if out is not None else None

    model, module = load_model(args.model)
    shapes = shapes or _module_shapes(module, args.model)
    inputs = random_inputs(shapes, seed)
    stdout = _console()

    if out is None:  # --coverage only: trace and classify, nothing compiled or written
        with _status_spinner("tracing the model..."), _xb_warnings() as found:
            rows = coverage(trace(model, check_inputs(inputs)))
        print_coverage(stdout, rows)
        for w in found:
            _say(stdout, f"warning: {w}", "yellow")
        return EXIT_OK

    repro = _repro(args, shapes, seed)
    with _status_spinner(f"compiling for {target.name}..."), _xb_warnings() as found:
        cm = xb_compile(model, inputs, target, passes, overrides=None, instruments=instruments, seed=seed,
                        repro=repro, calibration=_calibration(args, shapes, seed))
    save_atomically(cm, out)  # compiled fully in memory first: an error above leaves nothing in DIR
    if args.coverage:
        print_coverage(stdout, cm.coverage)
    print_summary(stdout, cm.netlist, _merge_warnings(found, cm.warnings))
    if cm.timings:
        _say(stdout, "timings: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in cm.timings.items()))
    _say(stdout, f"wrote {out / 'netlist.json'} and {out / 'weights.npz'}")
    return EXIT_OK


def _calibration(args: argparse.Namespace, shapes: Sequence[Sequence[int]], seed: int):
    """``--calibrate FILE.npy`` (one input) or ``--calibrate-random N`` as calibration inputs; None without."""
    if args.calibrate is not None:
        return _load_npy(Path(args.calibrate), None)
    if args.calibrate_random is not None:
        n = _int_arg(args.calibrate_random, "--calibrate-random", 1)
        return random_inputs([(n, *s[1:]) for s in shapes], seed + 1)
    return None


def _pipeline(spec: str, max_chips: int | None) -> list:
    """The resolved pass list; ``--max-chips`` rewrites the ``place-tiles`` pass's option."""
    from .pipeline import resolve_pipeline

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


def _instruments(items: Sequence[str], dump_dir: str | None) -> list | None:
    """``--instrument`` lists (joined) and ``--dump-ir``; None keeps the driver's default (verify-each)."""
    from .pipeline import DumpIR, VerifyEach, instruments_from_names

    text = ",".join(i.strip().strip(",") for i in items if i.strip().strip(","))
    found = instruments_from_names(text) if text else None
    if dump_dir is None:
        return found
    found = [VerifyEach()] if found is None else found
    dumps = [i for i in found if isinstance(i, DumpIR)]
    if not dumps:
        found.append(DumpIR(dir=Path(dump_dir)))
    for d in dumps:
        if d.dir is None:
            d.dir = Path(dump_dir)
    return found


def _repro(args: argparse.Namespace, shapes: Sequence[Sequence[int]], seed: int) -> str:
    """A command reproducing this compile with ``--pipeline '{pipeline}'`` for the failing prefix."""
    q = shlex.quote
    parts = ["xbc", "compile", q(args.model)]
    parts += [f"--input-shape {_shape_text(s)}" for s in shapes]
    parts += ["--target", q(args.target)]
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


def save_atomically(compiled, out: Path) -> Path:
    """Save into a temporary sibling directory, then move it into place.

    A new ``out`` appears whole (one rename); in an existing directory the two files are replaced one
    by one. On failure the temporary directory, and ``out`` and any parents this call created, go away.
    """
    from .emit.netlist import NETLIST_FILE, WEIGHTS_FILE

    out = Path(out)
    existed = out.exists()
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    tmp: Path | None = None

    def undo() -> None:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not existed and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        for p in created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        compiled.save(tmp)
        if existed:
            for name in (WEIGHTS_FILE, NETLIST_FILE):  # the netlist last: it names the weights' sha256
                os.replace(tmp / name, out / name)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except OSError as exc:
        undo()
        raise CompileError("XB004", f"cannot write the netlist to {out}: {exc.strerror or exc}",
                           location=Location(file=str(out))) from None
    except BaseException:
        undo()
        raise
    return out


# --------------------------------------------------------------------------------------------------
# xbc verify


def cmd_verify(args: argparse.Namespace) -> int:
    from .emit.netlist import load_netlist
    from .emulator.verify import verify

    seed = _int_arg(args.seed, "--seed", 0)
    batch = _int_arg(args.batch, "--batch", 1)
    tolerance = _float_arg(args.tolerance, "--tolerance")
    netlist = load_netlist(args.netlist)
    model, _ = load_model(args.model)
    with _status_spinner("verifying..."):
        report = _run_verify(verify, netlist, model, args.model, mode=args.mode, tolerance=tolerance, seed=seed,
                             batch=batch)
    stdout = _console()
    if args.json:
        print(json.dumps(_json_safe(report.to_dict()), indent=2))
    else:
        print_verify(stdout, report)
        _verdict(stdout, report)
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _run_verify(verify, netlist, model, spec: str, **kwargs):
    """``verify``; a model whose graph does not fit the netlist's layers is XB506, not a crash."""
    try:
        return verify(netlist, model, **kwargs)
    except KeyError as exc:
        raise CompileError("XB506", f"the model {spec} does not match the netlist: it has no node {exc}",
                           hint="verify against the model the netlist was compiled from") from exc
    except (RuntimeError, ValueError, IndexError) as exc:
        raise CompileError("XB506", f"the model {spec} does not match the netlist: {type(exc).__name__}: "
                                    f"{_one_line(exc)}",
                           hint="verify against the model the netlist was compiled from (if it is that model, "
                                "rerun with --debug and report a bug)") from exc


def _verdict(console, report) -> None:
    if report.ok:
        _say(console, f"verified: max relative error {report.max_rel:.3g}", "green")
        return
    bad = report.first_mismatch
    where = f"first mismatching layer {bad.name}" if bad else "the outputs differ"
    if bad is not None and bad.first_mismatch:
        where += f" (crossbar {bad.first_mismatch})"
    _say(console, f"MISMATCH: {where}; max relative error {report.max_rel:.3g} > tolerance "
                  f"{report.tolerance:g}", "bold red")


# --------------------------------------------------------------------------------------------------
# xbc emulate


def cmd_emulate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .emit.netlist import load_netlist
    from .emulator import emulate

    seed = _int_arg(args.seed, "--seed", 0)
    n = None if args.random is None else _int_arg(args.random, "--random", 1)
    if args.output is not None and Path(args.output).suffix not in (".npy", ".npz"):
        raise CompileError("XB003", f"bad -o '{args.output}': expected a .npy (or .npz) file name")
    netlist = load_netlist(args.netlist)
    specs = netlist.doc["inputs"]
    if n is not None:
        inputs = random_inputs([(n, *s["shape"]) for s in specs], seed)
    else:
        inputs = tuple(_load_npy(Path(p), specs[i] if i < len(specs) else None) for i, p in enumerate(args.input))
    with torch.no_grad():
        result = emulate(netlist, inputs, mode=args.mode)
    outputs = [t.detach().cpu().numpy() for t in _leaves(result)]
    stdout = _console()
    for i, arr in enumerate(outputs):
        flat = arr.reshape(-1)[:8]
        more = " ..." if arr.size > 8 else ""
        label = "output" if len(outputs) == 1 else f"output {i}"
        _say(stdout, f"{label}: shape {list(arr.shape)} {arr.dtype}; first values "
                     f"{np.array2string(flat, precision=5, separator=', ', max_line_width=10_000)}{more}")
    if args.output is not None:
        _write_outputs(Path(args.output), outputs)
        _say(stdout, f"wrote {args.output}")
    return EXIT_OK


def _load_npy(path: Path, spec: dict | None):
    import numpy as np
    import torch

    if not path.is_file():
        raise CompileError("XB001", f"input file {path} not found", location=Location(file=str(path)))
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CompileError("XB505", f"cannot read {path} as a .npy array: {_one_line(exc)}",
                           location=Location(file=str(path))) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise CompileError("XB505", f"{path} does not hold a numeric array", location=Location(file=str(path)))
    if spec is not None and list(arr.shape) == list(spec["shape"]):
        arr = arr[None]  # one sample without its batch dimension
    dtype = getattr(torch, spec["dtype"], torch.float32) if spec is not None else torch.float32
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)


def _leaves(value) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _leaves(value[k])]
    return []


def _write_outputs(path: Path, outputs: list) -> None:
    import numpy as np

    if path.suffix == ".npy" and len(outputs) != 1:
        raise CompileError("XB003", f"the model has {len(outputs)} outputs; write them with -o OUT.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            if path.suffix == ".npy":
                np.save(fh, outputs[0], allow_pickle=False)
            else:
                np.savez(fh, **{f"output{i}": a for i, a in enumerate(outputs)})
        os.replace(tmp, path)
    except OSError as exc:
        raise CompileError("XB004", f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------------
# xbc targets


def cmd_targets(args: argparse.Namespace) -> int:
    from .target import KEYS, list_targets, load_target

    stdout = _console()
    overrides = parse_overrides(args.overrides)
    if args.target is None:
        if overrides:
            raise CompileError("XB003", "--set needs a target: xbc targets NAME --set KEY=VALUE")
        table = _table("built-in targets", ["name", "array", "cell bits", "weight/input bits", "DAC/ADC bits",
                                            "encoding", "tiles x crossbars"])
        for name in list_targets():
            t = load_target(name)
            enc = t.encoding.signed + (", flip" if t.encoding.flip_columns else "")
            _row(table, name, f"{t.crossbar.rows}x{t.crossbar.cols}", t.crossbar.cell_bits,
                 f"{t.precision.weight_bits}/{t.precision.input_bits}",
                 f"{t.precision.dac_bits}/{t.precision.adc_bits}", enc,
                 f"{t.hierarchy.tiles}x{t.hierarchy.crossbars_per_tile}")
        stdout.print(table)
        return EXIT_OK
    t = load_target(args.target, overrides)
    table = _table(f"target {t.name} ({t.source})", ["key", "value", "meaning"])
    for key, doc in KEYS.items():
        value = t.get(key)
        _row(table, key, json.dumps(value) if isinstance(value, str) else _toml_value(value), doc)
    stdout.print(table)
    derived = _table("derived", ["quantity", "value"])
    for label, value in [("m_c (physical columns per weight)", t.m_c),
                         ("logical columns per crossbar", t.logical_cols),
                         ("weight slices", t.weight_slices), ("input cycles", t.input_cycles),
                         ("crossbars per chip", t.crossbars_per_chip),
                         ("lossless ADC bits at full rows", t.lossless_adc_bits(t.crossbar.rows)),
                         ("fingerprint", t.fingerprint())]:
        _row(derived, label, value)
    stdout.print(derived)
    return EXIT_OK


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------------
# xbc passes


def cmd_passes(args: argparse.Namespace) -> int:
    from .pipeline import (
        INSTRUMENTS,
        NAMED_PIPELINES,
        STAGE_IO,
        load_failures,
        pass_options,
        registered_passes,
    )
    from .pipeline.text import format_value, type_name

    stdout = _console()
    order = {s: i for i, s in enumerate(STAGE_IO)}
    passes = sorted(registered_passes().items(), key=lambda kv: (order.get(kv[1].stage, 99), kv[0]))
    table = _table(f"{len(passes)} registered passes", ["pass", "stage", "needs", "establishes", "invalidates",
                                                         "description"])
    for name, cls in passes:
        _row(table, name, cls.stage, _set_text(cls.needs), _set_text(cls.establishes), _set_text(cls.invalidates),
             _first_line(cls.__doc__))
    stdout.print(table)
    options = _table("pass options", ["pass", "option", "type", "default", "description"])
    for name, cls in passes:
        for o in pass_options(cls):
            default = "(required)" if o.required else format_value(o.default)
            _row(options, name, o.kebab, type_name(o.type), default, _first_line(o.doc))
    stdout.print(options)
    named = _table("named pipelines", ["pipeline", "passes"])
    for name, steps in NAMED_PIPELINES.items():
        _row(named, name, ",".join(steps))
    stdout.print(named)
    inst = _table("instruments (--instrument)", ["instrument", "options", "description"])
    for name, cls in INSTRUMENTS.items():
        opts = ", ".join(f"{o.kebab}={format_value(o.default)}" for o in pass_options(cls) if not o.required)
        _row(inst, name, opts or "-", _first_line(cls.__doc__))
    stdout.print(inst)
    for name, why in load_failures().items():
        _say(stdout, f"warning: pass '{name}' not loaded: {why}", "yellow")
    return EXIT_OK


def _set_text(values) -> str:
    return ", ".join(sorted(values)) or "-"


def _first_line(doc: str | None) -> str:
    """The first line of a docstring, without reStructuredText roles and double backquotes."""
    lines = [ln.strip() for ln in (doc or "").strip().splitlines()]
    text = lines[0] if lines else ""
    return re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text).replace("``", "")


# --------------------------------------------------------------------------------------------------
# xbc demo


def cmd_demo(args: argparse.Namespace) -> int:
    from . import compile as xb_compile
    from .demo import INPUT_SHAPE, make_model
    from .emit.netlist import load_netlist
    from .emulator.verify import verify
    from .target import load_target

    target = load_target(args.target, parse_overrides(args.overrides))
    model = make_model(seed=0)
    stdout = _console()
    with _status_spinner(f"compiling the demo model for {target.name}..."), _xb_warnings() as found:
        cm = xb_compile(model, random_inputs([INPUT_SHAPE], 0), target)
    with contextlib.ExitStack() as stack:
        if args.output is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xbc-demo-"))) / "netlist"
        else:
            folder = Path(args.output)
        save_atomically(cm, folder)
        with _status_spinner("verifying with the emulator..."):
            netlist = load_netlist(folder)  # the full path: saved files, read back and checked
            report = verify(netlist, model, mode="ideal", seed=0)
    _say(stdout, f"demo: xbcompiler.demo.DemoNet, input {list(INPUT_SHAPE)}, target {target.name}")
    print_summary(stdout, netlist, _merge_warnings(found, cm.warnings))
    if args.output is not None:
        _say(stdout, f"wrote {folder / 'netlist.json'} and {folder / 'weights.npz'}")
    if not report.ok:
        print_verify(stdout, report)
    _verdict(stdout, report)
    return EXIT_OK if report.ok else EXIT_MISMATCH


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
