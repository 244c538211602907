"""``assign-adc``: the ADC resolution and step of every read, the column flips and the bias compensation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.quant.periphery import assign


@dataclass(frozen=True)
class AssignAdcPass(Pass):
    """Decide the digital periphery of every quantised layer from the target (docs/quantization.md).

    Per read (a column of a row block): ``adc.mode`` ``lossless`` gives the bits the largest read
    needs, ``fixed`` and ``calibrated`` ``precision.adc_bits`` and the LSBs that drops; with
    ``encoding.flip_columns`` the ISAAC flag of every column; the modelled ADC bias compensation
    (``adc.compensate_bias``); each crossbar's ADC; PRIME-style output truncation. ``calibrate-adc``
    refines steps and compensation on data. Float layers are left alone.
    """

    name: ClassVar[str] = "assign-adc"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"placed"})
    establishes: ClassVar[frozenset[str]] = frozenset({"periphery"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        periphery = {name: assign(program, name, ctx.target)
                     for name, m in program.matrices.items() if m.quant is not None}
        lossy = sorted(name for name, p in periphery.items() if (p.adc_step > 0).any())
        ctx.report[self.name] = {"layers": len(periphery), "lossy_layers": lossy}
        return program.replace(periphery=periphery)
