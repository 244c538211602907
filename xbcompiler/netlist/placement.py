"""The placement formula of docs/netlist.md ("Reconstructing the cells"), written from the document.

This is the reader's side of the contract, independent of the compiler's mapping code: which matrix
weight sits in which cell of a crossbar, for the two kinds of placement record.

- A slice ``(group g, rows [r0, r1), cols [c0, c1), at (ar, ac))`` puts ``W[g][r, c]`` at cell
  ``(ar + r - r0, ac + c - c0)``.
- A block ``(group g, channels [c_lo, c_hi), kernel_rows [dy_lo, dy_hi), out_channels [o_lo, o_hi),
  slice s, at (ar, ac))`` of a layer with kernel ``kh x kw``, stride ``s_w`` and dilation ``d_w`` along
  the width and slice widths ``w_o``, ``w_i`` puts ``W[g][(c * kh + dy) * kw + dx, o]`` at cell
  ``(ar + ((c - c_lo) * n_dy + dy - dy_lo) * w_i + x * s_w + dx * d_w, ac + (o - o_lo) * w_o + x)``
  for every ``x`` in ``[0, w_o)``, with ``n_dy = dy_hi - dy_lo``.

Every other cell of a crossbar is zero.

These are *placement* coordinates. A crossbar ``remap-faults`` permuted (``row_permutation``,
``column_permutation``) holds placement cell ``(r, c)`` on word line ``row_permutation[r]`` and logical
column ``column_permutation[c]`` (:func:`permutations`, :func:`physical_cells`); whatever reads cells
on the chip (programming, device mode, literal execution, ``crossbar_cells``) maps them so.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from .types import Block, Crossbar, Layer, Slice


@dataclass(frozen=True)
class Footprint:
    """The cells a record may write: rows ``[r0, r1)``, logical columns ``[c0, c1)``."""

    r0: int
    r1: int
    c0: int
    c1: int

    def overlaps(self, other: Footprint) -> bool:
        return self.r0 < other.r1 and other.r0 < self.r1 and self.c0 < other.c1 and other.c0 < self.c1


def footprint(layer: Layer, record: Slice | Block) -> Footprint:
    """The rectangle of cells a placement record covers."""
    ar, ac = record.at
    if isinstance(record, Slice):
        return Footprint(ar, ar + record.rows[1] - record.rows[0], ac, ac + record.cols[1] - record.cols[0])
    n_c = record.channels[1] - record.channels[0]
    n_dy = record.kernel_rows[1] - record.kernel_rows[0]
    n_o = record.out_channels[1] - record.out_channels[0]
    return Footprint(ar, ar + n_c * n_dy * layer.w_i, ac, ac + n_o * layer.w_o)


def used_extent(layer: Layer, crossbar: Crossbar) -> tuple[int, int]:
    """``(rows, logical columns)`` up to the last one any of the crossbar's records covers."""
    rows = cols = 0
    for s in crossbar.slices:
        rows, cols = max(rows, s.at[0] + s.rows[1] - s.rows[0]), max(cols, s.at[1] + s.cols[1] - s.cols[0])
    for b in crossbar.blocks:
        n_rows = (b.channels[1] - b.channels[0]) * (b.kernel_rows[1] - b.kernel_rows[0]) * layer.w_i
        rows = max(rows, b.at[0] + n_rows)
        cols = max(cols, b.at[1] + (b.out_channels[1] - b.out_channels[0]) * layer.w_o)
    return rows, cols


def permutations(crossbar: Crossbar) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)``: the word line of each placement row and the logical column of each placement column
    (int64; the identity where the crossbar has no permutation)."""
    rows, cols = crossbar.row_permutation, crossbar.column_permutation
    return (np.arange(crossbar.rows) if rows is None else np.asarray(rows, dtype=np.int64),
            np.arange(crossbar.cols) if cols is None else np.asarray(cols, dtype=np.int64))


def permuted(crossbar: Crossbar) -> bool:
    return crossbar.row_permutation is not None or crossbar.column_permutation is not None


def physical_cells(crossbar: Crossbar, cells: np.ndarray) -> np.ndarray:
    """``[rows, cols * m]`` cells in placement coordinates (``m`` columns per logical column) at their physical places."""
    if not permuted(crossbar):
        return cells
    rows, cols = permutations(crossbar)
    out = np.zeros_like(cells)
    out.reshape(crossbar.rows, crossbar.cols, -1)[rows[:, None], cols[None, :]] = \
        cells.reshape(crossbar.rows, crossbar.cols, -1)
    return out


def physical_extent(layer: Layer, crossbar: Crossbar) -> tuple[int, int]:
    """``(rows, logical columns)`` up to the last *physical* one a record covers (:func:`used_extent` permuted)."""
    rows, cols = used_extent(layer, crossbar)
    if not permuted(crossbar):
        return rows, cols
    r, c = permutations(crossbar)
    return int(r[:rows].max(initial=-1)) + 1, int(c[:cols].max(initial=-1)) + 1


def row_classes(layer: Layer, crossbar: Crossbar) -> np.ndarray:
    """Per placement row, which reads drive it: -1 for a row no record covers (a spare row), else an id shared by
    exactly the rows whose records belong to the same row blocks (:func:`row_block_key`).

    ``remap-faults`` keeps every row on a word line of its own class or a spare one (docs/netlist.md).
    """
    keys: list[set] = [set() for _ in range(crossbar.rows)]
    for record in (*crossbar.slices, *crossbar.blocks):
        f = footprint(layer, record)
        for r in range(f.r0, min(f.r1, crossbar.rows)):
            keys[r].add(row_block_key(crossbar, record))
    ids: dict[frozenset, int] = {}
    return np.array([ids.setdefault(frozenset(k), len(ids)) if k else -1 for k in keys], dtype=np.int64)


def read_cells(layer: Layer, crossbar: Crossbar) -> np.ndarray:
    """``[rows, cols]`` bool in placement coordinates: the cells some read sums, a row of a row block by a
    logical column that row block reads (cells no record occupies included: they hold ``G_min``)."""
    rows: dict[tuple, np.ndarray] = {}
    cols: dict[tuple, np.ndarray] = {}
    for record in (*crossbar.slices, *crossbar.blocks):
        key = row_block_key(crossbar, record)
        f = footprint(layer, record)
        rows.setdefault(key, np.zeros(crossbar.rows, dtype=bool))[f.r0:f.r1] = True
        cols.setdefault(key, np.zeros(crossbar.cols, dtype=bool))[f.c0:f.c1] = True
    out = np.zeros((crossbar.rows, crossbar.cols), dtype=bool)
    for key, r in rows.items():
        out |= r[:, None] & cols[key][None, :]
    return out


def block_matrix_rows(layer: Layer, block: Block) -> np.ndarray:
    """The matrix rows ``(c * kh + dy) * kw + dx`` a block holds, sorted."""
    kh, kw = layer.geometry.kernel
    c = np.arange(*block.channels)[:, None, None]
    dy = np.arange(*block.kernel_rows)[None, :, None]
    dx = np.arange(kw)[None, None, :]
    return ((c * kh + dy) * kw + dx).reshape(-1)


def block_cells(layer: Layer, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(cell row, cell col, matrix row, matrix col)`` of every weight copy in a block (flat arrays)."""
    kh, kw = layer.geometry.kernel
    s_w, d_w = layer.geometry.stride[1], layer.geometry.dilation[1]
    w_o, w_i = layer.w_o, layer.w_i
    n_dy = block.kernel_rows[1] - block.kernel_rows[0]
    full = (block.channels[1] - block.channels[0], n_dy, kw, w_o, block.out_channels[1] - block.out_channels[0])
    c, dy, dx, x, o = np.ix_(*(np.arange(n) for n in full))
    row = np.broadcast_to(block.at[0] + (c * n_dy + dy) * w_i + x * s_w + dx * d_w, full)
    col = np.broadcast_to(block.at[1] + o * w_o + x, full)
    m_row = np.broadcast_to(((block.channels[0] + c) * kh + block.kernel_rows[0] + dy) * kw + dx, full)
    m_col = np.broadcast_to(block.out_channels[0] + o, full)
    return row.reshape(-1), col.reshape(-1), m_row.reshape(-1), m_col.reshape(-1)


def crossbar_matrix_cells(layer: Layer, crossbar: Crossbar, weight: np.ndarray) -> np.ndarray:
    """The ``[rows, cols]`` cells of one crossbar (logical columns), from the layer's ``[G, K, N_g]`` matrix."""
    cells = np.zeros((crossbar.rows, crossbar.cols), dtype=weight.dtype)
    for s in crossbar.slices:
        f = footprint(layer, s)
        cells[f.r0:f.r1, f.c0:f.c1] = weight[s.group, s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]]
    for b in crossbar.blocks:
        r, c, m_row, m_col = block_cells(layer, b)
        cells[r, c] = weight[b.group][m_row, m_col]
    return cells


def weight_counts(layer: Layer, crossbars: list[Crossbar]) -> np.ndarray:
    """How many cells hold each weight of the layer: ``[G, K, N_g]`` (int64), counted record by record.

    Records are counted as rectangles of the matrix (a block holds each of its weights ``w_o`` times),
    so the cost is the matrix size times the number of distinct records, not the number of cells.
    """
    kh, kw = layer.geometry.kernel
    counts = np.zeros((layer.groups, layer.matrix_rows, layer.n_g), dtype=np.int64)
    rects: dict[tuple, int] = {}
    for x in crossbars:
        for s in x.slices:
            key = (s.group, s.rows[0], s.rows[1], s.cols[0], s.cols[1])
            rects[key] = rects.get(key, 0) + 1
        for b in x.blocks:
            (c_lo, c_hi), (dy_lo, dy_hi), (o_lo, o_hi) = b.channels, b.kernel_rows, b.out_channels
            if dy_lo == 0 and dy_hi == kh:  # whole kernels: one run of rows
                runs = [(c_lo * kh * kw, c_hi * kh * kw)]
            else:
                runs = [((c * kh + dy_lo) * kw, (c * kh + dy_hi) * kw) for c in range(c_lo, c_hi)]
            for r0, r1 in runs:
                key = (b.group, r0, r1, o_lo, o_hi)
                rects[key] = rects.get(key, 0) + layer.w_o
    for (g, r0, r1, c0, c1), n in rects.items():
        counts[g, r0:r1, c0:c1] += n
    return counts


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def spatial(layer: Layer) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(input h, w), (output h, w)`` of the layer seen as a 2-D convolution (docs/netlist.md)."""
    if layer.geometry.kind == "linear":
        vectors = prod(layer.input_shape[:-1])
        return (vectors, 1), (vectors, 1)
    if layer.geometry.kind == "conv1d":
        return (1, layer.input_shape[-1]), (1, layer.output_shape[-1])
    return tuple(layer.input_shape[-2:]), tuple(layer.output_shape[-2:])


@dataclass(frozen=True)
class RowBlock:
    """Matrix rows ``rows`` (sorted) of ``group`` driven together; ``weight`` is ``[len(rows), N_g]``.

    Every column of a row block is one read per (DAC cycle, weight plane); columns no record places
    are zero in ``weight``.
    """

    group: int
    rows: np.ndarray
    weight: np.ndarray


def row_block_key(crossbar: Crossbar, record: Slice | Block) -> tuple:
    """The row block a record belongs to.

    A block's rows are its ``(group, channels, kernel_rows)``; the slices of one crossbar and group are
    driven together, so their row block is the group with the sorted runs of rows that crossbar holds.
    """
    if isinstance(record, Block):
        return (record.group, record.channels, record.kernel_rows)
    runs = sorted({s.rows for s in crossbar.slices if s.group == record.group})
    return (record.group, tuple(runs))


def _key_rows(layer: Layer, key: tuple) -> np.ndarray:
    if len(key) == 3:
        kh, kw = layer.geometry.kernel
        c = np.arange(*key[1])[:, None, None]
        dy = np.arange(*key[2])[None, :, None]
        return ((c * kh + dy) * kw + np.arange(kw)[None, None, :]).reshape(-1)
    return np.concatenate([np.arange(lo, hi) for lo, hi in key[1]])


def row_blocks(layer: Layer, crossbars: list[Crossbar], weight: np.ndarray) -> tuple[list[RowBlock], dict[tuple, int]]:
    """The layer's row blocks in reading order (group, then row ranges, lexicographic) and each key's position."""
    placed: dict[tuple, np.ndarray] = {}
    for x in crossbars:
        for record in (*x.slices, *x.blocks):
            key = row_block_key(x, record)
            if key not in placed:
                placed[key] = np.zeros((len(_key_rows(layer, key)), layer.n_g), dtype=bool)
            rows = _key_rows(layer, key)
            if isinstance(record, Slice):
                offset = int(np.searchsorted(rows, record.rows[0]))
                placed[key][offset:offset + record.rows[1] - record.rows[0], record.cols[0]:record.cols[1]] = True
            else:
                placed[key][:, record.out_channels[0]:record.out_channels[1]] = True
    order = sorted(placed, key=lambda k: (k[0], tuple(row_ranges(_key_rows(layer, k)))))
    blocks = []
    for key in order:
        rows = _key_rows(layer, key)
        blocks.append(RowBlock(key[0], rows, np.where(placed[key], weight[key[0]][rows], 0).astype(weight.dtype)))
    return blocks, {key: i for i, key in enumerate(order)}


def row_ranges(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row indices as half-open ranges."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)] if len(rows) else []


def fragment_blocks(layer: Layer, blocks: list[RowBlock]) -> list[RowBlock]:
    """A polarized layer's reads: every row block cut along its fragment grid (``quant.encoding.fragment_rows``
    consecutive matrix rows, ``[j F, (j + 1) F)``), in reading order; other layers' row blocks unchanged."""
    q = layer.quant
    if q is None or q.encoding.signed != "polarized":
        return blocks
    frag = q.encoding.fragment_rows
    out = []
    for b in blocks:
        ids = b.rows // frag
        out += [RowBlock(b.group, b.rows[ids == f], b.weight[ids == f]) for f in np.unique(ids)]
    return sorted(out, key=lambda b: (b.group, tuple(row_ranges(b.rows))))
