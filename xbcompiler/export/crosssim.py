"""A CrossSim parameter file (``CrossSimParameters.from_json``) for the netlist's target.

CrossSim (sandialabs/cross-sim, 3.x) describes an analog core by ``core`` (how values map to
conductances: ``style`` BALANCED / OFFSET / BITSLICED, ``rows_max``, ``cols_max``, ``weight_bits``,
``bit_sliced.num_slices``) and ``xbar`` (``device``, ``adc``, ``dac``, each ADC and DAC as a pair of
``mvm`` / ``vmm`` settings). The file holds only those keys, with CrossSim's names and enum names, so
CrossSim loads it and keeps its defaults for the rest (``simulation``, parasitics, mappings).
docs/export.md gives the mapping key by key and what it cannot express.
"""

from __future__ import annotations

import json
from typing import Any

from ..target import TargetSpec, target_from_dict
from .record import Export

#: CrossSim's default minimum device resistance (ohms); the target has no absolute conductances.
RMIN = 1000.0


def export(netlist) -> Export:
    """The CrossSim parameters of ``netlist``'s target, as JSON text."""
    target = target_from_dict(netlist.doc.target)
    params = {"core": core(target), "xbar": {"device": device(target), "adc": paired(adc(target)),
                                             "dac": paired(dac(netlist, target))}}
    return Export("crosssim", json.dumps(params, indent=4) + "\n", notes=tuple(notes(netlist, target)))


def paired(settings: dict[str, Any]) -> dict[str, Any]:
    """CrossSim's paired ADC / DAC parameters: the same settings for matrix-vector and vector-matrix products."""
    return {"_match": True, "mvm": settings, "vmm": dict(settings)}


def slice_style(target: TargetSpec) -> str:
    """BALANCED (a differential pair) or OFFSET (one cell, the offset subtracted digitally)."""
    return "OFFSET" if target.encoding.signed == "offset" else "BALANCED"


def core(target: TargetSpec) -> dict[str, Any]:
    """``core``: the value mapping, array size in weights, weight bits and bit slices."""
    style = slice_style(target)
    slices = target.weight_slices
    out: dict[str, Any] = {
        "style": "BITSLICED" if slices > 1 else style,
        "rows_max": target.crossbar.rows,
        "cols_max": target.logical_cols,
        "weight_bits": target.precision.weight_bits,
    }
    if style == "BALANCED":
        # one cell of a pair at zero, the pair side by side, each column digitised before the subtraction
        out["balanced"] = {"style": "ONE_SIDED", "interleaved_posneg": True, "subtract_current_in_xbar": False}
    else:
        out["offset"] = {"style": "DIGITAL_OFFSET"}
    if slices > 1:
        out["bit_sliced"] = {"style": style, "num_slices": slices}
    return out


def device(target: TargetSpec) -> dict[str, Any]:
    """``xbar.device``: cell bits, on/off ratio and programming error."""
    d = target.device
    out: dict[str, Any] = {"cell_bits": target.crossbar.cell_bits, "Rmin": RMIN,
                           "infinite_on_off_ratio": d.on_off_ratio == 0}
    if d.on_off_ratio:
        out["Rmax"] = RMIN * d.on_off_ratio
    if d.program_sigma:
        out["programming_error"] = {"enable": True, "model": "NormalProportionalDevice", "magnitude": d.program_sigma}
    return out


def adc(target: TargetSpec) -> dict[str, Any]:
    """``xbar.adc.mvm``: an unsigned ADC on every column and input cycle, over the array's full range."""
    cycles = target.input_cycles > 1
    if target.adc.mode == "lossless":  # nothing is lost: CrossSim's ideal ADC
        return {"model": "IdealADC", "bits": 0, "signed": False, "adc_per_ibit": cycles}
    return {"model": "QuantizerADC", "bits": target.precision.adc_bits, "signed": False,
            "stochastic_rounding": False, "adc_per_ibit": cycles,
            "adc_range_option": "CALIBRATED" if target.adc.mode == "calibrated" else "MAX"}


def signed_inputs(netlist) -> bool:
    """Whether any layer takes signed inputs: from the quantised layers, or True for a float netlist."""
    quant = [layer.quant for layer in netlist.layers if layer.quant is not None]
    return any(q.input_signed for q in quant) if quant else True


def dac(netlist, target: TargetSpec) -> dict[str, Any]:
    """``xbar.dac.mvm``: input bits, applied ``dac_bits`` at a time."""
    p, signed = target.precision, signed_inputs(netlist)
    return {"model": "SignMagnitudeDAC" if signed else "QuantizerDAC", "bits": p.input_bits,
            "input_bitslicing": target.input_cycles > 1, "signed": signed, "slice_size": p.dac_bits}


def notes(netlist, target: TargetSpec) -> list[str]:
    """What of the target the CrossSim parameters do not express."""
    out = []
    e, a, d = target.encoding, target.adc, target.device
    if e.signed == "polarized":
        out.append("encoding.signed = polarized (FORMS fragments, one column per slice, a sign table) has no "
                   "CrossSim core: written as BALANCED, which computes the same values on twice the columns")
    if e.signed == "differential-zero-high":
        out.append("encoding.signed = differential-zero-high: written as BALANCED ONE_SIDED; storing zeros at the "
                   "top level (the same differences) is not expressed")
    if e.flip_columns:
        out.append("encoding.flip_columns (ISAAC's column flipping) has no CrossSim setting")
    if signed_inputs(netlist):
        out.append(f"signed inputs ({e.input_signed}) written as CrossSim's SignMagnitudeDAC; the digit "
                   "cycles of docs/quantization.md differ")
    if a.mode == "calibrated":
        out.append("adc.mode = calibrated: CrossSim's calibrated_range is per core, the netlist's steps per read; "
                   "set calibrated_range before running")
    drops = a.mode != "lossless" and target.lossless_adc_bits(target.crossbar.rows) > target.precision.adc_bits
    if drops and a.rounding == "floor":
        out.append("adc.rounding = floor has no CrossSim setting (CrossSim rounds to nearest)")
    if drops and a.compensate_bias:
        out.append("adc.compensate_bias (the mean dropped-LSB error added back) has no CrossSim setting")
    if a.output_bits:
        out.append(f"adc.output_bits = {a.output_bits} (output truncation) has no CrossSim setting")
    if d.read_noise:
        out.append("device.read_noise is per column read here, per cell in CrossSim: not exported")
    if d.sa0_rate or d.sa1_rate or d.fault_map:
        out.append("stuck cells (device.sa0_rate, sa1_rate, fault_map) have no CrossSim model: not exported")
    if d.program_sigma:
        out.append("device.program_sigma (log-normal) written as NormalProportionalDevice, its first-order match")
    if d.on_off_ratio:
        out.append(f"Rmin {RMIN:g} ohm is CrossSim's default (the target gives only the ratio)")
    if not target.compensation.inactive:
        out.append("[compensation] (write-verify, residual programming, column gain) is not exported")
    out.append(f"hierarchy ({target.hierarchy.tiles} tiles x {target.hierarchy.crossbars_per_tile} crossbars) and "
               "the placement have no CrossSim counterpart: CrossSim partitions each matrix by rows_max and cols_max")
    return out
