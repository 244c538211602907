"""The netlist record of a quantised layer (docs/netlist.md, "Quantised layers"): a copy of what passes decided.

From the layer's ``LayerQuant`` (``fold-pow2-scales``) and its ``LayerPeriphery`` (``assign-adc``,
``calibrate-adc``): the ``quant`` record (exponents, shifts, encoding, DAC cycles, ADC mode, row
blocks, remaining ADC error), the integer arrays (weights, bias, corrections, per-read ADC steps and
widths, flags) and each crossbar's ``adc`` record. Nothing is decided here.
"""

from __future__ import annotations

import numpy as np
from msgspec.structs import replace

from ..diagnostics import CompileError, Location
from ..netlist import types as nt
from ..quant.periphery import encoding_of


class QuantisedLayer:
    """The quantised form of one layer record: its ``quant``, arrays and crossbars' ADC records."""

    def __init__(self, layer: nt.Layer, crossbars: list[nt.Crossbar], m, per, target):
        if per is None:
            raise CompileError("XB303", f"quantised layer '{layer.name}' has no periphery",
                               location=Location(node=layer.name), hint="the pipeline needs assign-adc after place-tiles")
        q, enc = m.quant, encoding_of(target, m.quant)
        weight = np.rint(m.weight).astype(np.int64)
        named = {"weight": weight.astype(_int_dtype(q.weight_bits)), "adc_step": per.adc_step,
                 "adc_bits": per.adc_bits, "adc_compensation": per.compensation,
                 "bias": np.zeros(m.cols, dtype=np.int64) if q.bias is None else q.bias.astype(np.int64)}
        if per.flips is not None:
            named["flips"] = per.flips
        if per.signs is not None:
            named["signs"] = per.signs
        if enc.input_offset:
            named["input_correction"] = -enc.input_offset * weight.sum(axis=1).reshape(-1)
        self.arrays = {f"layers/{layer.name}/{k}": v for k, v in named.items()}
        e = per.adc_error
        self.quant = nt.Quant(
            input_exponent=q.input_exponent, input_bits=q.input_bits, input_signed=q.input_signed,
            weight_bits=q.weight_bits, weight_exponents=[int(v) for v in q.weight_exponents], group_cols=q.group_cols,
            output_exponent=q.output_exponent, output_bits=q.output_bits,
            shifts=[int(v) for v in q.shifts(m.cols)[::q.group_cols]],
            encoding=nt.EncodingSpec(signed=enc.signed, weight_bits=enc.weight_bits, cell_bits=enc.cell_bits,
                                     input_bits=enc.input_bits, dac_bits=enc.dac_bits, input_signed=enc.input_signed,
                                     input_scheme=enc.input_scheme, flip_columns=enc.flip_columns,
                                     fragment_rows=target.crossbar.fragment_rows if enc.signed == "polarized" else 0),
            planes=[nt.Plane(sign=s, shift=k) for s, k in zip(enc.plane_signs, enc.plane_shifts)],
            cycles=[nt.Cycle(weight=w, lo=lo, bits=nb) for w, lo, nb in enc.cycles],
            adc=nt.AdcSpec(mode=target.adc.mode, rounding=target.adc.rounding,
                           compensate_bias=target.adc.compensate_bias),
            truncate_bits=per.truncate_bits,
            row_blocks=[nt.RowBlockRef(group=g, rows=list(rows)) for g, rows in per.row_blocks],
            adc_error=nt.AdcError(source=e.source, mean=e.mean, mean_output_lsb=e.mean_output_lsb, std=e.std,
                                  std_output_lsb=e.std_output_lsb))
        self.crossbars = [replace(x, adc=nt.CrossbarAdc(lossless_bits=a, bits=b, step_bits=st))
                          for x, (a, b, st) in zip(crossbars, per.crossbar_adc)]

    def refs(self, name: str) -> nt.LayerArrays:
        prefix = f"layers/{name}/"
        return nt.LayerArrays(**{key[len(prefix):]: nt.ArrayRef(key=key, shape=list(a.shape), dtype=str(a.dtype))
                                 for key, a in self.arrays.items()})


def _int_dtype(weight_bits: int) -> np.dtype:
    """The smallest integer dtype holding ``weight_bits``-bit signed weights exactly."""
    return np.dtype(np.int8 if weight_bits <= 8 else np.int16 if weight_bits <= 16 else np.int32)
