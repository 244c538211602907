"""The pass base class and the per-run context.

A pass is a frozen dataclass whose fields are its options; each field is documented by the string
literal right under it (:mod:`.options` reads them). Class variables give the pass its kebab-case
``name``, its ``stage`` and its contract (``needs``, ``establishes``, ``invalidates``), which the
manager checks before running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xbcompiler.pipeline.options import PassOption, pass_options
from xbcompiler.pipeline.text import format_pipeline
from xbcompiler.pipeline.verify import verify_ir as builtin_verify_ir

__all__ = ["STAGE_IO", "Pass", "PassContext", "PassOption", "pass_options"]

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
        return format_pipeline([self])


BUILTIN: Any = object()
"""Default of ``PassContext.verify_ir``: replaced by the context's :meth:`~PassContext.verify_against_target`."""


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
    verify_ir: Callable[[object], None] | None = field(default=BUILTIN, repr=False)
    """Hook: raise a coded error if an IR is malformed; the verify-each instrument calls it after every pass.

    The default is :meth:`verify_against_target` (fx graphs are linted, crossbar programs checked with
    ``XbarProgram.verify(target)``), so verification is on unless a context opts out: None switches
    it off, and verify-each then refuses to run (XB606) rather than check nothing."""
    run_ir: Callable[[object, tuple], object] | None = None
    """Driver hook: execute an IR on inputs and return its outputs (None: this IR cannot run)."""
    print_ir: Callable[[object], str] | None = None
    """Driver hook: the project's own stable text form of an IR."""
    properties: set[str] = field(default_factory=set)
    """Properties established so far; the pass manager maintains it."""
    calibration: list[tuple] | None = None
    """Calibration batches (tuples of input tensors) for post-training quantisation; None: stay float."""

    def __post_init__(self) -> None:
        hook = self.verify_ir
        if hook is BUILTIN or (getattr(hook, "__func__", None) is PassContext.verify_against_target
                               and hook.__self__ is not self):  # dataclasses.replace: verify the copy's target
            self.verify_ir = self.verify_against_target

    def verify_against_target(self, ir: object) -> None:
        """The default ``verify_ir``: the built-in verifier against this context's current ``target``."""
        builtin_verify_ir(ir, self.target)
