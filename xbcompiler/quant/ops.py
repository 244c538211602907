"""Host operators the quantiser inserts (on the allow-list of :mod:`xbcompiler.frontend.ops`)."""

from __future__ import annotations

import torch


def requantize(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """``x`` rounded half up onto the grid ``2**exponent``: an arithmetic right shift with rounding.

    Inserted before a residual add or a concatenation on the operand with the smaller exponent, so
    that all operands share one exponent (SPEC 3.2). Exact in float: every value is a small integer
    times a power of two.
    """
    return torch.floor(x * 2.0 ** -exponent + 0.5) * 2.0 ** exponent
