"""FORMS fragments in the cost report: ADC reads per column, lossless ADC bits and zero-skipped cycles (background §4.1).

A polarized layer reads every fragment of a column alone (docs/polarize.md): a record (slice or
block) holding rows of ``n`` fragments is read ``n`` times per column and cycle, each read summing at
most ``fragment_rows`` rows, so its lossless ADC has ``B_lossless(R_act = fragment_rows)`` bits.

Zero-skip, measured on given inputs: a fragment read is skipped in a DAC cycle when every input
digit its rows receive in that cycle is 0 (FORMS skips that cycle for the fragment's columns). The
count is per output position (an im2col window, i.e. per phase and slice of the schedule): a
*fragment-cycle* is (image, output position, fragment read, DAC cycle); the copies of a
block-Toeplitz layer compute different output positions, so each is counted once. Padding drives
the driven zero (digit 0 unless inputs are offset-encoded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..netlist.placement import block_matrix_rows
from ..netlist.types import Block, Layer


@dataclass(frozen=True)
class ZeroSkip:
    """Skipped and total fragment-cycles of one layer on the report's inputs."""

    skipped: int
    total: int

    @property
    def fraction(self) -> float:
        return self.skipped / self.total if self.total else 0.0


def polarized(layer: Layer) -> int:
    """The layer's fragment rows when it is polarized, else 0."""
    q = layer.quant
    return q.encoding.fragment_rows if q is not None and q.encoding.signed == "polarized" else 0


def reads_per_column(layer: Layer, crossbars) -> list[tuple[int, int]]:
    """Per crossbar, ``(logical column reads, largest read's rows)`` of a polarized layer: each record's columns
    times the fragments its rows touch."""
    frag = polarized(layer)
    out = []
    for x in crossbars:
        reads, largest = 0, 0
        for r in (*x.slices, *x.blocks):
            if isinstance(r, Block):
                rows, cols = block_matrix_rows(layer, r), (r.out_channels[1] - r.out_channels[0]) * layer.w_o
            else:
                rows, cols = np.arange(*r.rows), r.cols[1] - r.cols[0]
            counts = np.bincount(rows // frag)
            reads += cols * int((counts > 0).sum())
            largest = max(largest, int(counts.max(initial=0)))
        out.append((reads, largest))
    return out


def zero_skip(kernel, x: torch.Tensor) -> ZeroSkip:
    """Zero-skip counts of one polarized layer (its integer-mode ``kernel``) on its input ``x``."""
    digits = kernel.digits(kernel.driven(kernel.as4d(kernel.quantize(x))))  # [T, B, C, Hp, Wp]
    live = (digits > 0).flatten(0, 1).double()
    kh, kw = kernel.kernel
    per_ch = kh * kw
    skipped = total = 0
    for g in range(kernel.groups):
        blocks = [b for b in kernel.row_blocks if b.group == g]
        if not blocks:
            continue
        masks = np.zeros((len(blocks), kernel.c_g * per_ch))
        for i, b in enumerate(blocks):
            masks[i, b.rows] = 1.0
        weight = torch.from_numpy(masks.reshape(len(blocks), kernel.c_g, kh, kw)).to(live)
        counts = F.conv2d(live[:, g * kernel.c_g:(g + 1) * kernel.c_g], weight, None, kernel.stride, 0,
                          kernel.dilation)
        skipped += int((counts == 0).sum())
        total += counts.numel()
    return ZeroSkip(skipped, total)
