"""The exact product ``Xq (*) Wq`` of a layer's lossless columns, as convolutions (integer mode).

Three ways, the cheapest one that is provably exact (every partial sum of every convolution below
``2**24`` where it runs in float32, judged from the weights and the input range):

- ``float32``: one convolution;
- ``split``: inputs and weights written in balanced radix-256 digits, ``v = 256 * hi + lo`` with
  ``lo`` in ``[-128, 127]``; one float32 convolution computes all four digit products (input digits
  stacked on the batch, weight digits on the output channels, per conv group), and
  ``65536 * hh + 256 * (hl + lh) + ll`` is formed in float64. Each product has digits of at most
  ``128`` in magnitude, which is what lets 16-bit operands stay in float32;
- ``float64``: one convolution (slow on CPU), for whatever the split cannot hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

#: Integers up to this are exact in float32.
EXACT32 = 1 << 24
RADIX = 256


def balanced_digits(v):
    """``(hi, lo)`` with ``v = RADIX * hi + lo`` and ``lo`` in ``[-RADIX/2, RADIX/2)`` (numpy or torch)."""
    half = RADIX // 2
    lo = (v + half) % RADIX - half
    return (v - lo) // RADIX if isinstance(v, np.ndarray) else (v - lo) / RADIX, lo


def _high_digit_max(largest: int) -> int:
    """The largest ``|hi|`` of any integer of magnitude at most ``largest``."""
    return (largest + RADIX // 2) // RADIX


def _column_l1(w: np.ndarray) -> int:
    return int(np.abs(w).reshape(w.shape[0], -1).sum(1).max(initial=0))


@dataclass
class ExactProduct:
    """The lossless columns of one layer; call with the input integers (4-D) and the layer's conv."""

    how: str
    """``float32``, ``split`` or ``float64``."""
    weight: torch.Tensor
    """Conv weight ``[N, C/groups, kh, kw]``; for ``split`` the digits ``[G * 2 * n_g, ...]`` (hi, lo)."""
    groups: int

    @classmethod
    def build(cls, w: np.ndarray, groups: int, x_max: int, device: torch.device) -> ExactProduct:
        """``w``: integer conv weight ``[N, C/groups, kh, kw]``; ``x_max``: the largest ``|Xq|``."""
        if _column_l1(w) * x_max < EXACT32:
            return cls("float32", torch.from_numpy(w.astype(np.float32)).to(device), groups)
        hi, lo = balanced_digits(w.astype(np.int64))
        digit_max = max(_high_digit_max(x_max), RADIX // 2)
        if max(_column_l1(hi), _column_l1(lo)) * digit_max < EXACT32:
            n_g = w.shape[0] // groups
            stacked = np.stack([hi.reshape(groups, n_g, *w.shape[1:]), lo.reshape(groups, n_g, *w.shape[1:])], 1)
            return cls("split", torch.from_numpy(stacked.reshape(-1, *w.shape[1:]).astype(np.float32)).to(device),
                       groups)
        return cls("float64", torch.from_numpy(w.astype(np.float64)).to(device), groups)

    def __call__(self, xq: torch.Tensor, conv: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``conv(x, weight, groups)`` of the input integers; float32 or float64 exact integers."""
        if self.how == "float32":
            return conv(xq.float(), self.weight, self.groups)
        if self.how == "float64":
            return conv(xq.double(), self.weight, self.groups)
        hi, lo = balanced_digits(xq.float())
        y = conv(torch.cat([hi, lo]), self.weight, self.groups)
        b, n_g = xq.shape[0], self.weight.shape[0] // (2 * self.groups)
        y = y.view(2, b, self.groups, 2, n_g, *y.shape[2:])
        hh, hl, lh, ll = (y[i, :, :, j].double() for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
        return (hh.mul_(RADIX * RADIX).add_(hl.add_(lh), alpha=RADIX).add_(ll)).reshape(b, -1, *y.shape[5:])


def exact_dtype(bound: float) -> torch.dtype:
    """float32 when every integer up to ``bound`` is exact in it, else float64."""
    return torch.float32 if bound < EXACT32 else torch.float64
