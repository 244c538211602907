"""Block-Toeplitz layers (semi-folded, fully-unfolded): the ideal kernel and the row-block reader.

The ideal kernel executes the netlist's crossbars as the schedule streams them: in phase ``y`` a
crossbar's row holding input channel ``c``, kernel row ``dy`` and slice column ``x_in`` receives input
``X[c, y * s_h - p_h + dy * d_h, slice * w_o * s_w - p_w + x_in]`` (zero outside the map), its
columns are read, and every column adds into the output pixel the placement gives it. Batch, phases
and crossbars are vectorised: one gather and one batched matmul per chunk of crossbars. Row copies of
fully-unfolded (crossbars sharing ``cells_index``) each run their own output row on the shared cells.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..diagnostics import CompileError, Location
from ..ir.program import ToeplitzBlock
from ..mapping.placement import block_cells, read_block
from ..mapping.shape import shape_of_layer
from .ideal import RowBlock, row_block_reader
from .runtime import register_kernel

#: Elements of one gathered input chunk (batch x crossbars x rows x phases) at most.
CHUNK_ELEMENTS = 1 << 24


def block_of(record: dict, crossbar: dict) -> ToeplitzBlock:
    """The IR block of one netlist block record."""
    return ToeplitzBlock(crossbar["layer"], crossbar["index"], record["group"], tuple(record["channels"]),
                         tuple(record["kernel_rows"]), tuple(record["out_channels"]), record["slice"],
                         record["out_row"], *record["at"])


def _disagree(layer: dict, crossbar: dict, what: str) -> CompileError:
    return CompileError("XB320", f"layer '{layer['name']}': {what}", location=Location(crossbar=crossbar["id"]))


@row_block_reader("semi-folded")
@row_block_reader("fully-unfolded")
def read_toeplitz(layer: dict, crossbars: list[dict], cells: np.ndarray) -> list[RowBlock]:
    """Row blocks ``(group, input channels, kernel rows)`` read back through the inverse placement.

    Every copy of a weight (``w_o`` in a block, ``n_w`` slices, row copies) must hold the same value
    and every cell outside the placement must be zero (XB320 otherwise).
    """
    shape = shape_of_layer(layer)
    w_o, w_i = layer["w_o"], layer["w_i"]
    found: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    done: set[int] = set()
    for x in crossbars:
        if x["cells_index"] in done:
            continue
        done.add(x["cells_index"])
        plane = cells[x["cells_index"]]
        placed = np.zeros(plane.shape, dtype=bool)
        for record in x["blocks"]:
            b = block_of(record, x)
            r, c, _, _ = block_cells(b, shape, w_o, w_i)
            placed[r, c] = True
            m_rows, values = read_block(plane, b, shape, w_o, w_i)
            if not (values == values[:1]).all():
                raise _disagree(layer, x, f"the {w_o} copies of a weight in one block differ")
            key = (b.group, b.channels, b.kernel_rows)
            if key not in found:
                found[key] = (m_rows, np.zeros((len(m_rows), shape.c_out), cells.dtype),
                              np.zeros(shape.c_out, dtype=bool))
            _, weight, seen = found[key]
            o = slice(*b.out_channels)
            if (seen[o] & (weight[:, o] != values[0]).any(axis=0)).any():
                raise _disagree(layer, x, "two slices hold different copies of a weight")
            weight[:, o], seen[o] = values[0], True
        if plane[~placed].any():
            raise _disagree(layer, x, "a cell outside the placement holds a weight")
    missing = [k for k, (_, _, seen) in found.items() if not seen.all()]
    if missing and not layer.get("pruned_weights"):  # pruned layers leave zero slabs out (docs/pruning.md)
        raise CompileError("XB320", f"layer '{layer['name']}': no crossbar holds output channels of block {missing[0]}")
    return [RowBlock(g, rows, weight) for (g, *_), (rows, weight, _) in sorted(found.items(), key=lambda kv: (
        kv[0][0], int(kv[1][0][0])))]


def _extent(used: np.ndarray) -> int:
    """One past the last True entry (at least 1)."""
    return int(used.nonzero()[0].max()) + 1 if used.any() else 1


@register_kernel("ideal", "semi-folded")
@register_kernel("ideal", "fully-unfolded")
class ToeplitzLayer:
    """One block-Toeplitz layer in ideal mode (float cells as placed), phase by phase, vectorised."""

    def __init__(self, layer: dict, crossbars: list[dict], arrays: dict[str, np.ndarray], device: torch.device):
        self.kind = layer["geometry"]["kind"]
        self.shape = s = shape_of_layer(layer)
        cells = arrays[layer["arrays"]["cells"]["key"]]
        bias = arrays[layer["arrays"]["bias"]["key"]] if "bias" in layer["arrays"] else None
        self.bias = None if bias is None else torch.from_numpy(bias).to(device)
        h_out, w_out = s.out_hw
        n_in, n_out = s.groups * s.c_in, s.groups * s.c_out
        n, rows, cols = cells.shape
        chan = np.full((n, rows), n_in, dtype=np.int64)  # channel n_in is all zeros
        dy = np.zeros((n, rows), dtype=np.int64)
        col = np.zeros((n, rows), dtype=np.int64)
        target = np.full((n, cols), n_out * w_out, dtype=np.int64)  # the last slot is discarded
        runs = np.zeros((n, h_out), dtype=np.float32)  # how often content k computes output row y
        w_o, w_i = layer["w_o"], layer["w_i"]
        mapped: set[int] = set()
        for x in crossbars:
            k = x["cells_index"]
            rec_rows = [rec["out_row"] for rec in x["blocks"]]
            if rec_rows[0] < 0:
                runs[k] += 1
            else:
                runs[k, rec_rows[0]] += 1
            if k in mapped:
                continue
            mapped.add(k)
            for rec in x["blocks"]:
                self._map_block(block_of(rec, x), k, w_o, w_i, chan, dy, col, target)
        used_rows = _extent((chan < n_in).any(0))
        used_cols = _extent((target < n_out * w_out).any(0))

        def as_t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.cells = as_t(cells[:, :used_rows, :used_cols])
        self.target = as_t(target[:, :used_cols])
        self.runs = as_t(runs)
        right = max(0, int(col.max()) + 1 - s.in_hw[1] - s.padding[1])
        bottom = max(0, (h_out - 1) * s.stride[0] + int(dy.max()) + 1 - s.in_hw[0] - s.padding[0])
        self.pad = (s.padding[1], right, s.padding[0], bottom, 0, 1)  # and one zero channel at the end
        h_pad, w_pad = s.in_hw[0] + s.padding[0] + bottom, s.in_hw[1] + s.padding[1] + right
        phase_rows = np.arange(h_out)[None, :, None] * s.stride[0]
        # input element driving row r of content k in phase y, in the flattened padded input: [n, H', R]
        self.gather = as_t((chan[:, None, :used_rows] * h_pad + dy[:, None, :used_rows] + phase_rows) * w_pad
                           + col[:, None, :used_rows])

    def _map_block(self, b: ToeplitzBlock, k: int, w_o: int, w_i: int, chan, dy, col, target) -> None:
        """Row gather and column scatter maps of one block (the placement function, evaluated)."""
        s = self.shape
        r, c, m_row, m_col = block_cells(b, s, w_o, w_i)
        kh, kw = s.kernel
        chan[k, r] = b.group * s.c_in + m_row // (kh * kw)
        dy[k, r] = (m_row // kw % kh) * s.dilation[0]
        col[k, r] = b.slice * w_o * s.stride[1] + (r - b.xrow) % w_i  # padded: the -p_w cancels the left pad
        x_out = b.slice * w_o + (c - b.xcol) % w_o
        dump = s.groups * s.c_out * s.out_hw[1]
        target[k, c] = np.where(x_out < s.out_hw[1], (b.group * s.c_out + m_col) * s.out_hw[1] + x_out, dump)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape
        lead = x.shape[:-1]
        if self.kind == "linear":
            x4 = x.reshape(lead[0], -1, x.shape[-1]).transpose(1, 2).unsqueeze(-1)  # [B, F, L, 1]
        else:
            x4 = x.unsqueeze(2) if self.kind == "conv1d" else x
        b = x4.shape[0]
        xp = F.pad(x4, self.pad).reshape(b, -1)
        h_out, w_out = s.out_hw
        n_out = s.groups * s.c_out
        y = x4.new_zeros((b, h_out, n_out * w_out + 1))
        n, rows, _ = self.cells.shape
        step = max(1, CHUNK_ELEMENTS // max(1, b * rows * h_out))
        cells = self.cells.to(x.dtype)
        for k0 in range(0, n, step):
            k = slice(k0, k0 + step)
            index = self.gather[k]
            v = xp.index_select(1, index.reshape(-1)).view(b, *index.shape)  # [B, K, H', R]
            out = torch.matmul(v, cells[k])  # [B, K, H', C]
            out = out * self.runs[k][None, :, :, None].to(x.dtype)
            y.index_add_(2, self.target[k].reshape(-1), out.permute(0, 2, 1, 3).reshape(b, h_out, -1))
        y = y[..., :-1].reshape(b, h_out, n_out, w_out).permute(0, 2, 1, 3)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if self.kind == "linear":
            return y[..., 0].transpose(1, 2).reshape(*lead, n_out)
        return y.squeeze(2) if self.kind == "conv1d" else y.contiguous()
