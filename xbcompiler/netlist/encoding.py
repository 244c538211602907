"""Cell levels and DAC cycles of a quantised layer, as docs/quantization.md defines them from ``quant.encoding``.

- Weights ``Wq`` become ``P`` planes of unsigned levels, ``Wq = sum_p sign[p] * 2**shift[p] * level[p]
  - weight_offset``: ``offset`` stores ``U = Wq + 2**(b_w - 1)`` on ``ceil(b_w / k)`` planes,
  ``differential`` stores ``max(Wq, 0)`` and ``max(-Wq, 0)`` on ``ceil((b_w - 1) / k)`` slices each,
  planes ordered ``+s0, -s0, +s1, -s1, ...``; ``differential-zero-high`` stores the same pairs with both
  cells counted down from the top level, ``(2**k - 1 - neg slice, 2**k - 1 - pos slice)``, so a zero
  weight is high in both cells (background §4.2) and the pair's difference is unchanged; ``polarized`` (FORMS)
  stores ``|Wq|`` on ``ceil((b_w - 1) / k)`` planes of sign +1, the sign being one per fragment read
  (row block) and column, the layer's ``signs`` array.
- Inputs ``Xq`` are driven as ``Xq + input_offset`` and cut into the DAC cycles ``quant.cycles``.
- A flipped column stores ``2**k - 1 - level`` on the rows that hold a weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import EncodingSpec


@dataclass(frozen=True)
class Encoding:
    """The derived quantities of an :class:`EncodingSpec`."""

    spec: EncodingSpec

    @property
    def differential(self) -> bool:
        """Signed weights as pairs of cells (``differential`` or ``differential-zero-high``)."""
        return self.spec.signed not in ("offset", "polarized")

    @property
    def polarized(self) -> bool:
        """Magnitudes in the cells, one sign per fragment read and column (FORMS)."""
        return self.spec.signed == "polarized"

    @property
    def slices(self) -> int:
        magnitude = self.spec.weight_bits - (self.spec.signed != "offset")
        return -(-magnitude // self.spec.cell_bits)

    @property
    def max_level(self) -> int:
        return (1 << self.spec.cell_bits) - 1

    @property
    def plane_signs(self) -> list[int]:
        return [1, -1] * self.slices if self.differential else [1] * self.slices

    @property
    def plane_shifts(self) -> list[int]:
        k = self.spec.cell_bits
        per = 2 if self.differential else 1
        return [k * s for s in range(self.slices) for _ in range(per)]

    @property
    def planes(self) -> int:
        return len(self.plane_signs)

    @property
    def weight_offset(self) -> int:
        return 1 << (self.spec.weight_bits - 1) if self.spec.signed == "offset" else 0

    @property
    def twos_complement(self) -> bool:
        return self.spec.input_signed and self.spec.input_scheme == "twos-complement"

    @property
    def input_offset(self) -> int:
        return 1 << (self.spec.input_bits - 1) if self.spec.input_signed and self.spec.input_scheme == "offset" else 0

    @property
    def cycles(self) -> list[tuple[int, int, int]]:
        """``(weight, lo, bits)`` of every DAC cycle, least significant first."""
        b, d = self.spec.input_bits, self.spec.dac_bits
        low = b - 1 if self.twos_complement else b
        out = [(1 << lo, lo, min(d, low - lo)) for lo in range(0, low, d)]
        if self.twos_complement:
            out.append((-(1 << (b - 1)), b - 1, 1))
        return out

    @property
    def max_digit(self) -> int:
        return max((1 << bits) - 1 for _, _, bits in self.cycles)

    def levels(self, wq: np.ndarray) -> np.ndarray:
        """Cell levels ``[P, *wq.shape]`` (int64) of integer weights (of ``|wq|`` when polarized)."""
        wq = np.asarray(wq, dtype=np.int64)
        mask = self.max_level
        if not self.differential:
            u = np.abs(wq) if self.polarized else wq + self.weight_offset
            return np.stack([(u >> shift) & mask for shift in self.plane_shifts])
        pos, neg = np.maximum(wq, 0), np.maximum(-wq, 0)
        if self.spec.signed == "differential-zero-high":
            return np.stack([mask - (((neg if sign > 0 else pos) >> shift) & mask)
                             for sign, shift in zip(self.plane_signs, self.plane_shifts)])
        return np.stack([((pos if sign > 0 else neg) >> shift) & mask
                         for sign, shift in zip(self.plane_signs, self.plane_shifts)])
