"""Values from the ``xbc`` command line: integers, numbers, shapes, ``--set`` overrides."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..diagnostics import CompileError
from .usage_examples import examples_epilog

SHAPE_HINT = "write the shape as comma-separated positive integers, batch first, e.g. --input-shape 1,3,32,32"


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors end with the next step: ``(try xbc COMMAND --help)``."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message} (try {self.prog} --help)\n")


def command_parser(sub, common: argparse.ArgumentParser, name: str, run: Callable[[argparse.Namespace], int],
                   help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The sub-parser of one command: ``--debug`` from ``common``, ``args.command`` and ``args.func`` set, and
    its examples from :data:`.usage_examples.EXAMPLES` as the help's epilog (they replace an ``epilog`` given
    here: the examples live in one place)."""
    kwargs.pop("epilog", None)
    kwargs.pop("formatter_class", None)
    p = sub.add_parser(name, parents=[common], help=help, description=help.replace("%%", "%"),
                       epilog=examples_epilog(name), formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.set_defaults(command=name, func=run)
    return p


def add_set(p: argparse.ArgumentParser) -> None:
    """The repeatable ``--set KEY=VALUE`` target override (into ``args.overrides``)."""
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a target key, e.g. crossbar.rows=256 (repeatable)")


#: Largest integer a command-line flag takes (seeds included): what torch and numpy seed with.
MAX_INT = 2**63 - 1
#: Most tensor elements a command makes up or reads as inputs (1 GiB of float32); beyond it: XB006.
MAX_ELEMENTS = 1 << 28


def int_arg(text: str, flag: str, lo: int | None = None, hi: int = MAX_INT) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise CompileError("XB003", f"bad {flag} '{text}': expected an integer") from None
    if lo is not None and value < lo:
        raise CompileError("XB003", f"bad {flag} '{text}': must be at least {lo}")
    if value > hi:
        raise CompileError("XB003", f"bad {flag} '{text}': must be at most {hi}")
    return value


def check_elements(shape: Sequence[int], what: str) -> None:
    """XB006 when a tensor of ``shape`` would exceed :data:`MAX_ELEMENTS` elements."""
    n = math.prod(int(d) for d in shape)
    if n > MAX_ELEMENTS:
        raise CompileError("XB006", f"{what} of shape {list(shape)} would hold {n:,} elements, more than the "
                                    f"{MAX_ELEMENTS:,} a command may allocate", hint="use a smaller batch or shape")


def float_arg(text: str, flag: str) -> float:
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
        raise CompileError("XB003", f"bad --input-shape '{text}'", hint=SHAPE_HINT) from None
    if not body or any(d <= 0 for d in dims):
        raise CompileError("XB003", f"bad --input-shape '{text}': every size must be a positive integer",
                           hint=SHAPE_HINT)
    check_elements(dims, "--input-shape")
    return dims


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a dict (later ones win)."""
    from ..target import parse_override

    return dict(parse_override(item) for item in items)


def shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(d) for d in shape)
