"""Power-of-two quantisation: exponents, integer ranges, the rounding shift, per-layer parameters (background §3.2).

A real value ``v`` is held as an integer ``q`` with an exponent ``e``: ``v = q * 2**e``. Every rescale
between two exponents is an arithmetic shift; a right shift rounds half up, ``(q + 2**(n-1)) >> n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """The two's-complement (``signed``) or unsigned range of ``bits`` bits."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def weight_range(bits: int) -> tuple[int, int]:
    """Symmetric signed weight range ``+-(2**(bits-1) - 1)`` (background §3.2; the offset encoding needs it)."""
    top = (1 << (bits - 1)) - 1
    return -top, top


def pow2_exponent(max_abs: float, qmax: int) -> int:
    """The smallest ``e`` with ``max_abs / 2**e <= qmax`` (0 for an all-zero tensor)."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 0
    e = math.ceil(math.log2(max_abs / qmax))
    while max_abs / 2.0 ** e > qmax:
        e += 1
    while max_abs / 2.0 ** (e - 1) <= qmax:
        e -= 1
    return e


def quantize(x: torch.Tensor, exponent: int, bits: int, signed: bool) -> torch.Tensor:
    """``clamp(floor(x / 2**e + 1/2))`` in float64: the input quantiser of a crossbar layer (integer-valued)."""
    lo, hi = int_range(bits, signed)
    return torch.floor(x.double() * 2.0 ** -exponent + 0.5).clamp_(lo, hi)


def round_shift(v: torch.Tensor, n: int) -> torch.Tensor:
    """``v * 2**-n`` for integer-valued ``v``: a left shift for ``n <= 0``, ``(v + 2**(n-1)) >> n`` otherwise."""
    if n <= 0:
        return v * 2.0 ** -n
    return torch.floor((v + 2.0 ** (n - 1)) * 2.0 ** -n)


@dataclass(frozen=True, eq=False)
class LayerQuant:
    """The power-of-two quantisation of one crossbar layer (annotation of its ``LogicalMatrix``).

    Input ``Xq = clamp(floor(x / 2**input_exponent + 1/2))`` on ``input_bits`` (two's complement when
    ``input_signed``); weights ``Wq = clamp(round(W / 2**e_w))`` with one ``e_w`` per group of
    ``group_cols`` output columns; integer ``bias`` in accumulator units ``2**(input_exponent + e_w)``;
    output ``Yq = clamp((acc + bias + 2**(n-1)) >> n)`` on ``output_bits`` signed bits at
    ``output_exponent``, ``n = output_exponent - input_exponent - e_w`` per column.
    """

    input_exponent: int
    input_bits: int
    input_signed: bool
    weight_bits: int
    weight_exponents: tuple[int, ...]
    group_cols: int
    output_exponent: int
    output_bits: int
    bias: np.ndarray | None = None  # int64 [N]

    def column_weight_exponents(self, n_cols: int) -> np.ndarray:
        """``e_w`` of every output column (int64 [N])."""
        return np.asarray(self.weight_exponents, dtype=np.int64)[np.arange(n_cols) // self.group_cols]

    def shifts(self, n_cols: int) -> np.ndarray:
        """The rescale shift ``n`` of every output column (int64 [N]); positive means a right shift."""
        return self.output_exponent - self.input_exponent - self.column_weight_exponents(n_cols)

    def rounding(self, n_cols: int) -> np.ndarray:
        """The round-half-up constant ``2**(n-1)`` (0 where ``n <= 0``) folded into the accumulator (int64 [N])."""
        n = self.shifts(n_cols)
        return np.where(n > 0, np.left_shift(1, np.maximum(n - 1, 0)), 0).astype(np.int64)


def requantize_output(z: torch.Tensor, shifts: torch.Tensor, bits: int) -> torch.Tensor:
    """``clamp(floor(z * 2**-n))`` per column (``shifts`` broadcast against ``z``): the output shift of a layer.

    ``z`` already holds the rounding constant; for ``n <= 0`` the shift is an exact left shift.
    """
    lo, hi = int_range(bits, True)
    return torch.floor(z * torch.exp2(-shifts.to(z.dtype))).clamp_(lo, hi)
