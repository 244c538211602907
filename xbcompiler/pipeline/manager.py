"""The one pass manager: checks a pipeline's contracts up front, then runs it under instruments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline.base import STAGE_IO, Pass, PassContext
from xbcompiler.pipeline.instruments import Instrument
from xbcompiler.pipeline.named import resolve_pipeline
from xbcompiler.pipeline.registry import registered_passes
from xbcompiler.pipeline.text import format_pipeline

_STAGE_HINT = {
    "graph": "graph and lowering passes go before the lowering pass ('lower-to-xbar')",
    "xbar": "crossbar passes go after a lowering pass such as 'lower-to-xbar'",
}


class PassManager:
    """Runs a list of passes (or a pipeline name or text) with instruments around each pass."""

    def __init__(self, passes: str | Sequence[Pass], instruments: Sequence[Instrument] = ()):
        self.passes: list[Pass] = resolve_pipeline(passes)
        self.instruments: list[Instrument] = list(instruments)

    @property
    def text(self) -> str:
        """The pipeline in textual form."""
        return format_pipeline(self.passes)

    def check(self, initial_properties: Iterable[str] = (), initial_stage: str = "graph") -> set[str]:
        """Walk the pipeline without running it; XB603 on a missing property or a wrong IR stage.

        Returns the properties established at the end.
        """
        props, ir_kind = set(initial_properties), initial_stage
        dropped: dict[str, str] = {}
        for i, p in enumerate(self.passes):
            where = f"pass '{p.name}' (step {i + 1} of {len(self.passes)})"
            takes, gives = STAGE_IO[p.stage]
            if ir_kind != takes:
                raise CompileError("XB603", f"{where} is a {p.stage} pass and needs {takes} IR, "
                                   f"but the IR is {ir_kind} at that point", hint=_STAGE_HINT[takes])
            missing = sorted(p.needs - props)
            if missing:
                raise CompileError("XB603", f"{where} needs {', '.join(map(repr, missing))}, "
                                   "which no earlier pass establishes",
                                   details=[self._provider(m, i, dropped) for m in missing])
            for prop in p.invalidates:
                dropped[prop] = f"step {i + 1} ('{p.name}')"
            props = (props - p.invalidates) | p.establishes
            ir_kind = gives
        return props

    def run(self, ir: Any, ctx: PassContext, stage: str = "graph") -> Any:
        """Check the contracts against ``ctx.properties``, then run every pass; returns the new IR."""
        self.check(ctx.properties, stage)
        for i, p in enumerate(self.passes):
            try:
                for inst in self.instruments:
                    inst.before(p, ir, ctx, i)
                new = p.run(ir, ctx)
                if new is None:
                    raise TypeError(f"pass '{p.name}' returned None; run() must return the new IR")
                for inst in reversed(self.instruments):
                    inst.after(p, new, ctx, i)
            except Exception as exc:
                self._annotate(exc, i, ctx)
                raise
            ir = new
            ctx.properties = (ctx.properties - p.invalidates) | p.establishes
        return ir

    def _annotate(self, exc: Exception, i: int, ctx: PassContext) -> None:
        """Add which pass failed, where, and how to reproduce, keeping the exception as it is."""
        p = self.passes[i]
        exc.add_note(f"in pass '{p.name}' (step {i + 1} of {len(self.passes)} of pipeline '{self.text}')")
        if ctx.repro:
            exc.add_note("reproduce: " + ctx.repro.replace("{pipeline}", format_pipeline(self.passes[: i + 1])))

    def _provider(self, prop: str, i: int, dropped: dict[str, str]) -> str:
        """Who establishes ``prop``: later steps of this pipeline, else registered passes."""
        later = [f"'{q.name}' (step {j + 1})" for j, q in enumerate(self.passes)
                 if j > i and prop in q.establishes]
        known = sorted(n for n, cls in registered_passes().items() if prop in cls.establishes)
        parts = [f"invalidated by {dropped[prop]}"] if prop in dropped else []
        if later:
            parts.append(f"established by {', '.join(later)}: move it earlier")
        elif known:
            parts.append(f"established by {', '.join(map(repr, known))}: add one before it")
        else:
            parts.append("no registered pass establishes it")
        return f"'{prop}': " + "; ".join(parts)
