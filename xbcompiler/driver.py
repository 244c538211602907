"""The compile driver: trace -> graph passes -> lower-to-xbar -> crossbar passes -> emit."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from .diagnostics import CompileError
from .emit import emit_netlist
from .frontend.capture import capture
from .frontend.coverage import CoverageRow, coverage
from .frontend.sanity import check_model_numbers, check_tensor_outputs
from .frontend.trace import check_inputs
from .gcpause import fewer_collections
from .ir.printer import print_ir
from .ir.program import XbarProgram
from .netlist import Netlist
from .pipeline import Instrument, PassContext, PassManager, VerifyEach, format_pipeline, resolve_pipeline
from .quant.calibrate import as_batches
from .quant.fragments import check_polarized
from .quant.pipeline import with_quantization
from .target import TargetSpec, load_target


@dataclass
class CompiledModel:
    """The result of :func:`compile`: the netlist, the crossbar program and what the passes reported."""

    netlist: Netlist
    program: XbarProgram
    target: TargetSpec
    pipeline: str
    coverage: list[CoverageRow]
    report: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        return self.netlist.summary

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/netlist.json`` and ``directory/weights.npz`` (atomically)."""
        return self.netlist.save(directory)

    def __call__(self, *inputs):
        from .emulator import emulate

        return emulate(self.netlist, inputs)


def _run_ir(ir, inputs):
    if isinstance(ir, fx.GraphModule):
        with torch.no_grad():
            return ir(*inputs)
    return None  # a crossbar program runs only once emitted; `verify` covers it end to end


def resolve_target(target, overrides=None) -> TargetSpec:
    if isinstance(target, TargetSpec):
        return target.with_overrides(overrides) if overrides else target
    return load_target(target, overrides)


@fewer_collections()
def compile(model: nn.Module, example_inputs, target, pipeline="default", *, overrides=None,
            instruments: list[Instrument] | None = None, seed: int = 0, repro: str | None = None,
            calibration=None, frontend: str = "auto") -> CompiledModel:
    """Compile ``model`` for ``target`` (a TargetSpec, built-in name or TOML path); never modifies the model.

    With ``calibration`` (a tensor, or an iterable of tensors or input tuples) the model is quantised
    with power-of-two scales (docs/quantization.md); without it the compile stays float. ``frontend``
    is ``auto`` (torch.export, falling back to symbolic tracing), ``export`` or ``fx``; the netlist's
    provenance records which ran.
    """
    tgt = resolve_target(target, overrides)
    inputs = check_inputs(example_inputs)
    check_model_numbers(model)
    captured = capture(model, inputs, frontend)
    gm = captured.gm
    check_tensor_outputs(gm)
    rows = coverage(gm)
    passes = resolve_pipeline(pipeline)
    batches = None if calibration is None else as_batches(calibration)
    if batches is not None:
        passes = with_quantization(passes)
    text = format_pipeline(passes)
    check = tuple(t[:1].clone() for t in inputs)
    # verify_ir stays at its default: the built-in verifier (fx lint, XbarProgram.verify against tgt)
    ctx = PassContext(target=tgt, example_inputs=inputs, check_inputs=check, seed=seed, repro=repro,
                      run_ir=_run_ir, print_ir=print_ir, properties={"traced", "shapes"}, calibration=batches)
    manager = PassManager(passes, [VerifyEach()] if instruments is None else instruments)
    program = manager.run(gm, ctx, stage="graph")
    if not isinstance(program, XbarProgram) or not program.placed:
        raise CompileError("XB603", f"pipeline '{text}' does not end with a placed crossbar program",
                           hint="a pipeline needs lower-to-xbar, a map-* pass and place-tiles")
    program = program.replace(provenance={"frontend": captured.provenance, **program.provenance})
    if tgt.encoding.signed == "polarized":  # FORMS: the cells hold magnitudes, one sign per fragment
        for name, m in program.matrices.items():
            check_polarized(name, np.asarray(m.weight), tgt.crossbar.fragment_rows)
    netlist = emit_netlist(program, tgt, text)
    return CompiledModel(netlist, program, tgt, text, rows, ctx.report, ctx.timings, ctx.warnings)
