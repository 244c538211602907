"""The emulator's own datapath helpers: integer ranges, cell levels, a layer matrix as a conv weight."""

from __future__ import annotations

import numpy as np
import torch

from ..netlist.encoding import Encoding
from ..netlist.types import Layer


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """The integers a ``bits``-bit word holds (two's complement when ``signed``)."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def weight_levels(wq: np.ndarray, enc: Encoding) -> torch.Tensor:
    """Cell levels ``[P, *wq.shape]`` (int64 tensor) of integer weights."""
    return torch.from_numpy(enc.levels(wq))


def conv_weight(layer: Layer, matrix: np.ndarray) -> np.ndarray:
    """The ``[G, K_g, N_g, ...]`` matrix as a conv weight ``[N, C_g, kh, kw, ...]`` (rows ``(c, dy, dx)``)."""
    kh, kw = layer.geometry.kernel
    g, k, n_g = matrix.shape[:3]
    rest = matrix.shape[3:]
    w = matrix.reshape(g, k // (kh * kw), kh, kw, n_g, *rest)
    return np.ascontiguousarray(np.moveaxis(w, 4, 1).reshape(g * n_g, k // (kh * kw), kh, kw, *rest))
