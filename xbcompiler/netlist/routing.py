"""The routing tables of pruned layers, derived from the placement records (docs/netlist.md, "Pruned layers").

- crossbar ``column_channels``: per logical column, the output channel (conv groups numbered
  globally) whose partial sum it produces, -1 for an unused column;
- crossbar ``row_inputs`` (fully-folded): per crossbar row, the matrix row of its group that drives
  it, -1 for an unused row;
- layer ``fanin``: per output channel, the partial sums added into each of its values.

Both trimmed after the last used entry. The emitter writes them and the loader checks them. Pattern
layers add the crossbar ``spm`` (:func:`spm_rows` gives the rows it implies, :func:`spm_of` derives it).
"""

from __future__ import annotations

import numpy as np

from .types import Crossbar, Layer


def _trim(table: np.ndarray) -> list[int]:
    used = np.flatnonzero(table >= 0)
    return table[:used[-1] + 1].tolist() if used.size else []


def crossbar_tables(layer: Layer, crossbar: Crossbar) -> dict[str, list[int]]:
    """``column_channels`` (and ``row_inputs`` for slices) of one crossbar."""
    cols = np.full(crossbar.cols, -1, dtype=np.int64)
    rows = np.full(crossbar.rows, -1, dtype=np.int64)
    for b in crossbar.blocks:
        lo, hi = b.out_channels
        xcol = b.at[1]
        cols[xcol:xcol + (hi - lo) * layer.w_o] = b.group * layer.n_g + np.repeat(np.arange(lo, hi), layer.w_o)
    for s in crossbar.slices:
        (r0, r1), (c0, c1), (xr, xc) = s.rows, s.cols, s.at
        cols[xc:xc + c1 - c0] = s.group * layer.n_g + np.arange(c0, c1)
        rows[xr:xr + r1 - r0] = np.arange(r0, r1)
    out = {"column_channels": _trim(cols)}
    if crossbar.slices:
        out["row_inputs"] = _trim(rows)
    return out


def layer_fanin(layer: Layer, crossbars: list[Crossbar]) -> list[int]:
    """Partial sums added into each output value, per output channel (one width slice / row copy)."""
    fanin = np.zeros(layer.matrix_cols, dtype=np.int64)
    first_site = None
    for x in crossbars:
        for b in x.blocks:
            site = (b.slice, b.out_row)
            first_site = site if first_site is None else first_site
            if site == first_site:
                lo, hi = b.out_channels
                fanin[b.group * layer.n_g + np.arange(lo, hi)] += 1
        if x.slices:
            for c in {c for c in crossbar_tables(layer, x)["column_channels"] if c >= 0}:
                fanin[c] += 1
    return fanin.tolist()


def spm_rows(layer: Layer, crossbar: Crossbar) -> list[int]:
    """The matrix rows a pattern layer's crossbar holds by its ``spm``, in crossbar-row order: for each
    ``[channel, pattern]`` entry, rows ``channel * kh * kw + p`` for ``p`` in ``layer.patterns[pattern]``."""
    kk = layer.geometry.kernel[0] * layer.geometry.kernel[1]
    return [c * kk + p for c, k in crossbar.spm or () for p in layer.patterns[k]]


def spm_of(layer: Layer, crossbar: Crossbar, patterns: list[list[int]]) -> list[tuple[int, int]] | None:
    """The ``spm`` of a crossbar whose rows hold, channel after channel, row sets of ``patterns`` (from its
    placement records); None when its rows are not of that form."""
    kk = layer.geometry.kernel[0] * layer.geometry.kernel[1]
    table = {tuple(p): k for k, p in enumerate(patterns)}
    rows = np.array(crossbar_tables(layer, crossbar).get("row_inputs", []), dtype=np.int64)
    if rows.size == 0 or (rows < 0).any():
        return None
    channels = rows // kk
    if (np.diff(channels) < 0).any():
        return None
    out = []
    for c in np.unique(channels).tolist():
        k = table.get(tuple((rows[channels == c] % kk).tolist()))
        if k is None:
            return None
        out.append((c, k))
    return out
