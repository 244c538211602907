"""The integer reference: the quantised network in plain integer arithmetic, independent of the emulator.

A reference layer is built from the *float model's* BN-folded matrix of that layer and the netlist's
quantisation decisions (exponents, bits, and, where reads lose bits, the row blocks, ADC steps, flip
flags and compensation): the integer weights are re-quantised from the float model, not read from the
netlist's matrix. A layer whose ADCs lose nothing is ``Xq @ Wq + bias`` followed by the rounding
shift (unfold + matmul in int64); a lossy layer runs the literal per-read loop of docs/quantization.md
on the unfolded inputs, one ADC conversion per (DAC cycle, weight plane, column, row block).

It imports torch, numpy and the netlist package only: it shares no code with the compiler's
quantiser or the emulator's kernels, so neither can hide a bug in the other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .netlist.encoding import Encoding
from .netlist.types import Layer


def rows_of(ranges) -> np.ndarray:
    """Row indices of half-open ranges ``[[lo, hi], ...]``."""
    return np.concatenate([np.arange(lo, hi) for lo, hi in ranges]) if ranges else np.zeros(0, dtype=np.int64)


def quantize(x: torch.Tensor, exponent: int, bits: int, signed: bool) -> torch.Tensor:
    """``clamp(floor(x / 2**exponent + 1/2))`` on ``bits`` bits (float64 holding integers)."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return torch.floor(x.double() * 2.0 ** -exponent + 0.5).clamp(lo, hi)


def _digits(xq: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """DAC digits ``[T, *xq.shape]`` (int64) of the driven values ``xq + input_offset``."""
    pattern = (xq.to(torch.int64) + enc.input_offset) & ((1 << enc.spec.input_bits) - 1)
    return torch.stack([(pattern >> lo) & ((1 << bits) - 1) for _, lo, bits in enc.cycles])


def per_read(xq: torch.Tensor, wq: torch.Tensor, enc: Encoding, flips: torch.Tensor | None, step: torch.Tensor,
             bits: torch.Tensor, rounding: str) -> torch.Tensor:
    """One row block, read by read: ``xq [M, rows]`` and ``wq [rows, cols]`` -> int64 ``[M, cols]``.

    Each (cycle ``t``, plane ``p``) read ``I = digits_t @ stored_p`` goes through the ADC:
    ``code = min(R(I / 2**step), 2**bits - 1)``; the value ``code * 2**step`` is recovered (flipped
    columns: ``max_level * sum(digits) - value``), weighted by the cycle and the plane, and summed;
    the weight offset and the input offset are removed digitally. A polarized block (one fragment)
    is read from ``|wq|`` and each column's sum takes the sign of that column's weights.
    """
    levels = torch.from_numpy(enc.levels(wq.numpy()))  # [P, rows, cols]
    if flips is None:
        flips = torch.zeros((enc.planes, wq.shape[1]), dtype=torch.bool)
    stored = torch.where(flips[:, None, :], enc.max_level - levels, levels)
    digits = _digits(xq, enc)  # [T, M, rows]
    reads = torch.einsum("tmr,prc->tpmc", digits, stored).double()
    scaled = reads * torch.exp2(-step.double())
    codes = torch.minimum(torch.round(scaled) if rounding == "nearest-even" else torch.floor(scaled),
                          torch.exp2(bits.double()) - 1)
    values = codes.to(torch.int64) << step
    column_sum = digits.sum(-1, keepdim=True)[:, None]  # [T, 1, M, 1]
    values = torch.where(flips[None, :, None, :], enc.max_level * column_sum - values, values)
    cycle_w = torch.tensor([w for w, _, _ in enc.cycles])[:, None, None, None]
    plane_w = torch.tensor([s << k for s, k in zip(enc.plane_signs, enc.plane_shifts)])[None, :, None, None]
    y = (cycle_w * plane_w * values).sum((0, 1))
    if enc.spec.signed == "polarized":
        y = y * torch.where((wq < 0).any(0), -1, 1)
    return y - enc.weight_offset * (xq.to(torch.int64) + enc.input_offset).sum(-1, keepdim=True) \
        - enc.input_offset * wq.sum(0)


class ReferenceLayer:
    """One layer of the integer reference, from its float matrix and the netlist layer record.

    ``weight`` is the float im2col matrix ``[groups, K_g, N_g]`` of the model (BN folded), ``bias`` its
    float bias or None; ``netlist`` gives the layer's ADC tables (steps, bits, flips, compensation).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, layer: Layer, netlist):
        q = self.q = layer.quant
        self.layer, self.name = layer, layer.name
        n = layer.matrix_cols
        e_w = np.asarray(q.weight_exponents, dtype=np.int64)[np.arange(n) // q.group_cols]
        top = (1 << (q.weight_bits - 1)) - 1
        w = np.asarray(weight, dtype=np.float64)
        self.wq = np.clip(np.round(w / np.exp2(e_w).reshape(w.shape[0], 1, -1)), -top, top).astype(np.int64)
        b = np.zeros(n, dtype=np.int64) if bias is None else \
            np.round(np.asarray(bias, dtype=np.float64) / np.exp2(q.input_exponent + e_w)).astype(np.int64)
        self.shifts = q.output_exponent - q.input_exponent - e_w
        rounding = np.where(self.shifts > 0, np.left_shift(1, np.maximum(self.shifts - 1, 0)), 0)
        extra = [netlist.array(layer, name) for name in ("adc_compensation",)]
        self.constant = b + rounding + sum(a.astype(np.int64) for a in extra if a is not None)
        self.enc = Encoding(q.encoding)
        steps, bits, flips = (netlist.array(layer, k) for k in ("adc_step", "adc_bits", "flips"))
        self.blocks = [(b.group, rows_of(b.rows), steps[i].astype(np.int64), bits[i].astype(np.int64),
                        None if flips is None else flips[i] > 0) for i, b in enumerate(q.row_blocks)]
        self.lossless = all(self._lossless(*blk) for blk in self.blocks)

    def _lossless(self, group, rows, steps, bits, flips) -> bool:
        """No read of the block can lose a bit: step 0 and the largest possible read below the top code."""
        levels = self.enc.levels(self.wq[group][rows])
        if flips is not None:
            levels = np.where(flips[:, None, :], self.enc.max_level - levels, levels)
        worst = levels.sum(1).max(0) * self.enc.max_digit
        return bool((steps == 0).all() and (worst <= (1 << bits) - 1).all())

    def __call__(self, xq: torch.Tensor) -> torch.Tensor:
        """Output integers (float64) of input integers (float64), layer-shaped."""
        cols = self._unfold(xq)  # [M, groups, K]
        n_g = self.layer.n_g
        acc = torch.zeros((cols.shape[0], self.layer.matrix_cols), dtype=torch.int64)
        wq = torch.from_numpy(self.wq)
        if self.lossless:
            acc += torch.einsum("mgk,gkn->mgn", cols, wq).reshape(cols.shape[0], -1)
        else:
            for g, rows, steps, bits, flips in self.blocks:
                acc[:, g * n_g:(g + 1) * n_g] += per_read(
                    cols[:, g, rows], wq[g][rows], self.enc, None if flips is None else torch.from_numpy(flips),
                    torch.from_numpy(steps), torch.from_numpy(bits), self.q.adc.rounding)
        z = acc + torch.from_numpy(self.constant)
        t = self.q.truncate_bits
        if t:
            z = (z >> t) << t
        lo, hi = -(1 << (self.q.output_bits - 1)), (1 << (self.q.output_bits - 1)) - 1
        shifts = torch.from_numpy(self.shifts)
        y = torch.where(shifts >= 0, z >> shifts.clamp(min=0), z << (-shifts).clamp(min=0)).clamp(lo, hi)
        return self._fold(y.double(), xq)

    def _unfold(self, xq: torch.Tensor) -> torch.Tensor:
        """Input integers as im2col rows: ``[M, groups, K]`` int64 (M = batch x output pixels)."""
        g, groups = self.layer.geometry, self.layer.groups
        if g.kind == "linear":
            return xq.reshape(-1, 1, xq.shape[-1]).to(torch.int64)
        x4 = xq.unsqueeze(2) if g.kind == "conv1d" else xq
        cols = F.unfold(x4.double(), tuple(g.kernel), dilation=tuple(g.dilation), padding=tuple(g.padding),
                        stride=tuple(g.stride))
        b, _, pixels = cols.shape
        cols = cols.view(b, groups, self.layer.matrix_rows, pixels).permute(0, 3, 1, 2)
        return cols.reshape(b * pixels, groups, self.layer.matrix_rows).to(torch.int64)

    def _fold(self, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        """``[M, N]`` back to the layer's output shape."""
        if self.layer.geometry.kind == "linear":
            return y.reshape(*xq.shape[:-1], -1)
        return y.reshape(xq.shape[0], -1, y.shape[-1]).transpose(1, 2).reshape(xq.shape[0], *self.layer.output_shape)
