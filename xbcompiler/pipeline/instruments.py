"""Instruments wrap every pass of a run: verify, check numbers, dump, time.

The manager calls every instrument's ``before`` in list order, then the pass, then every ``after`` in
reverse order, so instruments nest like context managers (put ``timing`` last to time only the pass).
Instruments are created per run; they may keep state between ``before`` and ``after``.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline.base import Pass, PassContext
from xbcompiler.pipeline.text import build, parse_items


class Instrument:
    """Hooks around each pass; both do nothing by default."""

    name: ClassVar[str] = ""

    def before(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        """Called with the IR a pass is about to transform; ``index`` counts from 0."""

    def after(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        """Called with the IR a pass returned."""


@dataclass
class VerifyEach(Instrument):
    """Run the context's verifier (``ctx.verify_ir``) on the IR every pass returns.

    A context whose ``verify_ir`` is None has switched verification off; asking it to verify each
    pass is then a contradiction, refused with XB606 before the first pass runs (an instrument that
    silently checked nothing would make every test that relies on it unable to fail).
    """

    name: ClassVar[str] = "verify-each"

    def before(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        self._verifier(ctx)

    def after(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        self._verifier(ctx)(ir)

    @staticmethod
    def _verifier(ctx: PassContext):
        if ctx.verify_ir is None:
            raise CompileError("XB606", "verify-each has nothing to verify with: the context sets verify_ir=None",
                               hint="leave PassContext.verify_ir at its default (the built-in verifier), "
                                    "pass your own, or run without verify-each")
        return ctx.verify_ir


@dataclass
class NumericCheck(Instrument):
    """Run the IR on ``ctx.check_inputs`` before and after each pass; XB201 if the outputs moved."""

    name: ClassVar[str] = "numeric-check"
    rtol: float = 1e-4
    """Allowed error relative to the largest reference output magnitude."""
    atol: float = 1e-5
    """Allowed absolute error on top of the relative one."""
    _last: tuple[Any, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def before(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        if self._last is None or self._last[0] is not ir:
            self._last = (ir, self._outputs(ir, ctx))

    def after(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        expected = self._last[1] if self._last else None
        actual = self._outputs(ir, ctx)
        self._last = (ir, actual)
        if expected is None or actual is None:
            return
        problems = compare_outputs(expected, actual, self.rtol, self.atol)
        if problems:
            raise CompileError("XB201", f"pass '{pass_.name}' changed the model's outputs "
                               f"beyond rtol={self.rtol:g}, atol={self.atol:g}", details=problems,
                               hint="a graph pass must preserve the function the model computes")

    @staticmethod
    def _outputs(ir: Any, ctx: PassContext) -> Any:
        """The IR's outputs, or None where there are no inputs or the driver cannot run this IR."""
        if ctx.run_ir is None or ctx.check_inputs is None:
            return None
        return ctx.run_ir(ir, ctx.check_inputs)


@dataclass
class DumpIR(Instrument):
    """Write ``NN-NAME-before.txt`` and ``NN-NAME-after.txt`` per pass with ``ctx.print_ir``."""

    name: ClassVar[str] = "dump-ir"
    dir: Path | None = None
    """Directory for the dumps; None uses ``ctx.dump_dir``."""

    def before(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        self._write(pass_, ir, ctx, index, "before")

    def after(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        self._write(pass_, ir, ctx, index, "after")

    def _write(self, pass_: Pass, ir: Any, ctx: PassContext, index: int, when: str) -> None:
        folder = self.dir or ctx.dump_dir
        if folder is None:
            raise CompileError("XB003", "dump-ir has no directory to write to",
                               hint="pass a dump directory, or dump-ir{dir=PATH}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = ctx.print_ir(ir) if ctx.print_ir is not None else str(ir)
        (folder / f"{index + 1:02d}-{pass_.name}-{when}.txt").write_text(text, encoding="utf-8")


@dataclass
class Timing(Instrument):
    """Add the seconds each pass takes to ``ctx.timings[pass name]``."""

    name: ClassVar[str] = "timing"
    _start: float = field(default=0.0, init=False, repr=False, compare=False)

    def before(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        self._start = time.perf_counter()

    def after(self, pass_: Pass, ir: Any, ctx: PassContext, index: int) -> None:
        ctx.timings[pass_.name] = ctx.timings.get(pass_.name, 0.0) + time.perf_counter() - self._start


INSTRUMENTS: dict[str, type[Instrument]] = {
    cls.name: cls for cls in (VerifyEach, NumericCheck, DumpIR, Timing)
}


def instruments_from_names(text: str) -> list[Instrument]:
    """Instruments from CLI text such as ``verify-each,numeric-check{rtol=1e-3},timing``."""
    found = []
    for item in parse_items(text):
        cls = INSTRUMENTS.get(item.name)
        if cls is None:
            close = difflib.get_close_matches(item.name, INSTRUMENTS, n=1)
            raise CompileError("XB003", f"unknown instrument '{item.name}'",
                               hint=f"did you mean '{close[0]}'?" if close else None,
                               details=[f"instruments: {', '.join(INSTRUMENTS)}"])
        found.append(build(cls, item, text, kind="instrument"))
    return found


def compare_outputs(expected: Any, actual: Any, rtol: float, atol: float) -> list[str]:
    """Differences between two nested output structures, one line each; empty when they agree."""
    exp, act = dict(_leaves(expected)), dict(_leaves(actual))
    if exp.keys() != act.keys():
        return [f"output structure changed: {sorted(exp)} -> {sorted(act)}"]
    return [p for path in exp if (p := _leaf_problem(path, exp[path], act[path], rtol, atol))]


def _leaves(x: Any, path: str = "out"):
    """(path, leaf) pairs of nested tuples, lists and dicts."""
    if isinstance(x, dict):
        for k in x:
            yield from _leaves(x[k], f"{path}[{k!r}]")
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def _leaf_problem(path: str, a: Any, b: Any, rtol: float, atol: float) -> str | None:
    """Why one output leaf differs, or None: max|a-b| must stay within atol + rtol * max|a|."""
    import torch

    numeric = (torch.Tensor, int, float)
    if not (isinstance(a, numeric) and isinstance(b, numeric)):
        return None if type(a) is type(b) and a == b else f"{path}: {a!r} -> {b!r}"
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        return f"{path}: shape {tuple(a.shape)} -> {tuple(b.shape)}"
    if a.numel() == 0:
        return None
    same = (a == b) | (a.isnan() & b.isnan())
    err = torch.where(same, 0.0, (a - b).abs()).nan_to_num(nan=float("inf")).max().item()
    scale = a.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max().item()
    if err <= atol + rtol * scale:
        return None
    rel = err / scale if scale else float("inf")
    return f"{path}: relative error {rel:.3g} (max |a-b| = {err:.3g}, max |a| = {scale:.3g})"
