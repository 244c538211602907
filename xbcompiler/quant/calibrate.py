"""Activation ranges of a graph on calibration data (post-training quantisation)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import fx

from ..diagnostics import CompileError

#: Values sampled per tensor and batch for a percentile below 100.
SAMPLE = 1 << 20


@dataclass
class Range:
    """Observed range of one tensor: smallest value and the largest magnitude (or its percentile)."""

    min: float = float("inf")
    max_abs: float = 0.0

    def update(self, t: torch.Tensor, percentile: float, gen: torch.Generator) -> None:
        t = t.detach().double().flatten()
        if t.numel() == 0:
            return
        self.min = min(self.min, float(t.min()))
        mag = t.abs()
        if percentile < 100.0:
            if mag.numel() > SAMPLE:
                mag = mag[torch.randint(mag.numel(), (SAMPLE,), generator=gen)]
            value = float(torch.quantile(mag, percentile / 100.0))
        else:
            value = float(mag.max())
        self.max_abs = max(self.max_abs, value)


def as_batches(calibration) -> list[tuple[torch.Tensor, ...]]:
    """Calibration data as a list of input tuples: a tensor (one batch), or an iterable of tensors/tuples.

    XB223 when it holds no sample or a NaN or infinite value: scales fitted to it would be garbage.
    """
    if isinstance(calibration, torch.Tensor):
        batches = [(calibration,)]
    elif isinstance(calibration, tuple) and calibration and all(isinstance(t, torch.Tensor) for t in calibration):
        batches = [calibration]
    else:
        batches = [(item,) if isinstance(item, torch.Tensor) else tuple(item) for item in calibration]
    tensors = [t for batch in batches for t in batch if isinstance(t, torch.Tensor)]
    if not tensors or all(t.dim() == 0 or t.shape[0] == 0 for t in tensors):
        raise CompileError("XB223", "the calibration data holds no sample",
                           hint="pass a batch of typical inputs (batch first), e.g. a few hundred training images")
    for i, t in enumerate(tensors):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CompileError("XB223", f"calibration tensor {i} holds {int((~torch.isfinite(t)).sum())} NaN or "
                                        f"infinite value(s) of {t.numel()}",
                               hint="clean the data; quantisation scales fitted to it would be meaningless")
    return batches


class _Observer(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, ranges: dict[str, Range], percentile: float, gen: torch.Generator):
        super().__init__(gm)
        self.ranges, self.percentile, self.gen = ranges, percentile, gen

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            self.ranges.setdefault(n.name, Range()).update(out, self.percentile, self.gen)
        return out


def observe(gm: fx.GraphModule, batches: Iterable[tuple], percentile: float = 100.0, seed: int = 0) -> dict[str, Range]:
    """The range of every floating-point tensor node of ``gm`` over all calibration batches."""
    ranges: dict[str, Range] = {}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for batch in batches:
            _Observer(gm, ranges, percentile, gen).run(*batch)
    return ranges
