"""``calibrate-adc``: ADC steps and bias compensation from calibration data (``adc.mode = "calibrated"``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.interpret import float_layer, run_program
from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.quant.periphery import IntegerRun, compensation, encoding_of


@dataclass(frozen=True)
class CalibrateAdcPass(Pass):
    """Refine the periphery ``assign-adc`` chose by running the crossbar program on the calibration data.

    The program runs in the IR interpreter with every quantised layer read by read through its ADCs
    (:class:`xbcompiler.quant.periphery.IntegerRun`). With ``adc.mode = "calibrated"`` each read's
    step becomes the smallest that keeps its largest calibration read below the top code (never
    coarser than the fixed step); then, with ``adc.compensate_bias``, every layer that drops LSBs gets
    the measured mean of what its ADCs lose as its compensation. Without either setting it does
    nothing.
    """

    name: ClassVar[str] = "calibrate-adc"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"periphery"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        target = ctx.target
        if target.adc.mode != "calibrated" and not target.adc.compensate_bias:
            ctx.report[self.name] = {"changed": []}
            return program
        if not ctx.calibration:
            raise CompileError("XB220", "calibrate-adc needs calibration data",
                               hint="xbcompiler.compile(..., calibration=...) or xbc compile --calibrate FILE.npy")
        changed = []
        if target.adc.mode == "calibrated":
            runs = self._run(program, ctx)
            periphery = dict(program.periphery)
            for name, run in runs.items():
                per = periphery[name]
                needed = np.vectorize(lambda v: int(v).bit_length(), otypes=[np.int64])(run.maxima)
                steps = np.minimum(per.adc_step, np.maximum(0, needed - per.adc_bits)).astype(np.int8)
                if not np.array_equal(steps, per.adc_step):
                    changed.append(name)
                m = program.matrices[name]
                comp, error = compensation(m, encoding_of(target, m.quant), per.row_blocks, steps, per.flips,
                                           target.adc.rounding, target.adc.compensate_bias, None)
                periphery[name] = dataclasses.replace(per, adc_step=steps, compensation=comp, adc_error=error)
            program = program.replace(periphery=periphery)
        if target.adc.compensate_bias:
            lossy = {name for name, p in program.periphery.items() if (p.adc_step > 0).any()}
            runs = self._run(program, ctx) if lossy else {}
            periphery = dict(program.periphery)
            for name in sorted(lossy):
                count, s1, s2 = runs[name].loss
                mean = s1 / max(count, 1)
                std = np.sqrt(np.maximum(s2 / max(count, 1) - mean ** 2, 0.0))
                per, m = periphery[name], program.matrices[name]
                comp, error = compensation(m, encoding_of(target, m.quant), per.row_blocks, per.adc_step, per.flips,
                                           target.adc.rounding, True, (mean, std))
                periphery[name] = dataclasses.replace(per, compensation=comp, adc_error=error)
                changed.append(name)
            program = program.replace(periphery=periphery)
        ctx.report[self.name] = {"changed": sorted(set(changed))}
        return program

    @staticmethod
    def _run(program: XbarProgram, ctx: PassContext) -> dict[str, IntegerRun]:
        """Every quantised layer's read statistics over the calibration batches."""
        runs = {name: IntegerRun(program.matrices[name], per, ctx.target) for name, per in program.periphery.items()}
        fallback = float_layer(program)

        def layer(name, x):
            return runs[name](x) if name in runs else fallback(name, x)

        for batch in ctx.calibration:
            run_program(program, tuple(batch), layer)
        return runs
