"""Literal execution (``literal=True``): the crossbars themselves, cell by cell, phase by phase.

The oracle the fast paths are tested against on small models. Each crossbar's cells are derived
from its placement records by the formula of docs/netlist.md (:mod:`xbcompiler.netlist.placement`)
and then used as a chip would use them:

- block-Toeplitz crossbars (semi-folded, fully-unfolded) run as the schedule streams them: in phase
  ``y`` the row holding input channel ``c``, kernel row ``dy`` and slice column ``x_in`` receives input
  ``X[c, y * s_h - p_h + dy * d_h, slice * w_o * s_w - p_w + x_in]`` (zero outside the map), its columns
  are read, and every column adds into the output pixel the placement gives it;
- fully-folded crossbars are read back into row blocks (the rows one crossbar holds of a group are
  driven together) and each row block runs as a convolution over the input channels it covers.

For integer mode the row blocks are read back from the derived cells the same way (every copy of a
weight must agree) and run through the per-read datapath.

Cells are at their physical places: on a crossbar ``remap-faults`` permuted, each placement row is
driven on its word line and each placement column read from its logical column (the permutation undone
by the routing of inputs and outputs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..diagnostics import CompileError, Location
from ..netlist import Netlist
from ..netlist.placement import (
    RowBlock,
    block_cells,
    crossbar_matrix_cells,
    footprint,
    permutations,
    physical_cells,
    physical_extent,
    row_block_key,
    row_ranges,
    spatial,
)
from ..netlist.types import Crossbar, Layer, Slice

#: Elements of one gathered input chunk (batch x crossbars x rows x phases) at most.
CHUNK_ELEMENTS = 1 << 24


def derived_cells(netlist: Netlist, layer: Layer, weight: np.ndarray | None = None) -> np.ndarray:
    """``[crossbars, rows, cols]``: the cells of every crossbar of the layer, derived from its records, at their
    physical places."""
    weight = netlist.weight(layer) if weight is None else weight
    return np.stack([physical_cells(x, crossbar_matrix_cells(layer, x, weight))
                     for x in netlist.layer_crossbars(layer)]) \
        if layer.crossbars else np.zeros((0, 1, 1), dtype=weight.dtype)


def read_back(layer: Layer, crossbars: list[Crossbar], cells: np.ndarray) -> list[RowBlock]:
    """Row blocks read from crossbar cells through the inverse placement (XB320 when copies disagree)."""
    found: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k, x in enumerate(crossbars):
        plane = cells[k]
        to_row, to_col = permutations(x)
        for record in (*x.slices, *x.blocks):
            key = row_block_key(x, record)
            if isinstance(record, Slice):
                f = footprint(layer, record)
                m_rows = np.arange(*record.rows)
                cols = np.arange(*record.cols)
                values = plane[np.ix_(to_row[f.r0:f.r1], to_col[f.c0:f.c1])]
            else:
                r, c, m_row, m_col = block_cells(layer, record)
                n_o = record.out_channels[1] - record.out_channels[0]
                copies = plane[to_row[r], to_col[c]].reshape(-1, layer.w_o, n_o)
                if not (copies == copies[:, :1]).all():
                    raise CompileError("XB320", f"layer '{layer.name}': the {layer.w_o} copies of a weight in one "
                                                "block differ", location=Location(crossbar=x.id))
                m_rows = m_row.reshape(-1, layer.w_o, n_o)[:, 0, 0]
                cols = m_col.reshape(-1, layer.w_o, n_o)[0, 0]
                values = copies[:, 0]
            if key not in found:
                rows = np.unique(np.concatenate([np.arange(*s.rows) for s in x.slices if s.group == key[0]])) \
                    if len(key) == 2 else np.sort(m_rows)
                found[key] = (rows, np.zeros((len(rows), layer.n_g), cells.dtype), np.zeros((len(rows), layer.n_g), bool))
            rows, weight, seen = found[key]
            at = np.searchsorted(rows, m_rows)
            old = weight[at[:, None], cols[None, :]]
            if (seen[at[:, None], cols[None, :]] & (old != values)).any():
                raise CompileError("XB320", f"layer '{layer.name}': two crossbars hold different copies of a weight",
                                   location=Location(crossbar=x.id))
            weight[at[:, None], cols[None, :]] = values
            seen[at[:, None], cols[None, :]] = True
    order = sorted(found, key=lambda k: (k[0], tuple(row_ranges(found[k][0]))))
    return [RowBlock(key[0], found[key][0], found[key][1]) for key in order]


class RowBlockLayer:
    """Fully-folded crossbars in ideal mode: each row block read back from the cells is one convolution."""

    def __init__(self, netlist: Netlist, layer: Layer, device: torch.device):
        self.layer = layer
        self.blocks = read_back(layer, netlist.layer_crossbars(layer), derived_cells(netlist, layer))
        bias = netlist.array(layer, "bias")
        self.bias = None if bias is None else torch.from_numpy(np.array(bias)).to(device)
        kh, kw = layer.geometry.kernel
        per_ch, c_g = kh * kw, layer.geometry.in_channels // layer.groups
        self.parts = []
        for b in self.blocks:
            c_lo, c_hi = int(b.rows[0]) // per_ch, int(b.rows[-1]) // per_ch + 1
            w = np.zeros(((c_hi - c_lo) * per_ch, layer.n_g), dtype=np.float32)
            w[b.rows - c_lo * per_ch] = b.weight
            w = w.T.reshape(layer.n_g, c_hi - c_lo, kh, kw)
            self.parts.append((b.group, b.group * c_g + c_lo, b.group * c_g + c_hi, torch.from_numpy(w).to(device)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer, g = self.layer, self.layer.geometry
        x4 = x.reshape(-1, x.shape[-1], 1, 1) if g.kind == "linear" else x.unsqueeze(2) if g.kind == "conv1d" else x
        flat = g.kind == "linear"
        y = None
        for group, lo, hi, w in self.parts:
            part = F.conv2d(x4[:, lo:hi], w.to(x.dtype), None, (1, 1) if flat else tuple(g.stride),
                            (0, 0) if flat else tuple(g.padding), (1, 1) if flat else tuple(g.dilation))
            if y is None:
                y = x4.new_zeros((part.shape[0], layer.matrix_cols, *part.shape[2:]))
            y[:, group * layer.n_g:(group + 1) * layer.n_g] += part
        if y is None:  # a layer whose every weight is pruned
            hw = spatial(layer)[1]
            y = x4.new_zeros((x4.shape[0], layer.matrix_cols, 1, 1) if flat else (x4.shape[0], layer.matrix_cols, *hw))
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if flat:
            return y.reshape(*x.shape[:-1], layer.matrix_cols)
        return y.squeeze(2) if g.kind == "conv1d" else y


class ToeplitzLayer:
    """Block-Toeplitz crossbars in ideal mode, phase by phase: one gather and one batched matmul per chunk."""

    def __init__(self, netlist: Netlist, layer: Layer, device: torch.device):
        self.layer = layer
        g = layer.geometry
        (h_in, w_in), (h_out, w_out) = spatial(layer)
        self.out_hw = (h_out, w_out)
        kh, kw = g.kernel
        c_g, n_g = g.in_channels // layer.groups, layer.n_g
        n_in, n_out = g.in_channels, layer.matrix_cols
        crossbars = netlist.layer_crossbars(layer)
        cells = derived_cells(netlist, layer)
        bias = netlist.array(layer, "bias")
        self.bias = None if bias is None else torch.from_numpy(np.array(bias)).to(device)
        n, rows, cols = cells.shape
        chan = np.full((n, rows), n_in, dtype=np.int64)  # channel n_in is all zeros
        dy = np.zeros((n, rows), dtype=np.int64)
        col = np.zeros((n, rows), dtype=np.int64)
        dump = n_out * w_out
        target = np.full((n, cols), dump, dtype=np.int64)  # the last slot is discarded
        runs = np.zeros((n, h_out), dtype=np.float32)  # 1 where crossbar k computes output row y
        for k, x in enumerate(crossbars):
            out_row = x.blocks[0].out_row if x.blocks else -1
            if out_row < 0:
                runs[k] = 1
            else:
                runs[k, out_row] = 1
            to_row, to_col = permutations(x)
            for b in x.blocks:
                r, c, m_row, m_col = block_cells(layer, b)
                chan[k, to_row[r]] = b.group * c_g + m_row // (kh * kw)
                dy[k, to_row[r]] = (m_row // kw % kh) * g.dilation[0]
                col[k, to_row[r]] = b.slice * layer.w_o * g.stride[1] + (r - b.at[0]) % layer.w_i
                x_out = b.slice * layer.w_o + (c - b.at[1]) % layer.w_o
                target[k, to_col[c]] = np.where(x_out < w_out, (b.group * n_g + m_col) * w_out + x_out, dump)
        extents = [physical_extent(layer, x) for x in crossbars]
        used_rows = max(1, max((r for r, _ in extents), default=1))
        used_cols = max(1, max((c for _, c in extents), default=1))

        def as_t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.cells = as_t(cells[:, :used_rows, :used_cols].astype(np.float32))
        self.target = as_t(target[:, :used_cols])
        self.runs = as_t(runs)
        right = max(0, int(col.max(initial=0)) + 1 - w_in - g.padding[1])
        bottom = max(0, (h_out - 1) * g.stride[0] + int(dy.max(initial=0)) + 1 - h_in - g.padding[0])
        self.pad = (g.padding[1], right, g.padding[0], bottom, 0, 1)  # and one zero channel at the end
        h_pad, w_pad = h_in + g.padding[0] + bottom, w_in + g.padding[1] + right
        phase_rows = np.arange(h_out)[None, :, None] * g.stride[0]
        # input element driving row r of crossbar k in phase y, in the flattened padded input: [n, H', R]
        self.gather = as_t((chan[:, None, :used_rows] * h_pad + dy[:, None, :used_rows] + phase_rows) * w_pad
                           + col[:, None, :used_rows])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer, kind = self.layer, self.layer.geometry.kind
        lead = x.shape[:-1]
        if kind == "linear":
            x4 = x.reshape(lead[0], -1, x.shape[-1]).transpose(1, 2).unsqueeze(-1)  # [B, F, L, 1]
        else:
            x4 = x.unsqueeze(2) if kind == "conv1d" else x
        b = x4.shape[0]
        xp = F.pad(x4, self.pad).reshape(b, -1)
        h_out, w_out = self.out_hw
        n_out = layer.matrix_cols
        y = x4.new_zeros((b, h_out, n_out * w_out + 1))
        n, rows, _ = self.cells.shape
        step = max(1, CHUNK_ELEMENTS // max(1, b * rows * h_out))
        cells = self.cells.to(x.dtype)
        for k0 in range(0, n, step):
            k = slice(k0, k0 + step)
            index = self.gather[k]
            v = xp.index_select(1, index.reshape(-1)).view(b, *index.shape)  # [B, K, H', R]
            out = torch.matmul(v, cells[k]) * self.runs[k][None, :, :, None].to(x.dtype)  # [B, K, H', C]
            y.index_add_(2, self.target[k].reshape(-1), out.permute(0, 2, 1, 3).reshape(b, h_out, -1))
        y = y[..., :-1].reshape(b, h_out, n_out, w_out).permute(0, 2, 1, 3)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if kind == "linear":
            return y[..., 0].transpose(1, 2).reshape(*lead, n_out)
        return y.squeeze(2) if kind == "conv1d" else y.contiguous()


def literal_ideal(netlist: Netlist, layer: Layer, device: torch.device):
    """The literal ideal kernel of a layer's strategy."""
    return (RowBlockLayer if layer.strategy == "fully-folded" else ToeplitzLayer)(netlist, layer, device)
