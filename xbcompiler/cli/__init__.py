"""The ``xbc`` command line (docs/cli.md): one module per command, registered by :func:`build_parser`.

Commands: compile, verify, emulate, targets, passes, demo, report, prune, polarize, inspect, sweep
(and sweep-report). Each command module
has ``add(sub, common)``, which registers its sub-parser, and ``run(args) -> int``; the shared helpers
live in :mod:`.args` (command-line values), :mod:`.models` (loading the user's model and arrays),
:mod:`.console` (exit statuses, error rendering, tables) and :mod:`.files` (atomic output).

Exit status:

- ``0`` success;
- ``1`` verification found a mismatch (``xbc verify``, ``xbc demo``, ``xbc prune``);
- ``2`` bad input: a coded :class:`~xbcompiler.diagnostics.CompileError` (printed with its
  ``render()``, no traceback) or a command-line usage error reported by argparse;
- ``70`` internal error, i.e. a bug in xbcompiler (``EX_SOFTWARE``); rerun with ``--debug`` to see the
  traceback. ``130`` when interrupted.

Every command takes ``--debug`` (before or after the command name) to print tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..diagnostics import CompileError
from . import compile, demo, emulate, export, inspect, passes, polarize, prune, report, sweep, targets, verify
from .args import Parser, parse_overrides, parse_shape
from .console import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    one_line,
    print_coverage,
    print_summary,
    print_verify,
    render,
)
from .demo import DEMO_TARGET
from .files import save_atomically
from .models import load_model, load_module, random_inputs, split_model_spec
from .usage_examples import OVERVIEW

#: The command modules, in the order ``xbc --help`` lists them.
COMMANDS = (compile, verify, emulate, targets, passes, demo, report, export, prune, polarize, inspect, sweep)

__all__ = [
    "COMMANDS", "DEMO_TARGET", "EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_MISMATCH", "EXIT_OK",
    "build_parser", "load_model", "load_module", "main", "parse_overrides", "parse_shape", "print_coverage",
    "print_summary", "print_verify", "random_inputs", "save_atomically", "split_model_spec",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xbc`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return _status(exc.code)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("xbc: error: a command is required (try xbc --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    previous = _sigterm_as_interrupt()
    try:
        return args.func(args)
    except CompileError as exc:
        if args.debug:
            traceback.print_exc()
        print(render(exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"xbc: {args.command} interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `xbc passes | head`: stop quietly, as the Python docs advise
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 -- anything else is a bug in xbcompiler
        if isinstance(exc, RecursionError) or out_of_memory(exc):  # exhausted by the input: a coded error
            print(render(too_large(exc)), file=sys.stderr)
            return EXIT_BAD_INPUT
        return _internal(exc, args.debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """SIGTERM handled like Ctrl-C (exit 130, temporary files removed); the previous handler, or None
    off the main thread (where signal handlers cannot be set)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


def attach_negative_values(argv: list[str]) -> list[str]:
    """``--flag -1,8`` as ``--flag=-1,8``: argparse takes a value starting with a dash for a flag, and the
    user would get "expected one argument" instead of the coded error that names the bad value."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-[\d(][\d,.()\s-]*", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    hint = "" if debug else " (a bug in xbcompiler; rerun with --debug to see the traceback)"
    print(f"xbc: internal error: {type(exc).__name__}: {one_line(exc)}{hint}", file=sys.stderr)
    return EXIT_INTERNAL


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's refusal (MemoryError; torch raises a RuntimeError for it)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()))


def too_large(exc: BaseException) -> CompileError:
    """XB006 for memory or recursion exhausted by what the user asked for."""
    what = "nesting too deep" if isinstance(exc, RecursionError) else "not enough memory"
    return CompileError("XB006", f"{what} for this input: {one_line(exc)[:200]}",
                        hint="use a smaller batch, shape or file; a deeply nested file is not a valid input")


def _status(code: object) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``xbc`` and its sub-commands (one per module of :data:`COMMANDS`)."""
    parser = Parser(
        prog="xbc", description="Compile PyTorch models onto ReRAM crossbar accelerators and check the result.",
        epilog=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xbc (xbcompiler) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(command=None)
    # a sub-command's --debug sets the flag only when given, so `xbc --debug compile` works too
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub, common)
    return parser
