"""Deciding the digital periphery of quantised layers on the crossbar program (passes ``assign-adc``, ``calibrate-adc``).

A *read* is one column of one row block: the matrix rows one crossbar (or one block-Toeplitz block)
drives together, summed on one bit line and digitised once per (DAC cycle, weight plane). For every
read the ADC has ``bits`` output bits and drops ``step`` LSBs (docs/quantization.md):

- ``adc.mode = "lossless"``: the bits the largest possible read needs, step 0;
- ``"fixed"``: ``precision.adc_bits``, step ``max(0, lossless - bits)``;
- ``"calibrated"``: as fixed, then each step narrowed to what the calibration reads need.

With ``adc.compensate_bias`` the mean of what the ADCs drop is added back as an integer per column:
modelled (uniform low bits) by ``assign-adc``, measured on calibration data by ``calibrate-adc``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ..ir.matrix import LogicalMatrix
from ..ir.periphery import AdcErrorInfo, LayerPeriphery
from ..ir.program import XbarProgram
from .fragments import check_polarized, read_signs, split_blocks
from .scheme import int_range, quantize
from .slicing import Encoding, adc_codes, flip_flags, input_digits, weight_levels

#: Rows of the unfolded input processed at once by the per-read datapath.
CHUNK_ROWS = 4096


def encoding_of(target, quant) -> Encoding:
    """The encoding a target gives a quantised layer (``quant`` a ``LayerQuant``)."""
    return Encoding(target.encoding.signed, quant.weight_bits, target.crossbar.cell_bits, quant.input_bits,
                    target.precision.dac_bits, quant.input_signed, target.encoding.input_signed,
                    target.encoding.flip_columns)


def adc_setting(target, rows: int) -> tuple[int, int, int]:
    """``(lossless_bits, bits, step_bits)`` of the ADC taking reads of ``rows`` rows, by ``adc.mode``."""
    lossless = target.lossless_adc_bits(rows)
    if target.adc.mode == "lossless":
        return lossless, lossless, 0
    bits = target.precision.adc_bits
    return lossless, bits, max(0, lossless - bits)


def row_blocks(program: XbarProgram, name: str) -> list[tuple[int, np.ndarray]]:
    """``(group, sorted matrix rows)`` of every row block of a layer, in reading order (group, then row ranges)."""
    m = program.matrices[name]
    kh, kw = m.geometry.kernel
    keys: set[tuple] = set()
    runs_of: dict[tuple[int, int], set] = defaultdict(set)
    for s in program.slices:
        if s.layer == name:
            runs_of[(s.crossbar, s.group)].add((s.row_lo, s.row_hi))
    keys.update((g, tuple(sorted(runs))) for (_, g), runs in runs_of.items())
    blocks = {}
    for b in program.blocks:
        if b.layer == name:
            c = np.arange(*b.channels)[:, None, None]
            dy = np.arange(*b.kernel_rows)[None, :, None]
            blocks[(b.group, b.channels, b.kernel_rows)] = ((c * kh + dy) * kw + np.arange(kw)).reshape(-1)
    out = [(g, np.concatenate([np.arange(lo, hi) for lo, hi in runs])) for g, runs in keys]
    out += [(key[0], rows) for key, rows in blocks.items()]
    return sorted(out, key=lambda gr: (gr[0], _ranges(gr[1])))


def _ranges(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return tuple((int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks))


def _crossbar_rows(program: XbarProgram, name: str, fragment_rows: int = 0) -> list[int]:
    """Rows summed by the largest read of each crossbar of the layer (its ADC must take that read);
    with ``fragment_rows`` a read is one fragment of a row block."""
    kh, kw = program.matrices[name].geometry.kernel
    reads: dict[int, list[int]] = defaultdict(list)
    runs: dict[tuple[int, int], list[range]] = defaultdict(list)

    def largest(rows: np.ndarray) -> int:
        return int(np.bincount(rows // fragment_rows).max(initial=0)) if fragment_rows else len(rows)

    for b in program.blocks:
        if b.layer == name:
            n = (b.channels[1] - b.channels[0]) * (b.kernel_rows[1] - b.kernel_rows[0]) * kw
            if fragment_rows:
                c, dy = np.arange(*b.channels)[:, None, None], np.arange(*b.kernel_rows)[None, :, None]
                n = largest(((c * kh + dy) * kw + np.arange(kw)).reshape(-1))
            reads[b.crossbar].append(n)
    for s in program.slices:
        if s.layer == name:
            runs[(s.crossbar, s.group)].append(range(s.row_lo, s.row_hi))
    for (x, _), ranges in runs.items():
        reads[x].append(largest(np.unique(np.concatenate([np.asarray(r) for r in ranges]))) if fragment_rows
                        else sum(len(r) for r in ranges))
    return [max(reads[x.index], default=0) for x in program.layer_crossbars(name)]


def assign(program: XbarProgram, name: str, target) -> LayerPeriphery:
    """The fixed (or lossless) periphery of one quantised layer, with the modelled bias compensation."""
    m = program.matrices[name]
    enc = encoding_of(target, m.quant)
    weight = np.rint(m.weight).astype(np.int64)
    fragment_rows = target.crossbar.fragment_rows if enc.signed == "polarized" else 0
    blocks = row_blocks(program, name)
    if fragment_rows:
        check_polarized(name, weight, fragment_rows)
        blocks = split_blocks(blocks, fragment_rows)
    n_g = m.cols // m.geometry.groups
    steps = np.zeros((len(blocks), n_g), dtype=np.int8)
    bits = np.zeros((len(blocks), n_g), dtype=np.int8)
    flips = np.zeros((len(blocks), enc.planes, n_g), dtype=np.uint8)
    signs = np.ones((len(blocks), n_g), dtype=np.int8)
    for i, (g, rows) in enumerate(blocks):
        _, bits[i], steps[i] = adc_setting(target, len(rows))
        levels = weight_levels(torch.from_numpy(weight[g][rows]), enc)
        flips[i] = flip_flags(levels, torch.ones(levels.shape[1:], dtype=torch.bool), enc).numpy()
        signs[i] = read_signs(weight[g][rows])
    signs = signs if fragment_rows else None
    row_ranges = tuple((int(g), _ranges(rows)) for g, rows in blocks)
    crossbar_adc = tuple(adc_setting(target, rows) for rows in _crossbar_rows(program, name, fragment_rows))
    comp, error = compensation(m, enc, row_ranges, steps, flips if enc.flip_columns else None,
                               target.adc.rounding, target.adc.compensate_bias, None, signs)
    return LayerPeriphery(row_ranges, steps, bits, flips if enc.flip_columns else None, comp, error, crossbar_adc,
                          truncate_bits(m, enc, target.adc.output_bits), signs)


def compensation(m: LogicalMatrix, enc: Encoding, blocks, steps: np.ndarray, flips: np.ndarray | None,
                 rounding: str, compensate: bool, measured: tuple[np.ndarray, np.ndarray] | None,
                 signs: np.ndarray | None = None) -> tuple[np.ndarray, AdcErrorInfo]:
    """The ADC bias compensation (int64 ``[N]``) of a layer and the error that remains.

    ``measured`` is the per-column mean and standard deviation of what the ADCs lose on calibration
    data. Without it the loss is modelled: with ``floor`` rounding a read's value is low by
    ``(2**m - 1) / 2`` on average (uniform low bits), summed over a column's reads as the
    shift-and-add weights them (times each polarized read's ``signs [B, n_g]``); nearest-even rounding
    has no bias. The compensation is that mean rounded to an integer (added only with
    ``adc.compensate_bias``).
    """
    steps = steps.astype(np.float64)  # [B, n_g]
    if flips is None:
        flips = np.zeros((steps.shape[0], enc.planes, steps.shape[1]), dtype=np.uint8)
    coef = np.array([s * 2.0 ** k for s, k in zip(enc.plane_signs, enc.plane_shifts)])[None, :, None] * \
        np.where(flips > 0, -1.0, 1.0)
    if signs is not None:
        coef = coef * signs[:, None, :]
    w_t = np.array([w for w, _, _ in enc.cycles], dtype=np.float64)
    delta = np.exp2(steps)[:, None, :]
    n_g = steps.shape[1]
    total_mean, total_var = np.zeros(m.cols), np.zeros(m.cols)
    for i, (g, _) in enumerate(blocks):  # a row block belongs to one conv group
        cols = slice(g * n_g, (g + 1) * n_g)
        if rounding == "floor":
            total_mean[cols] += (w_t.sum() * coef[i] * (delta[i] - 1) / 2).sum(0)
        total_var[cols] += ((w_t ** 2).sum() * coef[i] ** 2 * (delta[i] ** 2 - 1) / 12).sum(0)
    if measured is not None:
        total_mean, total_var = measured[0], measured[1] ** 2
    comp = np.rint(total_mean) if compensate else np.zeros_like(total_mean)
    residual = total_mean - comp
    lsb = np.exp2(m.quant.shifts(m.cols).astype(np.float64))
    error = AdcErrorInfo("calibration" if measured is not None else "model",
                         _round(float(np.abs(residual).max(initial=0.0))),
                         _round(float((np.abs(residual) / lsb).max(initial=0.0))),
                         _round(float(np.sqrt(total_var).max(initial=0.0))),
                         _round(float((np.sqrt(total_var) / lsb).max(initial=0.0))))
    return comp.astype(np.int64), error


def _round(v: float) -> float:
    return 0.0 if v == 0 or not math.isfinite(v) else float(f"{v:.6g}")


class IntegerRun:
    """One quantised layer executed read by read with its periphery: the compiler's own model of the datapath.

    ``stats`` collects, per row block, the largest read of every column and, per output column, the
    sum and sum of squares of what the ADCs lose (for ``calibrate-adc``).
    """

    def __init__(self, m: LogicalMatrix, per: LayerPeriphery, target):
        self.m, self.per, self.enc = m, per, encoding_of(target, m.quant)
        self.rounding = target.adc.rounding
        self.wq = torch.from_numpy(np.rint(m.weight).astype(np.int64))  # [G, K, n_g]
        q = m.quant
        bias = np.zeros(m.cols, dtype=np.int64) if q.bias is None else q.bias.astype(np.int64)
        self.constant = torch.from_numpy(bias + q.rounding(m.cols) + per.compensation)
        self.shifts = torch.from_numpy(q.shifts(m.cols))
        self.rows = [np.concatenate([np.arange(lo, hi) for lo, hi in r]) for _, r in per.row_blocks]
        self.maxima = np.zeros(per.adc_step.shape, dtype=np.int64)
        self.loss = [0, np.zeros(m.cols), np.zeros(m.cols)]  # count, sum, sum of squares

    def _unfold(self, xq: torch.Tensor) -> torch.Tensor:
        g = self.m.geometry
        if g.kind == "linear":
            return xq.reshape(-1, 1, xq.shape[-1]).to(torch.int64)
        x4 = xq.unsqueeze(2) if g.kind == "conv1d" else xq
        cols = F.unfold(x4, g.kernel, dilation=g.dilation, padding=g.padding, stride=g.stride)
        b, _, pixels = cols.shape
        cols = cols.view(b, g.groups, g.rows_per_group, pixels).permute(0, 3, 1, 2)
        return cols.reshape(b * pixels, g.groups, g.rows_per_group).to(torch.int64)

    def _block(self, i: int, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ADC result, exact product) of row block ``i`` for unfolded inputs ``xq [M, rows]``."""
        enc, per = self.enc, self.per
        g = self.per.row_blocks[i][0]
        wq = self.wq[g][self.rows[i]]
        flips = None if per.flips is None else torch.from_numpy(per.flips[i] > 0)
        levels = weight_levels(wq, enc)
        stored = levels if flips is None else torch.where(flips[:, None, :], enc.max_level - levels, levels)
        digits = input_digits(xq, enc)  # [T, M, rows]
        reads = torch.einsum("tmr,prc->tpmc", digits, stored)
        self.maxima[i] = np.maximum(self.maxima[i], reads.amax(dim=(0, 1, 2)).numpy())
        step = torch.from_numpy(per.adc_step[i].astype(np.int64))
        values = adc_codes(reads, step, torch.from_numpy(per.adc_bits[i].astype(np.int64)),
                           self.rounding).to(torch.int64) << step
        if flips is not None:
            values = torch.where(flips[None, :, None, :], enc.max_level * digits.sum(-1)[:, None, :, None] - values,
                                 values)
        cycle_w = torch.tensor([w for w, _, _ in enc.cycles])[:, None, None, None]
        plane_w = torch.tensor([s << k for s, k in zip(enc.plane_signs, enc.plane_shifts)])[None, :, None, None]
        y = (cycle_w * plane_w * values).sum((0, 1))
        if per.signs is not None:
            y = y * torch.from_numpy(per.signs[i].astype(np.int64))
        y = y - enc.weight_offset * (xq + enc.input_offset).sum(-1, keepdim=True) - enc.input_offset * wq.sum(0)
        return y, xq @ wq

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q, m = self.m.quant, self.m
        xq = quantize(x.detach().cpu(), q.input_exponent, q.input_bits, q.input_signed)
        cols = self._unfold(xq)
        n_g = m.cols // m.geometry.groups
        acc = torch.zeros((cols.shape[0], m.cols), dtype=torch.int64)
        exact = torch.zeros_like(acc)
        for lo in range(0, cols.shape[0], CHUNK_ROWS):
            chunk = cols[lo:lo + CHUNK_ROWS]
            for i, (g, _) in enumerate(self.per.row_blocks):
                got, want = self._block(i, chunk[:, g, self.rows[i]])
                acc[lo:lo + CHUNK_ROWS, g * n_g:(g + 1) * n_g] += got
                exact[lo:lo + CHUNK_ROWS, g * n_g:(g + 1) * n_g] += want
        lost = (exact - acc).double()
        self.loss[0] += lost.shape[0]
        self.loss[1] = self.loss[1] + lost.sum(0).numpy()
        self.loss[2] = self.loss[2] + (lost ** 2).sum(0).numpy()
        z = acc + self.constant
        t = self.per.truncate_bits
        if t:
            z = (z >> t) << t
        lo_out, hi_out = int_range(q.output_bits, True)
        y = torch.where(self.shifts >= 0, z >> self.shifts.clamp(min=0), z << (-self.shifts).clamp(min=0))
        y = y.clamp(lo_out, hi_out).double() * 2.0 ** q.output_exponent
        if m.geometry.kind == "linear":
            return y.reshape(*x.shape[:-1], -1).to(x.dtype)
        return y.reshape(x.shape[0], -1, m.cols).transpose(1, 2).reshape(x.shape[0], *m.output_shape).to(x.dtype)


def truncate_bits(m: LogicalMatrix, enc: Encoding, output_bits: int) -> int:
    """LSBs PRIME-style output truncation drops: the accumulator's worst-case width minus ``adc.output_bits``."""
    if output_bits <= 0:
        return 0
    q = m.quant
    bias = np.zeros(m.cols, dtype=np.int64) if q.bias is None else q.bias.astype(np.int64)
    lo, hi = int_range(enc.input_bits, enc.input_signed)
    w_abs = np.abs(np.rint(m.weight).astype(np.int64)).sum(axis=1).reshape(-1)
    bound = int((w_abs * max(abs(lo), hi) + np.abs(bias)).max(initial=0))
    return max(0, bound.bit_length() + 1 - output_bits)
