"""Verifier of block-Toeplitz layers (semi-folded, fully-unfolded): plan, capacity, overlap, coverage.

For every width slice and output row copy, the layer's blocks tile the weight tensor
``[groups, C_in/groups, k_h, C_out/groups]`` exactly once; the placement function then puts each weight
``w_o`` times in its block, so every weight sits ``w_o * n_w * row_copies`` times (``plan.copies``) and
nowhere else. A pruned layer (``plan.pruned_weights > 0``, recombine-pruned-columns) leaves exactly that
many weights, all zero, out of every slice.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np

from ..mapping.placement import block_size
from ..mapping.shape import shape_of
from .program import XbarProgram, fail

TOEPLITZ = ("semi-folded", "fully-unfolded")


def verify_blocks(program: XbarProgram) -> None:
    by_layer = defaultdict(list)
    for b in program.blocks:
        by_layer[b.layer].append(b)
    for name, plan in program.plans.items():
        if plan.strategy in TOEPLITZ:
            _verify_layer(program, name, plan, by_layer.pop(name, []))
    if by_layer:
        raise fail(f"blocks name layer(s) {sorted(by_layer)} that have no block-Toeplitz plan")


def _verify_layer(program: XbarProgram, name: str, plan, blocks) -> None:
    shape = shape_of(program.matrices[name])
    kh = shape.kernel[0]
    rows_used = shape.kernel[0] if plan.kernel_rows_per_split == 0 else plan.kernel_rows_per_split
    if plan.copies != plan.w_o * plan.n_w * plan.row_copies or plan.w_i != shape.input_cols(plan.w_o):
        raise fail(f"plan of {name} is inconsistent: copies {plan.copies}, w_o {plan.w_o}, n_w {plan.n_w}, "
                   f"w_i {plan.w_i}", node=name)
    if plan.n_w * plan.w_o < shape.out_hw[1]:
        raise fail(f"{plan.n_w} slices of {plan.w_o} columns do not cover the {shape.out_hw[1]} output columns "
                   f"of {name}", node=name)
    out_rows = {-1} if plan.row_copies == 1 and plan.strategy == "semi-folded" else set(range(shape.out_hw[0]))
    on_crossbar = defaultdict(list)
    tiling = defaultdict(list)
    for b in blocks:
        x = program.crossbars[b.crossbar]
        ranges = (b.channels, b.kernel_rows, b.out_channels)
        limits = (min(plan.kin, shape.c_in), rows_used, min(plan.kout, shape.c_out))
        bounds = (shape.c_in, kh, shape.c_out)
        if x.layer != name or not 0 <= b.group < shape.groups or not 0 <= b.slice < plan.n_w \
                or b.out_row not in out_rows:
            raise fail(f"block of {name} on crossbar {x.id} names group {b.group}, slice {b.slice}, "
                       f"row {b.out_row} outside its plan", crossbar=x.id)
        if any(not (0 <= lo < hi <= n and hi - lo <= k) for (lo, hi), k, n in zip(ranges, limits, bounds)):
            raise fail(f"block of {name} on crossbar {x.id} has ranges {ranges} outside Kin/Kout/split "
                       f"{limits}", crossbar=x.id)
        h, w = block_size(b, plan.w_o, plan.w_i)
        if b.xrow < 0 or b.xcol < 0 or b.xrow + h > x.rows or b.xcol + w > x.cols:
            raise fail(f"a {h}x{w} block at ({b.xrow}, {b.xcol}) does not fit crossbar {x.id} "
                       f"({x.rows}x{x.cols})", crossbar=x.id)
        on_crossbar[b.crossbar].append((b.xrow, b.xrow + h, b.xcol, b.xcol + w))
        tiling[(b.slice, b.out_row)].append(b)
    for index, rects in on_crossbar.items():
        for (r0, r1, c0, c1), (s0, s1, d0, d1) in combinations(rects, 2):
            if r0 < s1 and s0 < r1 and c0 < d1 and d0 < c1:
                raise fail(f"blocks overlap on crossbar {program.crossbars[index].id}",
                           crossbar=program.crossbars[index].id)
    expected = {(s, r) for s in range(plan.n_w) for r in out_rows}
    if set(tiling) != expected:
        missing = sorted(expected - set(tiling))[:3]
        raise fail(f"{name}: slices/rows {missing} hold no blocks", node=name)
    count = np.zeros((shape.groups, shape.c_in, kh, shape.c_out), dtype=np.int32)
    kw = shape.kernel[1]
    weight = program.matrices[name].weight.reshape(shape.groups, shape.c_in, kh, kw, shape.c_out)
    zero = (weight == 0).all(3)  # kernel rows W[o, c, dy, :] a crossbar need not hold (plan.pruned_weights)
    for key, group in tiling.items():
        count[...] = 0
        for b in group:
            count[b.group, slice(*b.channels), slice(*b.kernel_rows), slice(*b.out_channels)] += 1
        absent = count == 0
        if int(absent.sum()) * kw != plan.pruned_weights:
            raise fail(f"{name}: {int(absent.sum()) * kw} weights are held by no crossbar in slice {key[0]}, the plan "
                       f"says {plan.pruned_weights} are pruned", node=name)
        if not ((count == 1) | (absent & zero)).all():
            g, c, dy, o = np.argwhere(~((count == 1) | (absent & zero)))[0]
            raise fail(f"weight W[{o}, {c}, {dy}, :] of group {g} of {name} is held {count[g, c, dy, o]} times "
                       f"in slice {key[0]}" + (f", row {key[1]}" if key[1] >= 0 else "") + " (expected once)",
                       node=name)
