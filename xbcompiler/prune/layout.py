"""Crossbar layouts of pruned layers: recombined output columns (semi-folded, background §1.3 and 1.8) and
compacted rows (fully-folded, CRIMP's kernel-group and crossbar pruning, background §3.3).

Pruning is read from the weights, so both rewrites are exact: only zero weights leave the crossbars.

- Recombination: a slab ``(o, a)`` (output channel ``o``, input group ``a``) whose weights are all zero
  needs no crossbar column. For each (row copy, width slice, conv group, input group, kernel-row
  split) the surviving output channels are re-packed densely, ``Kout`` per crossbar in their original
  order; each crossbar holds one block per run of consecutive channels, so the placement function,
  the verifier and the emulator's readers apply unchanged. A layer whose conv groups share crossbars
  (block-diagonal packing, e.g. depthwise) drops its all-zero conv groups and re-packs the others.
- Compaction: in each column tile of the im2col matrix, the rows with a nonzero weight in the tile's
  columns (a kernel group keeps or drops its ``k_h k_w`` rows together) are packed densely, ``R`` per
  crossbar, one slice per run of consecutive rows; the crossbar's row -> input-row table is a static
  gather and a tile whose rows are all zero disappears with its partial sum.

The plan records the weights no crossbar holds (``pruned_weights``) and the new counts.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from math import ceil

import numpy as np

from ..ir.matrix import LogicalMatrix
from ..ir.program import Crossbar, MappingPlan, SliceAssignment, ToeplitzBlock, XbarProgram
from ..ir.verify_toeplitz import TOEPLITZ
from ..mapping.placement import output_rows
from ..mapping.plan import ArraySpec, accumulation_crossbars
from ..mapping.shape import LayerShape, shape_of


def _ranges(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _runs(channels: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive channels: ``(position of the first, lo, hi)``."""
    out, start = [], 0
    for k in range(1, len(channels) + 1):
        if k == len(channels) or channels[k] != channels[k - 1] + 1:
            out.append((start, channels[start], channels[k - 1] + 1))
            start = k
    return out


def alive_slabs(m: LogicalMatrix, shape: LayerShape, kin: int) -> np.ndarray:
    """``bool [groups, G_in, C_out/groups]``: slab ``(o, a)`` holds a nonzero weight."""
    kh, kw = shape.kernel
    nonzero = (m.weight.reshape(shape.groups, shape.c_in, kh * kw, shape.c_out) != 0).any(2)
    g_in = ceil(shape.c_in / kin)
    padded = np.zeros((shape.groups, g_in * kin, shape.c_out), dtype=bool)
    padded[:, :shape.c_in] = nonzero
    return padded.reshape(shape.groups, g_in, kin, shape.c_out).any(2)


def recombine_layer(m: LogicalMatrix, plan: MappingPlan, rows: int, cols: int, first: int,
                    m_c: int) -> tuple[list[Crossbar], list[ToeplitzBlock], MappingPlan]:
    """The crossbars and blocks of one semi-folded/fully-unfolded layer with pruned columns re-packed."""
    shape = shape_of(m)
    kh = shape.kernel[0]
    alive = alive_slabs(m, shape, plan.kin)
    ins = _ranges(shape.c_in, plan.kin)
    splits = _ranges(kh, plan.kernel_rows_per_split or kh)
    crossbars: list[Crossbar] = []
    blocks: list[ToeplitzBlock] = []
    for out_row in output_rows(plan, shape):
        for sigma in range(plan.n_w):
            for g in range(shape.groups):
                for a, c_range in enumerate(ins):
                    survivors = np.flatnonzero(alive[g, a]).tolist()
                    for lo in range(0, len(survivors), plan.kout):
                        chunk = survivors[lo:lo + plan.kout]
                        for dy_range in splits:
                            index = first + len(crossbars)
                            crossbars.append(Crossbar(index, m.name, rows, cols))
                            blocks += [ToeplitzBlock(m.name, index, g, c_range, dy_range, (o_lo, o_hi), sigma,
                                                     out_row, 0, pos * plan.w_o) for pos, o_lo, o_hi in _runs(chunk)]
    return crossbars, blocks, _recombined_plan(plan, shape, alive, ins, len(crossbars), rows, cols, m_c)


def alive_groups(m: LogicalMatrix, shape: LayerShape) -> np.ndarray:
    """``bool [groups]``: conv group ``g`` holds a nonzero weight."""
    return (m.weight.reshape(shape.groups, -1) != 0).any(1)


def repack_groups_layer(m: LogicalMatrix, plan: MappingPlan, rows: int, cols: int, first: int,
                        m_c: int) -> tuple[list[Crossbar], list[ToeplitzBlock], MappingPlan]:
    """The crossbars and blocks of a layer whose conv groups are packed block-diagonally
    (``groups_per_crossbar > 1``) with its all-zero conv groups left out: the survivors are re-packed
    ``groups_per_crossbar`` to a crossbar in their original order."""
    shape = shape_of(m)
    per = plan.groups_per_crossbar
    survivors = np.flatnonzero(alive_groups(m, shape)).tolist()
    block_rows, block_cols = shape.c_in * shape.kernel[0] * plan.w_i, shape.c_out * plan.w_o
    crossbars: list[Crossbar] = []
    blocks: list[ToeplitzBlock] = []
    for out_row in output_rows(plan, shape):
        for sigma in range(plan.n_w):
            for lo in range(0, len(survivors), per):
                index = first + len(crossbars)
                crossbars.append(Crossbar(index, m.name, rows, cols))
                blocks += [ToeplitzBlock(m.name, index, g, (0, shape.c_in), (0, shape.kernel[0]), (0, shape.c_out),
                                         sigma, out_row, pos * block_rows, pos * block_cols)
                           for pos, g in enumerate(survivors[lo:lo + per])]
    alive = np.zeros((shape.groups, 1, shape.c_out), dtype=bool)
    alive[survivors] = True
    new_plan = _recombined_plan(plan, shape, alive, [(0, shape.c_in)], len(crossbars), rows, cols, m_c)
    per_logical = min(rows // block_rows, cols * m_c // block_cols)
    logical = -(-len(survivors) // per_logical) * plan.n_w * plan.row_copies
    return crossbars, blocks, dataclasses.replace(new_plan, logical_crossbars=logical)


def _recombined_plan(plan: MappingPlan, shape: LayerShape, alive: np.ndarray, ins, n_crossbars: int,
                     rows: int, cols: int, m_c: int) -> MappingPlan:
    """``plan`` with the counts of the recombined layout (background §1.8; docs/pruning.md)."""
    kh, kw = shape.kernel
    sizes = np.array([hi - lo for lo, hi in ins])
    pruned = int(((~alive) * sizes[None, :, None]).sum()) * kh * kw
    fanin = alive.sum(1) * plan.kernel_row_splits  # [groups, C_out/groups]: partial sums per output value
    max_fanin = int(fanin.max(initial=0))
    per_copy = plan.kernel_row_splits * plan.n_w * plan.row_copies
    kout_logical = min(shape.c_out, cols * m_c // plan.w_o)
    outputs_per_phase = shape.groups * shape.c_out * plan.n_w * plan.w_o * plan.row_copies
    return dataclasses.replace(
        plan, crossbars=n_crossbars, pruned_weights=pruned, partial_sum_fanin=max_fanin,
        logical_crossbars=int(np.ceil(alive.sum(2) / kout_logical).sum()) * per_copy,
        accumulation_crossbars=accumulation_crossbars(outputs_per_phase, max_fanin, ArraySpec(rows, cols)),
        partial_sum_additions=int(np.maximum(fanin - 1, 0).sum()) * shape.out_hw[0] * shape.out_hw[1],
        input_words=_input_words(plan, shape, alive, ins),
        utilisation=(shape.weights - pruned) * plan.copies / max(1, n_crossbars * rows * cols))


def _input_words(plan: MappingPlan, shape: LayerShape, alive: np.ndarray, ins) -> int:
    """Input values driven onto crossbar rows per image: each crossbar drives its rows once per phase."""
    kh = shape.kernel[0]
    per_group = np.ceil(alive.sum(2) / plan.kout)  # [groups, G_in] crossbars of one slice and split set
    rows = sum(int(per_group[:, a].sum()) * (hi - lo) for a, (lo, hi) in enumerate(ins)) * kh * plan.w_i
    return rows * plan.n_w * shape.out_hw[0]


def compact_layer(m: LogicalMatrix, plan: MappingPlan, rows: int, cols: int, first: int,
                  m_c: int) -> tuple[list[Crossbar], list[SliceAssignment], MappingPlan]:
    """The crossbars and slices of one ungrouped fully-folded layer with pruned rows compacted."""
    weight = m.weight[0]
    n_cols = weight.shape[1]
    crossbars: list[Crossbar] = []
    slices: list[SliceAssignment] = []
    for c0, c1 in _ranges(n_cols, cols):
        alive = np.flatnonzero((weight[:, c0:c1] != 0).any(1)).tolist()
        for lo in range(0, len(alive), rows):
            index = first + len(crossbars)
            crossbars.append(Crossbar(index, m.name, rows, cols))
            slices += [SliceAssignment(m.name, index, 0, r0, r1, c0, c1, pos, 0)
                       for pos, r0, r1 in _runs(alive[lo:lo + rows])]
    return crossbars, slices, _compacted_plan(plan, m, slices, len(crossbars), rows, cols, m_c)


def _compacted_plan(plan: MappingPlan, m: LogicalMatrix, slices, n_crossbars: int, rows: int, cols: int,
                    m_c: int) -> MappingPlan:
    weight = m.weight[0]
    fanin = np.zeros(weight.shape[1], dtype=np.int64)
    for s in {(s.crossbar, s.col_lo, s.col_hi) for s in slices}:
        fanin[s[1]:s[2]] += 1
    held = sum((s.row_hi - s.row_lo) * (s.col_hi - s.col_lo) for s in slices)
    logical = sum(-(-int((weight[:, c0:c1] != 0).any(1).sum()) // rows)
                  for c0, c1 in _ranges(weight.shape[1], cols * m_c))
    pixels = m.cycles
    return dataclasses.replace(
        plan, crossbars=n_crossbars, pruned_weights=int(weight.size - held), row_tiles=int(fanin.max(initial=0)),
        partial_sum_fanin=int(fanin.max(initial=0)), logical_crossbars=logical,
        accumulation_crossbars=accumulation_crossbars(weight.shape[1], int(fanin.max(initial=0)), ArraySpec(rows, cols)),
        partial_sum_additions=int(np.maximum(fanin - 1, 0).sum()) * pixels,
        input_words=sum(s.row_hi - s.row_lo for s in slices) * plan.phases,
        utilisation=held / max(1, n_crossbars * rows * cols))


def compact(program: XbarProgram, target) -> tuple[XbarProgram, dict]:
    """``program`` with every ungrouped fully-folded layer that has all-zero rows in a column tile
    compacted; and a per-layer report."""
    def eligible(m, plan):
        return plan.strategy == "fully-folded" and m.weight.shape[0] == 1 and _has_zero_rows(m, target)

    return _rewrite(program, target, eligible, compact_layer)


def _has_zero_rows(m: LogicalMatrix, target) -> bool:
    weight = m.weight[0]
    return any(not (weight[:, c0:c1] != 0).any(1).all() for c0, c1 in _ranges(weight.shape[1], target.logical_cols))


def recombine(program: XbarProgram, target) -> tuple[XbarProgram, dict]:
    """``program`` with every block-Toeplitz layer that has pruned slabs (or, packed layers, all-zero conv
    groups) re-packed; and a per-layer report."""
    def eligible(m, plan):
        if plan.strategy not in TOEPLITZ:
            return False
        if plan.groups_per_crossbar > 1:
            return not alive_groups(m, shape_of(m)).all()
        return not alive_slabs(m, shape_of(m), plan.kin).all()

    def rewrite(m, plan, *args):
        return (repack_groups_layer if plan.groups_per_crossbar > 1 else recombine_layer)(m, plan, *args)

    return _rewrite(program, target, eligible, rewrite)


def _rewrite(program: XbarProgram, target, eligible, rewrite_layer) -> tuple[XbarProgram, dict]:
    """Rewrite the eligible layers (not yet pruned) with ``rewrite_layer``; renumber every crossbar."""
    crossbars: list[Crossbar] = []
    blocks: list[ToeplitzBlock] = []
    slices: list[SliceAssignment] = []
    plans = dict(program.plans)
    report = {}
    by_layer, blocks_of, slices_of = defaultdict(list), defaultdict(list), defaultdict(list)
    for x in program.crossbars:
        by_layer[x.layer].append(x)
    for b in program.blocks:
        blocks_of[b.crossbar].append(b)
    for sl in program.slices:
        slices_of[sl.crossbar].append(sl)
    for name in (n.target for n in program.nodes if n.op == "xbar"):
        m, plan, xs = program.matrices[name], program.plans[name], by_layer[name]
        if xs and plan.pruned_weights == 0 and eligible(m, plan):
            new_x, items, new_plan = rewrite_layer(m, plan, xs[0].rows, xs[0].cols, len(crossbars), target.m_c)
            crossbars += new_x
            blocks += [i for i in items if isinstance(i, ToeplitzBlock)]
            slices += [i for i in items if isinstance(i, SliceAssignment)]
            plans[name] = new_plan
            report[name] = {"crossbars_before": plan.crossbars, "crossbars": new_plan.crossbars,
                            "pruned_weights": new_plan.pruned_weights,
                            "partial_sum_fanin": new_plan.partial_sum_fanin}
            continue
        for x in xs:  # unchanged layer: renumbered
            new = x._replace(index=len(crossbars))
            crossbars.append(new)
            blocks += [b._replace(crossbar=new.index) for b in blocks_of[x.index]]
            slices += [sl._replace(crossbar=new.index) for sl in slices_of[x.index]]
    program = program.replace(crossbars=tuple(crossbars), blocks=tuple(blocks), slices=tuple(slices), plans=plans,
                              placed=False)
    return program, report


def relayout(pass_name: str, pack, program: XbarProgram, ctx) -> XbarProgram:
    """Run ``pack(program, target) -> (program, layer report)`` for a pass; report crossbars before/after."""
    before = len(program.crossbars)
    program, layers = pack(program, ctx.target)
    ctx.report[pass_name] = {"crossbars_before": before, "crossbars": len(program.crossbars), "layers": layers}
    return program
