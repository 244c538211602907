"""Column gain/offset compensation, measured on a programmed chip with a calibration batch (background §3.5, item 2).

With ``compensation.column_gain``, ``xb.program(netlist, seed, calibration=x)`` runs ``x`` through the
netlist in integer mode, keeping every crossbar layer's input, and feeds each layer's input to the
same layer on the chip. Per output column ``j`` it fits the chip's accumulator ``m`` to integer
mode's ``i`` over the batch and the output pixels: a gain ``2**n`` (``-n`` the rounded ``log2`` of the
least-squares slope of ``m`` on ``i``, the noise-free regressor, shared by the columns of one
output-shift group, since the digital side has one shift per group) and an integer offset ``round(mean(i - 2**n * m))``. The chip then adds them to
every accumulator, ``2**n * m + offset``: the gain goes into the shift, the offset into the bias.

Each layer is measured on the input integer mode gives it, so the corrections do not chase the
errors of the layers before it; read noise is drawn as in any run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diagnostics import CompileError
from ..ir.values import decode
from .runtime import Emulator

#: Largest ``|n|`` of a column gain ``2**n``.
MAX_GAIN_LOG2 = 4


@dataclass(frozen=True)
class ColumnCorrection:
    """A layer's per-column correction of the accumulator: ``2**gain_log2 * acc + offset``."""

    gain_log2: np.ndarray
    offset: np.ndarray

    def apply(self, acc: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        gain = torch.from_numpy(np.exp2(self.gain_log2.astype(np.float64))).to(acc).view(shape)
        return acc.mul_(gain).add_(torch.from_numpy(self.offset.astype(np.float64)).to(acc).view(shape))


def fit_columns(ideal: torch.Tensor, measured: torch.Tensor, group_cols: int) -> ColumnCorrection:
    """The correction that best maps ``measured`` onto ``ideal`` (both ``[batch, columns, ...]``)."""
    cols = ideal.shape[1]
    i = ideal.transpose(0, 1).reshape(cols, -1).double().numpy()
    m = measured.transpose(0, 1).reshape(cols, -1).double().numpy()
    groups = -(-cols // group_cols)
    pad = groups * group_cols - cols
    gi = np.pad(i, ((0, pad), (0, 0))).reshape(groups, -1)
    gm = np.pad(m, ((0, pad), (0, 0))).reshape(groups, -1)
    gi = gi - gi.mean(1, keepdims=True)
    gm = gm - gm.mean(1, keepdims=True)
    var = (gi * gi).sum(1)
    slope = np.where(var > 0, (gi * gm).sum(1) / np.where(var > 0, var, 1.0), 1.0)  # measured on ideal
    n = np.where(slope > 0, -np.rint(np.log2(np.where(slope > 0, slope, 1.0))), 0.0)
    n = np.repeat(np.clip(n, -MAX_GAIN_LOG2, MAX_GAIN_LOG2).astype(np.int64), group_cols)[:cols]
    offset = np.rint((i - np.exp2(n)[:, None] * m).mean(1)).astype(np.int64)
    return ColumnCorrection(n, offset)


def calibrate_columns(chip, calibration) -> dict[str, ColumnCorrection]:
    """Per layer of ``chip`` (a ProgrammedChip), the column correction measured on ``calibration``."""
    from . import emulator_for
    from .runtime import as_input_tuple

    if calibration is None:
        raise CompileError("XB540", "compensation.column_gain measures every column on a calibration batch",
                           hint="xb.program(netlist, seed, calibration=x); xbc emulate --calibrate FILE.npy")
    inputs = as_input_tuple(chip, calibration)
    if inputs[0].shape[0] == 0:
        raise CompileError("XB540", "the calibration batch for compensation.column_gain is empty")
    integer = Emulator(chip, "integer", inputs[0].device)
    _, env = integer.run(inputs, record=True)
    device = emulator_for(chip, "device", inputs[0].device)
    out = {}
    with torch.no_grad():
        for node in chip.doc.nodes:
            if node.op != "xbar":
                continue
            ideal_kernel, chip_kernel = integer.layers[node.target], device.layers[node.target]
            xq = ideal_kernel.as4d(ideal_kernel.quantize(decode(node.args[0], env).to(inputs[0].device)))
            out[node.target] = fit_columns(ideal_kernel.accumulator(xq).cpu(), chip_kernel.raw_accumulator(xq).cpu(),
                                           chip.layer(node.target).quant.group_cols)
    return out
