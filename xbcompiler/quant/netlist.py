"""The integer datapath of a quantised layer in the netlist (docs/netlist.md, "Quantised layers").

:func:`quantize_netlist` turns the cells of every quantised layer into integers and adds what the
digital periphery needs: the ``quant`` entry (exponents, shifts, encoding, DAC cycles, ADC mode,
the layer's row blocks), per-read ADC steps and widths, the ISAAC flag table, the integer bias and
the integer corrections (signed-input offset, ADC bias compensation), and an ``adc`` summary per
crossbar. A *read* is one column of one row block (:mod:`xbcompiler.emulator.ideal`): the rows of
the block driven together, summed on one bit line, digitised once per (DAC cycle, weight plane).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..emit.netlist import Netlist
from .scheme import int_range
from .slicing import Encoding, flip_flags, weight_levels


def encoding_of(target, quant) -> Encoding:
    """The encoding a target gives a quantised layer (``quant`` a ``LayerQuant``)."""
    return Encoding(target.encoding.signed, quant.weight_bits, target.crossbar.cell_bits, quant.input_bits,
                    target.precision.dac_bits, quant.input_signed, target.encoding.input_signed,
                    target.encoding.flip_columns)


def _array(arrays: dict, layer: dict, name: str, value: np.ndarray) -> None:
    key = f"layers/{layer['name']}/{name}"
    arrays[key] = value
    layer["arrays"][name] = {"key": key, "shape": list(value.shape), "dtype": str(value.dtype)}


def _read_rows(crossbar: dict, layer: dict) -> int:
    """Rows summed by the largest read of a crossbar (its ADC must take that read)."""
    if crossbar.get("blocks"):
        kw = layer["geometry"]["kernel"][1]
        return max((b["channels"][1] - b["channels"][0]) * (b["kernel_rows"][1] - b["kernel_rows"][0]) * kw
                   for b in crossbar["blocks"])
    if crossbar.get("slices"):
        return max(s["rows"][1] - s["rows"][0] for s in crossbar["slices"])
    return crossbar["rows_used"]


def adc_setting(target, rows: int) -> tuple[int, int, int]:
    """``(lossless_bits, bits, step_bits)`` of the ADC taking reads of ``rows`` rows, by ``adc.mode``.

    ``calibrated`` starts from the ``fixed`` setting; :func:`calibrate_adc` narrows the steps.
    """
    lossless = target.lossless_adc_bits(rows)
    if target.adc.mode == "lossless":
        return lossless, lossless, 0
    bits = target.precision.adc_bits
    return lossless, bits, max(0, lossless - bits)


def quantize_netlist(netlist: Netlist, program, target) -> None:
    """Rewrite the quantised layers of an emitted netlist into their integer datapath (in place)."""
    from ..emulator.ideal import read_row_blocks

    doc, arrays = netlist.doc, netlist.arrays
    for layer in doc["layers"]:
        m = program.matrices[layer["name"]]
        if m.quant is None:
            continue
        q, enc = m.quant, encoding_of(target, m.quant)
        first, n = layer["first_crossbar"], layer["crossbars"]
        xbars = doc["crossbars"][first:first + n]
        key = layer["arrays"]["cells"]["key"]
        cells = np.rint(arrays[key]).astype(np.int16 if q.weight_bits <= 16 else np.int32)
        _array(arrays, layer, "cells", cells)
        layer["arrays"]["cells"]["key"] = key
        blocks = read_row_blocks(layer, xbars, cells)
        n_g = layer["matrix_cols"] // layer["groups"]
        steps = np.zeros((len(blocks), n_g), dtype=np.int8)
        bits = np.zeros((len(blocks), n_g), dtype=np.int8)
        flips = np.zeros((len(blocks), enc.planes, n_g), dtype=np.uint8)
        for i, b in enumerate(blocks):
            _, bits[i], steps[i] = adc_setting(target, len(b.rows))
            levels = weight_levels(torch.from_numpy(b.weight.astype(np.int64)), enc)
            flips[i] = flip_flags(levels, torch.ones(levels.shape[1:], dtype=torch.bool), enc).numpy()
        _array(arrays, layer, "adc_step", steps)
        _array(arrays, layer, "adc_bits", bits)
        if enc.flip_columns:
            _array(arrays, layer, "flips", flips)
        bias = np.zeros(m.cols, dtype=np.int64) if q.bias is None else q.bias.astype(np.int64)
        _array(arrays, layer, "bias", bias)
        if enc.input_offset:
            w_sum = m.weight.astype(np.int64).sum(axis=1).reshape(-1)  # [groups * N/groups]
            _array(arrays, layer, "input_correction", -enc.input_offset * w_sum)
        shifts = q.shifts(m.cols)
        layer["quant"] = {
            "input_exponent": q.input_exponent, "input_bits": q.input_bits, "input_signed": q.input_signed,
            "weight_bits": q.weight_bits, "weight_exponents": list(q.weight_exponents), "group_cols": q.group_cols,
            "output_exponent": q.output_exponent, "output_bits": q.output_bits,
            "shifts": [int(s) for s in shifts[::q.group_cols]],
            "encoding": {"signed": enc.signed, "weight_bits": enc.weight_bits, "cell_bits": enc.cell_bits,
                         "input_bits": enc.input_bits, "dac_bits": enc.dac_bits, "input_signed": enc.input_signed,
                         "input_scheme": enc.input_scheme, "flip_columns": enc.flip_columns},
            "planes": [{"sign": s, "shift": k} for s, k in zip(enc.plane_signs, enc.plane_shifts)],
            "cycles": [{"weight": w, "lo": lo, "bits": nb} for w, lo, nb in enc.cycles],
            "adc": {"mode": target.adc.mode, "rounding": target.adc.rounding,
                    "compensate_bias": target.adc.compensate_bias},
            "truncate_bits": _truncate_bits(m, enc, bias, target.adc.output_bits),
            "row_blocks": [{"group": int(b.group), "rows": row_ranges(b.rows)} for b in blocks],
        }
        for x in xbars:
            lossless, adc_bits, step = adc_setting(target, _read_rows(x, layer))
            x["adc"] = {"lossless_bits": lossless, "bits": adc_bits, "step_bits": step}
        update_compensation(netlist, layer)


def row_ranges(rows: np.ndarray) -> list[list[int]]:
    """Sorted row indices as half-open ranges ``[[lo, hi], ...]``."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [[int(r[0]), int(r[-1]) + 1] for r in np.split(rows, breaks)]


def rows_of(ranges: list[list[int]]) -> np.ndarray:
    """Inverse of :func:`row_ranges`."""
    return np.concatenate([np.arange(lo, hi) for lo, hi in ranges]) if ranges else np.zeros(0, dtype=np.int64)


def _truncate_bits(m, enc: Encoding, bias: np.ndarray, output_bits: int) -> int:
    """LSBs PRIME-style output truncation drops: the accumulator's worst-case width minus ``adc.output_bits``."""
    if output_bits <= 0:
        return 0
    lo, hi = int_range(enc.input_bits, enc.input_signed)
    w_abs = np.abs(m.weight.astype(np.int64)).sum(axis=1).reshape(-1)
    bound = int((w_abs * max(abs(lo), hi) + np.abs(bias)).max(initial=0))
    return max(0, bound.bit_length() + 1 - output_bits)


def update_compensation(netlist: Netlist, layer: dict, measured: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """The ADC bias compensation of a layer (array ``adc_compensation``) and its remaining error.

    ``measured`` is the per-column mean and standard deviation of what the ADCs lose on calibration
    data (:func:`calibrate_periphery`). Without it the loss is modelled: with ``floor`` rounding a
    read's value is low by ``(2**m - 1) / 2`` on average (uniform low bits), summed over a column's
    reads as the shift-and-add weights them; nearest-even rounding has no bias. The compensation is
    that mean rounded to an integer (added to the accumulator when ``adc.compensate_bias``); the
    report gives the remaining systematic error and the standard deviation of the random one.
    """
    q, arrays = layer["quant"], netlist.arrays
    steps = arrays[layer["arrays"]["adc_step"]["key"]].astype(np.float64)  # [B, n_g]
    flips = arrays[layer["arrays"]["flips"]["key"]] if "flips" in layer["arrays"] else np.zeros(
        (steps.shape[0], len(q["planes"]), steps.shape[1]), dtype=np.uint8)
    coef = np.array([p["sign"] * 2.0 ** p["shift"] for p in q["planes"]])[None, :, None] * \
        np.where(flips > 0, -1.0, 1.0)  # [B, P, n_g]
    w_t = np.array([c["weight"] for c in q["cycles"]], dtype=np.float64)
    delta = np.exp2(steps)[:, None, :]
    floor = q["adc"]["rounding"] == "floor"
    n_g = steps.shape[1]
    total_mean, total_var = np.zeros(layer["groups"] * n_g), np.zeros(layer["groups"] * n_g)
    for i, b in enumerate(q["row_blocks"]):  # a row block belongs to one conv group
        cols = slice(b["group"] * n_g, (b["group"] + 1) * n_g)
        if floor:
            total_mean[cols] += (w_t.sum() * coef[i] * (delta[i] - 1) / 2).sum(0)
        total_var[cols] += ((w_t ** 2).sum() * coef[i] ** 2 * (delta[i] ** 2 - 1) / 12).sum(0)
    if measured is not None:
        total_mean, total_var = measured[0], measured[1] ** 2
    comp = np.rint(total_mean) if q["adc"]["compensate_bias"] else np.zeros_like(total_mean)
    key = f"layers/{layer['name']}/adc_compensation"
    arrays[key] = comp.astype(np.int64)
    layer["arrays"]["adc_compensation"] = {"key": key, "shape": [len(comp)], "dtype": "int64"}
    residual = total_mean - comp
    lsb = np.exp2(np.repeat(np.asarray(q["shifts"], dtype=np.float64), q["group_cols"])[:len(comp)])
    q["adc_error"] = {
        "source": "calibration" if measured is not None else "model",
        "mean": _round(float(np.abs(residual).max(initial=0.0))),
        "mean_output_lsb": _round(float((np.abs(residual) / lsb).max(initial=0.0))),
        "std": _round(float(np.sqrt(total_var).max(initial=0.0))),
        "std_output_lsb": _round(float((np.sqrt(total_var) / lsb).max(initial=0.0))),
    }


def _round(v: float) -> float:
    return 0.0 if v == 0 or not math.isfinite(v) else float(f"{v:.6g}")


def calibrate_periphery(netlist: Netlist, batches: list[tuple], target) -> None:
    """What the digital periphery learns from calibration data, after emission.

    With ``adc.mode = "calibrated"`` each read's ADC step becomes the smallest that keeps its largest
    calibration read below the top code (never coarser than the ``fixed`` step); then, with
    ``adc.compensate_bias``, the compensation of every layer that drops LSBs is the measured mean of
    what its ADCs lose (:func:`update_compensation`).
    """
    if target.adc.mode == "calibrated":
        _calibrate_steps(netlist, batches)
    if target.adc.compensate_bias:
        _calibrate_compensation(netlist, batches)


def _kernels_and_inputs(netlist: Netlist, batches: list[tuple], path: str = "fast"):
    """For every calibration batch: ``{layer name: (kernel, layer input)}`` of the quantised layers."""
    from ..emulator.integer import IntegerLayer
    from ..emulator.runtime import Emulator

    doc = netlist.doc
    emulator = Emulator(netlist, "integer")
    kernels = {layer["name"]: IntegerLayer(layer, doc["crossbars"][layer["first_crossbar"]:
                                                                   layer["first_crossbar"] + layer["crossbars"]],
                                           netlist.arrays, torch.device("cpu"), path=path)
               for layer in doc["layers"] if "quant" in layer}
    sources = {n["target"]: n["args"][0]["ref"] for n in doc["nodes"] if n["op"] == "xbar"}
    for batch in batches:
        _, env = emulator.run(batch, record=True)
        yield {name: (kernel, env[sources[name]]) for name, kernel in kernels.items()}


def _calibrate_steps(netlist: Netlist, batches: list[tuple]) -> None:
    from ..emulator.integer import read_maxima

    arrays = netlist.arrays
    layers = {layer["name"]: layer for layer in netlist.doc["layers"] if "quant" in layer}
    maxima: dict[str, np.ndarray] = {}
    for found in _kernels_and_inputs(netlist, batches, path="per-read"):
        for name, (kernel, x) in found.items():
            seen = read_maxima(kernel, x)
            maxima[name] = np.maximum(maxima.get(name, seen), seen)
    for name, seen in maxima.items():
        layer = layers[name]
        key = layer["arrays"]["adc_step"]["key"]
        bits = arrays[layer["arrays"]["adc_bits"]["key"]].astype(np.int64)
        needed = np.vectorize(lambda v: int(v).bit_length())(seen) if seen.size else seen
        arrays[key] = np.minimum(arrays[key], np.maximum(0, needed - bits)).astype(np.int8)
        update_compensation(netlist, layer)


def _calibrate_compensation(netlist: Netlist, batches: list[tuple]) -> None:
    arrays = netlist.arrays
    lossy = {layer["name"]: layer for layer in netlist.doc["layers"]
             if "quant" in layer and (arrays[layer["arrays"]["adc_step"]["key"]] > 0).any()}
    if not lossy:
        return
    sums: dict[str, list] = {}
    for found in _kernels_and_inputs(netlist, batches):
        for name in lossy:
            kernel, x = found[name]
            xq = kernel.as4d(kernel.quantize(x))
            loss = (kernel.exact_accumulator(xq) - kernel.accumulator(xq).double()).transpose(0, 1).flatten(1)  # [N, samples]
            total = sums.setdefault(name, [0, 0.0, 0.0])
            total[0] += loss.shape[1]
            total[1] = total[1] + loss.sum(1).numpy()
            total[2] = total[2] + (loss ** 2).sum(1).numpy()
    for name, (count, s1, s2) in sums.items():
        mean = s1 / max(count, 1)
        std = np.sqrt(np.maximum(s2 / max(count, 1) - mean ** 2, 0.0))
        update_compensation(netlist, lossy[name], (mean, std))
