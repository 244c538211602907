"""Ideal-mode crossbar layers: float weights as placed, partial sums added as the netlist routes them.

A layer's crossbars are read back into *row blocks*: all crossbars that hold the same matrix rows
of the same group drive the same inputs, so their columns execute together. Each row block of a
convolution runs as a convolution over the input channels its rows cover (SPEC 0.1 row order
``(c, dy, dx)``); row blocks of equal shape run as one grouped convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RowBlock:
    """Matrix rows ``rows`` (sorted indices into ``(c, dy, dx)`` order) of ``group`` driven together.

    ``weight`` is ``[len(rows), N/groups]`` as read from the crossbars; every column sum of a row
    block is one partial sum that the periphery adds into the layer output.
    """

    group: int
    rows: np.ndarray
    weight: np.ndarray

    @property
    def lo(self) -> int:
        return int(self.rows[0])

    @property
    def hi(self) -> int:
        return int(self.rows[-1]) + 1


#: How each mapping strategy's crossbars are read back into row blocks: strategy -> function.
ROW_BLOCK_READERS = {}


def row_block_reader(strategy: str):
    """Register the function that reads a strategy's crossbars back into row blocks."""
    def register(fn):
        ROW_BLOCK_READERS[strategy] = fn
        return fn
    return register


def read_row_blocks(layer: dict, crossbars: list[dict], cells: np.ndarray) -> list[RowBlock]:
    """The row blocks of a layer, read from its crossbars by its strategy's reader."""
    return ROW_BLOCK_READERS[layer["strategy"]](layer, crossbars, cells)


@row_block_reader("fully-folded")
def read_slices(layer: dict, crossbars: list[dict], cells: np.ndarray) -> list[RowBlock]:
    """Fully-folded: each slice is a rectangle of the matrix; the rows one crossbar holds of a group are
    driven together, and crossbars holding the same rows form a block (a compacted crossbar of a
    pruned layer holds several runs of rows: ``compact-pruned-rows``)."""
    n_g = layer["matrix_cols"] // layer["groups"]
    blocks: dict[tuple, np.ndarray] = {}
    for x in crossbars:
        local = x["index"] - layer["first_crossbar"]
        runs: dict[int, list] = {}
        for s in x["slices"]:
            runs.setdefault(s["group"], []).append(s)
        for group, slices in runs.items():
            key = (group, tuple(sorted({tuple(s["rows"]) for s in slices})))
            starts = np.cumsum([0] + [hi - lo for lo, hi in key[1]])
            at = {run: int(start) for run, start in zip(key[1], starts)}
            if key not in blocks:
                blocks[key] = np.zeros((int(starts[-1]), n_g), dtype=cells.dtype)
            for s in slices:
                (lo, hi), (c0, c1), (xr, xc) = s["rows"], s["cols"], s["at"]
                r0 = at[(lo, hi)]
                blocks[key][r0:r0 + hi - lo, c0:c1] += cells[local, xr:xr + hi - lo, xc:xc + c1 - c0]
    return [RowBlock(g, np.concatenate([np.arange(lo, hi) for lo, hi in runs]), w)
            for (g, runs), w in sorted(blocks.items())]


class IdealLayer:
    """One crossbar layer in ideal mode: float weights as placed, executable on a device."""

    def __init__(self, layer: dict, crossbars: list[dict], arrays: dict[str, np.ndarray], device: torch.device):
        cells = arrays[layer["arrays"]["cells"]["key"]]
        bias = arrays[layer["arrays"]["bias"]["key"]] if "bias" in layer["arrays"] else None
        self.geo = layer["geometry"]
        self.groups = layer["groups"]
        self.n_g = layer["matrix_cols"] // self.groups
        self.blocks = read_row_blocks(layer, crossbars, cells)
        self.bias = None if bias is None else torch.from_numpy(bias).to(device)
        if self.geo["kind"] == "linear":
            self._linear = [(b.rows, torch.from_numpy(b.weight.astype(np.float32)).to(device)) for b in self.blocks]
        else:
            self._prepare_conv(device)

    # --- convolution -----------------------------------------------------------------------------
    def _prepare_conv(self, device: torch.device) -> None:
        kh, kw = self.geo["kernel"]
        per_ch = kh * kw
        c_g = self.geo["in_channels"] // self.groups
        convs = []
        for b in self.blocks:
            c_lo, c_hi = b.lo // per_ch, (b.hi - 1) // per_ch + 1
            w = np.zeros(((c_hi - c_lo) * per_ch, self.n_g), dtype=np.float32)
            w[b.rows - c_lo * per_ch] = b.weight
            w = w.T.reshape(self.n_g, c_hi - c_lo, kh, kw)
            convs.append((b.group, b.group * c_g + c_lo, b.group * c_g + c_hi, w))
        spans = {hi - lo for _, lo, hi, _ in convs}
        one_each = [g for g, *_ in convs] == list(range(self.groups))
        self._grouped = None
        if len(convs) > 1 and len(spans) == 1 and one_each:
            # one block per group, all the same width: a single grouped convolution
            idx = np.concatenate([np.arange(lo, hi) for _, lo, hi, _ in convs])
            gather = None if np.array_equal(idx, np.arange(self.geo["in_channels"])) else \
                torch.from_numpy(idx).to(device)
            weight = torch.from_numpy(np.concatenate([w for *_, w in convs])).to(device)
            self._grouped = (gather, weight, len(convs))
        self._convs = [(g, lo, hi, torch.from_numpy(w).to(device)) for g, lo, hi, w in convs]

    def _conv(self, x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
        g = self.geo
        return F.conv2d(x, w, None, tuple(g["stride"]), tuple(g["padding"]), tuple(g["dilation"]), groups)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.geo["kind"] == "linear":
            return self._run_linear(x)
        x4 = x.unsqueeze(2) if self.geo["kind"] == "conv1d" else x
        if self._grouped is not None:
            gather, weight, n = self._grouped
            y = self._conv(x4 if gather is None else x4.index_select(1, gather), weight.to(x.dtype), n)
        else:
            y = None
            for group, lo, hi, w in self._convs:
                part = self._conv(x4[:, lo:hi], w.to(x.dtype))
                if self.groups > 1:
                    if y is None:
                        y = x4.new_zeros((part.shape[0], self.geo["out_channels"], *part.shape[2:]))
                    y[:, group * self.n_g:(group + 1) * self.n_g] += part
                else:
                    y = part if y is None else y.add_(part)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return y.squeeze(2) if self.geo["kind"] == "conv1d" else y

    def _run_linear(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for rows, w in self._linear:
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            xs = x[..., lo:hi] if hi - lo == len(rows) else x[..., torch.from_numpy(rows).to(x.device)]
            part = xs @ w.to(x.dtype)
            y = part if y is None else y.add_(part)
        return y + self.bias.to(x.dtype) if self.bias is not None else y
