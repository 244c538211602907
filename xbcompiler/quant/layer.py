"""The graph-stage quantised crossbar layer: the exact integer arithmetic of a lossless datapath."""

from __future__ import annotations

import numpy as np
import torch

from ..ir.matrix import Im2colLayer, LogicalMatrix, conv_via_im2col
from .scheme import LayerQuant, quantize, requantize_output


def channel_view(v: torch.Tensor, kind: str, ndim: int) -> torch.Tensor:
    """A per-output-column vector shaped to broadcast against a layer output of ``ndim`` dims."""
    if kind == "linear":
        return v
    return v.view(1, -1, *([1] * (ndim - 2)))


class QuantIm2colLayer(Im2colLayer):
    """``Im2colLayer`` of a quantised matrix: quantise the input, integer MVM, bias, shift, dequantise.

    This is the network the integer reference (:mod:`xbcompiler.reference`) runs; the crossbars
    compute the same when their ADCs lose nothing.
    """

    def __init__(self, matrix: LogicalMatrix):
        super().__init__(matrix)
        q: LayerQuant = matrix.quant
        n = matrix.cols
        bias = np.zeros(n, dtype=np.int64) if q.bias is None else q.bias
        self.register_buffer("wq", torch.from_numpy(matrix.weight.astype(np.float64)))
        self.register_buffer("constant", torch.from_numpy((bias + q.rounding(n)).astype(np.float64)))
        self.register_buffer("shift", torch.from_numpy(q.shifts(n)))

    def accumulate(self, xq: torch.Tensor) -> torch.Tensor:
        """``Xq @ Wq + bias + rounding`` (float64 holding integers) of integer input ``xq``."""
        m = self.matrix
        acc = conv_via_im2col(xq.double(), self.wq.to(xq.device), None, m.geometry)
        return acc + channel_view(self.constant.to(acc.device), m.geometry.kind, acc.dim())

    def requantize(self, z: torch.Tensor) -> torch.Tensor:
        """The output shift and clamp of an accumulator ``z``."""
        shift = channel_view(self.shift.to(z.device), self.matrix.geometry.kind, z.dim())
        return requantize_output(z, shift, self.matrix.quant.output_bits)

    def integer_forward(self, xq: torch.Tensor) -> torch.Tensor:
        """Integer output ``Yq`` (float64 holding integers) of integer input ``xq``."""
        return self.requantize(self.accumulate(xq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.matrix.quant
        xq = quantize(x, q.input_exponent, q.input_bits, q.input_signed)
        return (self.integer_forward(xq) * 2.0 ** q.output_exponent).to(x.dtype)
