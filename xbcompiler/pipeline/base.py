"""The pass base class, the per-run context, and option introspection.

A pass is a frozen dataclass whose fields are its options; each field is documented by the string
literal right under it. Class variables give the pass its kebab-case ``name``, its ``stage`` and its
contract (``needs``, ``establishes``, ``invalidates``), which the manager checks before running.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: IR kind a pass of each stage takes and returns.
STAGE_IO: dict[str, tuple[str, str]] = {
    "graph": ("graph", "graph"),
    "lower": ("graph", "xbar"),
    "xbar": ("xbar", "xbar"),
}


class Pass:
    """Base of every pass; subclasses are ``@dataclass(frozen=True)`` and implement ``run``."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset()
    establishes: ClassVar[frozenset[str]] = frozenset()
    invalidates: ClassVar[frozenset[str]] = frozenset()

    def run(self, ir: Any, ctx: PassContext) -> Any:
        """Transform ``ir`` and return the new IR (never mutate a crossbar program in place)."""
        raise NotImplementedError(f"pass '{self.name}' does not implement run()")

    def __str__(self) -> str:
        from xbcompiler.pipeline.text import format_pipeline

        return format_pipeline([self])


@dataclass
class PassContext:
    """Everything a pipeline run shares; created by the driver once per compile."""

    target: object | None = None
    """The target description (a ``TargetSpec``), or None for target-independent runs."""
    example_inputs: tuple = ()
    """Inputs the model was traced with."""
    check_inputs: tuple | None = None
    """Fixed inputs the numeric-check instrument runs every IR on."""
    seed: int = 0
    """Seed for every randomised decision (solvers, sampling)."""
    report: dict[str, Any] = field(default_factory=dict)
    """Per-pass results keyed by pass name, e.g. solver status, objective and gap."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per pass name (filled by the timing instrument)."""
    warnings: list[str] = field(default_factory=list)
    """Lossy or unusual decisions passes made, in order, for the report."""
    dump_dir: Path | None = None
    """Where the dump-ir instrument writes before/after files when it names no directory."""
    repro: str | None = None
    """Command template with a ``{pipeline}`` placeholder, added as a note to a failing pass's error."""
    verify_ir: Callable[[object], None] | None = None
    """Driver hook: raise a coded error if an IR is malformed."""
    run_ir: Callable[[object, tuple], object] | None = None
    """Driver hook: execute an IR on inputs and return its outputs (None: this IR cannot run)."""
    print_ir: Callable[[object], str] | None = None
    """Driver hook: the project's own stable text form of an IR."""
    properties: set[str] = field(default_factory=set)
    """Properties established so far; the pass manager maintains it."""
    calibration: list[tuple] | None = None
    """Calibration batches (tuples of input tensors) for post-training quantisation; None: stay float."""


@dataclass(frozen=True)
class PassOption:
    """One option of a pass: its field, command-line spelling, type, default and documentation."""

    name: str
    kebab: str
    type: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def pass_options(cls: type) -> list[PassOption]:
    """The options of a pass class (any dataclass works), in field order."""
    return list(_options(cls))


@functools.cache
def _options(cls: type) -> tuple[PassOption, ...]:
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError):  # unresolvable: keep raw annotations, the parser says so
        hints = {}
    docs = _field_docs(cls)
    options = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        options.append(PassOption(f.name, f.name.replace("_", "-"), hints.get(f.name, f.type),
                                  default, docs.get(f.name, "")))
    return tuple(options)


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings: a string literal right under an annotated assignment, base classes first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in itertools.pairwise(body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs
