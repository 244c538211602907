"""Integer encodings, weight bit-slicing, bit-serial inputs and the ADC of one crossbar read (background §0.2-0.4, 4.4).

Everything here works on integer-valued torch tensors (int64 or exactly-integer floats).

- Weights ``Wq`` (``|Wq| <= 2**(b_w-1) - 1``) become *planes*: ``P`` unsigned cell levels per weight,
  plane ``p`` with sign ``sign[p]`` and shift ``shift[p] = k * slice``, so that
  ``Wq = sum_p sign[p] * 2**shift[p] * level[p] - weight_offset``. Offset encoding stores
  ``U = Wq + 2**(b_w-1)`` on ``S = ceil(b_w / k)`` planes (``weight_offset = 2**(b_w-1)``, removed
  digitally); differential stores ``max(Wq, 0)`` and ``max(-Wq, 0)`` on ``S = ceil((b_w-1) / k)``
  slices each, planes ordered ``+s0, -s0, +s1, -s1, ...`` (the pair side by side);
  ``differential-zero-high`` stores each pair counted down from the top level, ``(2**k - 1 - neg slice,
  2**k - 1 - pos slice)``: a zero weight is high in both cells (stuck-on faults cost it nothing, background
  §4.2) and the pair's difference, so everything read from it, is that of ``differential``;
  ``polarized`` (FORMS, background §4.1) stores ``|Wq|`` on ``ceil((b_w-1) / k)`` planes of sign +1, one column
  each: the sign is one per fragment (row block) and column, applied digitally to the read's result
  (:func:`block_mvm`'s ``signs``), so ``Wq = sign * sum_p 2**shift[p] * level[p]``.
- Inputs ``Xq`` are driven as ``X' = Xq + input_offset`` (``2**(b_x-1)`` for signed inputs with the
  ``offset`` scheme, else 0) and cut into DAC *cycles*: cycle ``t`` applies bits ``[lo, lo + bits)`` of
  the unsigned pattern of ``X'`` with weight ``cycle_weight[t]``. Unsigned inputs take ``ceil(b_x/d)``
  cycles of ``d`` bits, weights ``2**(d*t)``; two's-complement inputs take the ``b_x - 1`` low bits in
  ``ceil((b_x-1)/d)`` cycles and the sign bit alone in a last cycle of weight ``-2**(b_x-1)``.
- A flipped column (ISAAC) stores ``2**k - 1 - level`` on its occupied rows; the digital side
  recovers ``sum x*level = (2**k - 1) * sum x - sum x*level'``.
- The ADC of a read ``I >= 0`` with step ``2**m`` and ``B`` bits returns the code
  ``clamp(R(I / 2**m), 0, 2**B - 1)``; ``R`` rounds half to even or floors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..target import slices_per_weight


@dataclass(frozen=True)
class Encoding:
    """How one layer's integers are put on cells and DACs (recorded in the netlist's ``quant`` entry)."""

    signed: str  # "differential" | "differential-zero-high" | "offset" | "polarized"
    weight_bits: int
    cell_bits: int
    input_bits: int
    dac_bits: int
    input_signed: bool
    input_scheme: str = "twos-complement"  # "twos-complement" | "offset"
    flip_columns: bool = False

    @property
    def slices(self) -> int:
        return slices_per_weight(self.signed, self.weight_bits, self.cell_bits)

    @property
    def max_level(self) -> int:
        return (1 << self.cell_bits) - 1

    @property
    def paired(self) -> bool:
        """A positive and a negative plane per slice (the differential encodings)."""
        return self.signed not in ("offset", "polarized")

    @property
    def plane_signs(self) -> list[int]:
        return [1, -1] * self.slices if self.paired else [1] * self.slices

    @property
    def plane_shifts(self) -> list[int]:
        k = self.cell_bits
        return [k * s for s in range(self.slices) for _ in (0, 1)] if self.paired else \
            [k * s for s in range(self.slices)]

    @property
    def planes(self) -> int:
        return len(self.plane_signs)

    @property
    def weight_offset(self) -> int:
        return 1 << (self.weight_bits - 1) if self.signed == "offset" else 0

    @property
    def twos_complement(self) -> bool:
        return self.input_signed and self.input_scheme == "twos-complement"

    @property
    def input_offset(self) -> int:
        return 1 << (self.input_bits - 1) if self.input_signed and self.input_scheme == "offset" else 0

    @property
    def cycles(self) -> list[tuple[int, int, int]]:
        """``(weight, lo, bits)`` of every DAC cycle, least significant first."""
        b, d = self.input_bits, self.dac_bits
        low = b - 1 if self.twos_complement else b
        out = [(1 << lo, lo, min(d, low - lo)) for lo in range(0, low, d)]
        if self.twos_complement:
            out.append((-(1 << (b - 1)), b - 1, 1))
        return out

    @property
    def max_digit(self) -> int:
        return max((1 << bits) - 1 for _, _, bits in self.cycles)


def weight_levels(wq: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Cell levels ``[P, *wq.shape]`` (int64) of integer weights ``wq``."""
    wq = wq.to(torch.int64)
    mask = enc.max_level
    if enc.signed in ("offset", "polarized"):
        u = wq + enc.weight_offset if enc.signed == "offset" else wq.abs()
        return torch.stack([(u >> shift) & mask for shift in enc.plane_shifts])
    pos, neg = wq.clamp(min=0), (-wq).clamp(min=0)
    if enc.signed == "differential-zero-high":
        return torch.stack([mask - (((neg if sign > 0 else pos) >> shift) & mask)
                            for sign, shift in zip(enc.plane_signs, enc.plane_shifts)])
    return torch.stack([((pos if sign > 0 else neg) >> shift) & mask
                        for sign, shift in zip(enc.plane_signs, enc.plane_shifts)])


def weights_from_levels(levels: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Inverse of :func:`weight_levels` (``|Wq|`` for ``polarized``: the sign is the fragment's)."""
    out = sum(sign * (levels[p].to(torch.int64) << shift)
              for p, (sign, shift) in enumerate(zip(enc.plane_signs, enc.plane_shifts)))
    return out - enc.weight_offset


def input_digits(xq: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """DAC digits ``[T, *xq.shape]`` (int64) of integer inputs ``xq`` (after adding ``input_offset``)."""
    pattern = (xq.to(torch.int64) + enc.input_offset) & ((1 << enc.input_bits) - 1)
    return torch.stack([(pattern >> lo) & ((1 << bits) - 1) for _, lo, bits in enc.cycles])


def inputs_from_digits(digits: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Inverse of :func:`input_digits`."""
    return sum(w * digits[t].to(torch.int64) for t, (w, _, _) in enumerate(enc.cycles)) - enc.input_offset


def flip_flags(levels: torch.Tensor, occupied: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """ISAAC flags ``[P, cols]``: flip a column whose occupied levels sum to more than half their maximum.

    ``levels`` is ``[P, rows, cols]``, ``occupied`` a ``[rows, cols]`` mask of the cells that hold a weight.
    """
    if not enc.flip_columns:
        return torch.zeros((levels.shape[0], levels.shape[-1]), dtype=torch.bool)
    occ = occupied.to(torch.int64)
    return 2 * (levels * occ).sum(-2) > occ.sum(-2) * enc.max_level


def fragment_signs(wq: torch.Tensor) -> torch.Tensor:
    """The sign (int64 ``[cols]``, +1 or -1) of each column of a polarized fragment ``wq [rows, cols]``:
    -1 where it holds a negative weight (an all-zero column is +1)."""
    return torch.where((wq < 0).any(0), -1, 1).to(torch.int64)


def lossless_bits(max_sum: int) -> int:
    """ADC bits that represent every column sum in ``0..max_sum``."""
    return int(max_sum).bit_length()


def adc_codes(reads: torch.Tensor, step_bits, bits, rounding: str) -> torch.Tensor:
    """ADC codes of non-negative integer reads: ``clamp(R(I / 2**step_bits), 0, 2**bits - 1)``.

    ``step_bits`` and ``bits`` are ints or tensors broadcast against ``reads``; ``rounding`` is
    ``"nearest-even"`` or ``"floor"``. The value the ADC reports is ``code * 2**step_bits``.
    """
    scaled = reads.double() * torch.exp2(-torch.as_tensor(step_bits, dtype=torch.float64))
    codes = torch.round(scaled) if rounding == "nearest-even" else torch.floor(scaled)
    top = torch.exp2(torch.as_tensor(bits, dtype=torch.float64)) - 1
    return torch.minimum(codes, top)


def block_mvm(xq: torch.Tensor, wq: torch.Tensor, enc: Encoding, *, flips: torch.Tensor | None = None,
              occupied: torch.Tensor | None = None, step_bits=0, bits=64, rounding: str = "nearest-even",
              signs: torch.Tensor | None = None) -> torch.Tensor:
    """One row block by the literal per-read loop of background §0.4: ``xq [M, rows] @ wq [rows, cols]`` -> int64 [M, cols].

    Every (cycle, plane) read goes through the ADC (``step_bits``/``bits`` broadcast over columns);
    flipped columns (``flips [P, cols]``) and the offset corrections are recovered digitally from
    the input sums over each column's ``occupied [rows, cols]`` rows. ``polarized``: the block is one
    fragment, read from ``|wq|``, and each column's result takes its sign (``signs [cols]``, default
    :func:`fragment_signs` of ``wq``). With a lossless ADC the result equals ``xq @ wq`` exactly.
    """
    xq, wq = xq.to(torch.int64), wq.to(torch.int64)
    rows, cols = wq.shape
    occ = torch.ones((rows, cols), dtype=torch.int64) if occupied is None else occupied.to(torch.int64)
    levels = weight_levels(wq, enc) * occ  # [P, rows, cols]
    if flips is None:
        flips = torch.zeros((enc.planes, cols), dtype=torch.bool)
    stored = torch.where(flips[:, None, :], (enc.max_level - levels) * occ, levels)
    digits = input_digits(xq, enc)  # [T, M, rows]
    reads = torch.einsum("tmr,prc->tpmc", digits, stored)  # every (cycle, plane) read
    step = torch.as_tensor(step_bits)
    values = adc_codes(reads, step, bits, rounding).to(torch.int64) << step
    driven_sum = (digits @ occ)[:, None]  # [T, 1, M, cols]: the digits on each column's occupied rows
    values = torch.where(flips[None, :, None, :], enc.max_level * driven_sum - values, values)
    cycle_w = torch.tensor([w for w, _, _ in enc.cycles])[:, None, None, None]
    plane_w = torch.tensor([sign << shift for sign, shift in zip(enc.plane_signs, enc.plane_shifts)])
    y = (cycle_w * plane_w[None, :, None, None] * values).sum((0, 1))
    if enc.signed == "polarized":
        y = y * (fragment_signs(wq) if signs is None else signs.to(torch.int64))
    x_sum = (xq + enc.input_offset) @ occ
    return y - enc.weight_offset * x_sum - enc.input_offset * (wq * occ).sum(0)


def shift_add_folded(values: list[int], amounts: list[int], constant: int, n: int) -> int:
    """The output shift ``n`` folded into the shift-and-add (docs/quantization.md).

    Reads with shift amount ``a >= n`` are shifted by ``a - n`` straight into the result; the others
    and the constant go into a low accumulator shifted right by ``n`` once. Equal to
    ``floor((sum 2**a * v + constant) / 2**n)`` because ``floor((A * 2**n + B) / 2**n) = A + floor(B / 2**n)``.
    """
    if n <= 0:
        return sum(v << (a - n) for v, a in zip(values, amounts)) + (constant << -n)
    high = sum(v << (a - n) for v, a in zip(values, amounts) if a >= n)
    low = sum(v << a for v, a in zip(values, amounts) if a < n) + constant
    return high + (low >> n)
