"""The block-Toeplitz placement function of background §2.2, its inverse, and the blocks of a layer.

Inside a block at ``(xrow, xcol)`` holding input channels ``c`` (from ``c_lo``), kernel rows ``dy``
(from ``dy_lo``, ``n_dy`` of them) and output channels ``o`` (from ``o_lo``)::

    row(c, dy, x_in) = xrow + ((c - c_lo) * n_dy + (dy - dy_lo)) * w_i + x_in
    col(o, x_out)    = xcol + (o - o_lo) * w_o + x_out                      (logical column)
    cell             = W[o, c, dy, dx]   where  x_in = x_out * s_w + dx * d_w

for ``x_out`` in ``[0, w_o)``: every weight sits ``w_o`` times in its block, and every block is repeated
for the ``n_w`` slices (and the ``H'`` row copies of fully-unfolded). Weights are addressed in the
im2col matrix of the group: row ``(c * k_h + dy) * k_w + dx``, column ``o``.

Importing this module also installs the program verifier's check of block-Toeplitz layers
(:func:`xbcompiler.ir.verify_toeplitz.verify_blocks`; the IR does not import the mapping layer).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np

from ..ir.program import Crossbar, MappingPlan, ToeplitzBlock, XbarProgram, fail
from ..ir.tables import COLUMNS, CrossbarTable, block_table, crossbar_table
from ..ir.verify_toeplitz import TOEPLITZ, install_block_verifier
from .shape import LayerShape, shape_of


def _ranges(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def output_rows(plan: MappingPlan, shape: LayerShape) -> list[int] | range:
    """The output row each copy of a layer's blocks computes: every row (fully-unfolded) or ``[-1]`` (one
    output row per phase)."""
    return range(shape.out_hw[0]) if plan.row_copies > 1 or plan.strategy == "fully-unfolded" else [-1]


def layer_blocks(name: str, shape: LayerShape, plan: MappingPlan, first: int, rows: int,
                 cols: int) -> tuple[list[Crossbar], list[ToeplitzBlock]]:
    """The crossbars and blocks of one layer, crossbar indices from ``first``.

    Order: output row copy, width slice, conv-group set, output group, input group, kernel-row split
    (the crossbars whose partial sums are added are adjacent).
    """
    kh = shape.kernel[0]
    ins = _ranges(shape.c_in, plan.kin)
    splits = _ranges(kh, plan.kernel_rows_per_split or kh)
    outs = _ranges(shape.c_out, plan.kout)
    sets = _ranges(shape.groups, plan.groups_per_crossbar)
    block_rows, block_cols = shape.c_in * kh * plan.w_i, shape.c_out * plan.w_o
    crossbars, blocks = [], []
    for out_row in output_rows(plan, shape):
        for sigma in range(plan.n_w):
            for g_lo, g_hi in sets:
                for o_range in outs:
                    for c_range in ins:
                        for dy_range in splits:
                            index = first + len(crossbars)
                            crossbars.append(Crossbar(index, name, rows, cols))
                            blocks.extend(
                                ToeplitzBlock(name, index, g, c_range, dy_range, o_range, sigma, out_row,
                                              (g - g_lo) * block_rows, (g - g_lo) * block_cols)
                                for g in range(g_lo, g_hi))
    return crossbars, blocks


def block_size(block: ToeplitzBlock, w_o: int, w_i: int) -> tuple[int, int]:
    """(rows, logical columns) the block occupies."""
    n_c = block.channels[1] - block.channels[0]
    n_dy = block.kernel_rows[1] - block.kernel_rows[0]
    return n_c * n_dy * w_i, (block.out_channels[1] - block.out_channels[0]) * w_o


@lru_cache(maxsize=256)
def _template(n_c: int, n_dy: int, n_o: int, kw: int, w_o: int, w_i: int, s_w: int, d_w: int):
    """Relative (row, col) of every copy, and the relative (c, dy, dx, o) it holds; shape [n_c, n_dy, kw, w_o, n_o]."""
    c, dy, dx, xo, o = np.ix_(np.arange(n_c), np.arange(n_dy), np.arange(kw), np.arange(w_o), np.arange(n_o))
    full = (n_c, n_dy, kw, w_o, n_o)
    row = np.broadcast_to((c * n_dy + dy) * w_i + xo * s_w + dx * d_w, full)
    col = np.broadcast_to(o * w_o + xo, full)
    return row, col, c, dy, dx, o


def block_cells(block: ToeplitzBlock, shape: LayerShape, w_o: int, w_i: int):
    """The placement function: crossbar (row, col) of every weight copy in ``block`` and the matrix
    (row, col) of the group's im2col matrix it holds; arrays of shape ``[n_c, n_dy, k_w, w_o, n_o]``."""
    kh, kw = shape.kernel
    (c_lo, c_hi), (dy_lo, dy_hi), (o_lo, o_hi) = block.channels, block.kernel_rows, block.out_channels
    row, col, c, dy, dx, o = _template(c_hi - c_lo, dy_hi - dy_lo, o_hi - o_lo, kw, w_o, w_i,
                                       shape.stride[1], shape.dilation[1])
    full = row.shape
    m_row = np.broadcast_to(((c_lo + c) * kh + dy_lo + dy) * kw + dx, full)
    m_col = np.broadcast_to(o_lo + o, full)
    return block.xrow + row, block.xcol + col, m_row, m_col


def place(cells: np.ndarray, block: ToeplitzBlock, weight: np.ndarray, shape: LayerShape, w_o: int, w_i: int) -> None:
    """Write ``block``'s weights (``weight`` is the layer's ``[groups, K, N/groups]``) into ``cells[rows, cols]``."""
    r, c, m_row, m_col = block_cells(block, shape, w_o, w_i)
    cells[r, c] = weight[block.group][m_row, m_col]


def read_block(cells: np.ndarray, block: ToeplitzBlock, shape: LayerShape, w_o: int, w_i: int):
    """The inverse for one block: (matrix rows, its ``[w_o, rows, n_o]`` copies) read from ``cells``.

    Matrix rows come sorted, in ``(c, dy, dx)`` order; copy ``x`` is what output column ``x`` uses.
    """
    r, c, m_row, _ = block_cells(block, shape, w_o, w_i)
    n_c, n_dy, kw, _, n_o = r.shape
    values = cells[r, c].transpose(3, 0, 1, 2, 4).reshape(w_o, n_c * n_dy * kw, n_o)
    return m_row[:, :, :, 0, 0].reshape(-1), values


def reconstruct(cells_of, blocks, shape: LayerShape, w_o: int, w_i: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of the placement: ``(weight [groups, K, N/groups], copies found per weight)``.

    ``cells_of(block)`` gives the 2-D cells of the block's crossbar. Raises ``ValueError`` naming the
    crossbar when two copies of one weight differ.
    """
    kh, kw = shape.kernel
    weight = np.zeros((shape.groups, shape.c_in * kh * kw, shape.c_out), dtype=np.float64)
    seen = np.zeros(weight.shape, dtype=np.int64)
    for b in blocks:
        m_rows, values = read_block(cells_of(b), b, shape, w_o, w_i)
        if not (values == values[:1]).all():
            raise ValueError(f"the {w_o} copies in crossbar {b.crossbar} differ")
        o = slice(*b.out_channels)
        target = weight[b.group][m_rows, o]
        first = seen[b.group][m_rows, o] == 0
        if not (first | (target == values[0])).all():
            raise ValueError(f"crossbar {b.crossbar} disagrees with another copy of its weights")
        weight[b.group, m_rows[:, None], np.arange(*b.out_channels)] = values[0]
        seen[b.group, m_rows[:, None], np.arange(*b.out_channels)] += w_o
    return weight, seen


def _verify_blocks(program: XbarProgram) -> None:
    """The program verifier's check of block-Toeplitz layers (XB303), installed below.

    For every width slice and output row copy, the layer's blocks tile the weight tensor
    ``[groups, C_in/groups, k_h, C_out/groups]`` exactly once; the placement function then puts each
    weight ``w_o`` times in its block, so every weight sits ``w_o * n_w * row_copies`` times
    (``plan.copies``) and nowhere else. A pruned layer (``plan.pruned_weights > 0``,
    recombine-pruned-columns) leaves exactly that many weights, all zero, out of every slice.
    """
    table = block_table(program.blocks)
    crossbars = crossbar_table(program.crossbars)
    toeplitz = {name for name, plan in program.plans.items() if plan.strategy in TOEPLITZ}
    stray = sorted(set(table.positions) - toeplitz)
    if stray:
        raise fail(f"blocks name layer(s) {stray} that have no block-Toeplitz plan")
    for name, plan in program.plans.items():
        if name in toeplitz:
            _verify_layer_blocks(program, name, plan, table.of(name), table.fields[table.of(name)], crossbars)


_SITE = [COLUMNS.index(c) for c in ("slice", "out_row")]
_KEY = [COLUMNS.index(c) for c in ("group", "c0", "c1", "d0", "d1", "o0", "o1")]


def _verify_layer_blocks(program: XbarProgram, name: str, plan, positions: np.ndarray, f: np.ndarray,
                         crossbars: CrossbarTable) -> None:
    """One layer's checks; ``f`` holds the fields of its blocks (rows of the block table at ``positions``)."""
    shape = shape_of(program.matrices[name])
    kh = shape.kernel[0]
    rows_used = shape.kernel[0] if plan.kernel_rows_per_split == 0 else plan.kernel_rows_per_split
    if plan.copies != plan.w_o * plan.n_w * plan.row_copies or plan.w_i != shape.input_cols(plan.w_o):
        raise fail(f"plan of {name} is inconsistent: copies {plan.copies}, w_o {plan.w_o}, n_w {plan.n_w}, "
                   f"w_i {plan.w_i}", node=name)
    if plan.n_w * plan.w_o < shape.out_hw[1]:
        raise fail(f"{plan.n_w} slices of {plan.w_o} columns do not cover the {shape.out_hw[1]} output columns "
                   f"of {name}", node=name)
    out_rows = [-1] if plan.row_copies == 1 and plan.strategy == "semi-folded" else list(range(shape.out_hw[0]))
    _check_block_fields(program, name, plan, shape, positions, f, out_rows,
                        (min(plan.kin, shape.c_in), rows_used, min(plan.kout, shape.c_out)), crossbars)
    site_of = f[:, _SITE[0]] * (shape.out_hw[0] + 1) + f[:, _SITE[1]] + 1  # (slice, out_row), ordered
    sites, site, per_site = np.unique(site_of, return_inverse=True, return_counts=True)
    expected = np.array([s * (shape.out_hw[0] + 1) + r + 1 for s in range(plan.n_w) for r in out_rows])
    if sites.size != expected.size or (sites != expected).any():
        missing = [divmod(int(k) - 1, shape.out_hw[0] + 1) for k in np.setdiff1d(expected, sites)[:3]]
        raise fail(f"{name}: slices/rows {missing} hold no blocks", node=name)
    # every slice and row copy holds the same blocks: sort each site's block keys and compare with the first
    order = np.lexsort((*f[:, _KEY[::-1]].T, site.reshape(-1)))
    first = f[order[:per_site[0]]][:, _KEY]
    if (per_site != per_site[0]).any() or \
            (f[order][:, _KEY].reshape(sites.size, per_site[0], len(_KEY)) != first).any(axis=(1, 2)).any():
        bad = np.flatnonzero(per_site != per_site[0])
        if bad.size == 0:
            held = f[order][:, _KEY].reshape(sites.size, per_site[0], len(_KEY))
            bad = np.flatnonzero((held != first).any(axis=(1, 2)))
        s_bad, r_bad = divmod(int(sites[bad[0]]) - 1, shape.out_hw[0] + 1)
        s0, r0 = divmod(int(sites[0]) - 1, shape.out_hw[0] + 1)
        raise fail(f"{name}: slice {s_bad}, row {r_bad} holds other blocks than slice {s0}, row {r0}", node=name)
    first_site = divmod(int(sites[0]) - 1, shape.out_hw[0] + 1)
    count = np.zeros((shape.groups, shape.c_in, kh, shape.c_out), dtype=np.int32)
    kw = shape.kernel[1]
    weight = program.matrices[name].weight.reshape(shape.groups, shape.c_in, kh, kw, shape.c_out)
    zero = (weight == 0).all(3)  # kernel rows W[o, c, dy, :] a crossbar need not hold (plan.pruned_weights)
    for g, c0, c1, d0, d1, o0, o1 in first.tolist():
        count[g, c0:c1, d0:d1, o0:o1] += 1
    absent = count == 0
    if int(absent.sum()) * kw != plan.pruned_weights:
        raise fail(f"{name}: {int(absent.sum()) * kw} weights are held by no crossbar in slice {first_site[0]}, "
                   f"the plan says {plan.pruned_weights} are pruned", node=name)
    if not ((count == 1) | (absent & zero)).all():
        g, c, dy, o = np.argwhere(~((count == 1) | (absent & zero)))[0]
        raise fail(f"weight W[{o}, {c}, {dy}, :] of group {g} of {name} is held {count[g, c, dy, o]} times "
                   f"in slice {first_site[0]}" + (f", row {first_site[1]}" if first_site[1] >= 0 else "")
                   + " (expected once)", node=name)


def _check_block_fields(program: XbarProgram, name: str, plan, shape, positions, f, out_rows, limits,
                        crossbars: CrossbarTable) -> None:
    """Every block inside its plan, its ranges and its crossbar; no two blocks of a crossbar overlap (vectorised)."""
    if not len(f):
        return
    xb, group, sl, out_row, c0, c1, d0, d1, o0, o1, xrow, xcol = f.T
    in_range = (xb >= 0) & (xb < len(program.crossbars))
    for k in np.flatnonzero(~in_range)[:1]:
        raise fail(f"block of {name} names crossbar {xb[k]}, which does not exist", node=name)
    in_plan = (crossbars.layer[xb] == name) & (group >= 0) & (group < shape.groups) & (sl >= 0) & (sl < plan.n_w) \
        & np.isin(out_row, out_rows)
    for k in np.flatnonzero(~in_plan)[:1]:
        b, x = program.blocks[positions[k]], program.crossbars[xb[k]]
        raise fail(f"block of {name} on crossbar {x.id} names group {b.group}, slice {b.slice}, "
                   f"row {b.out_row} outside its plan", crossbar=x.id)
    ok = np.ones(len(f), dtype=bool)
    for lo, hi, k, n in ((c0, c1, limits[0], shape.c_in), (d0, d1, limits[1], shape.kernel[0]),
                         (o0, o1, limits[2], shape.c_out)):
        ok &= (lo >= 0) & (lo < hi) & (hi <= n) & (hi - lo <= k)
    for k in np.flatnonzero(~ok)[:1]:
        b, x = program.blocks[positions[k]], program.crossbars[xb[k]]
        raise fail(f"block of {name} on crossbar {x.id} has ranges {(b.channels, b.kernel_rows, b.out_channels)} "
                   f"outside Kin/Kout/split {limits}", crossbar=x.id)
    h, w = (c1 - c0) * (d1 - d0) * plan.w_i, (o1 - o0) * plan.w_o
    fits = (xrow >= 0) & (xcol >= 0) & (xrow + h <= crossbars.rows[xb]) & (xcol + w <= crossbars.cols[xb])
    for k in np.flatnonzero(~fits)[:1]:
        x = program.crossbars[xb[k]]
        raise fail(f"a {h[k]}x{w[k]} block at ({xrow[k]}, {xcol[k]}) does not fit crossbar {x.id} "
                   f"({x.rows}x{x.cols})", crossbar=x.id)
    shared, counts = np.unique(xb, return_counts=True)
    for index in shared[counts > 1]:  # only crossbars holding several blocks can overlap
        rects = [(xrow[k], xrow[k] + h[k], xcol[k], xcol[k] + w[k]) for k in np.flatnonzero(xb == index)]
        for (r0, r1, q0, q1), (s0, s1, e0, e1) in combinations(rects, 2):
            if r0 < s1 and s0 < r1 and q0 < e1 and e0 < q1:
                raise fail(f"blocks overlap on crossbar {program.crossbars[index].id}",
                           crossbar=program.crossbars[index].id)


install_block_verifier(_verify_blocks)
