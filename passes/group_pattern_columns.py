"""``group-pattern-columns``: pattern-pruned layers on fully-folded crossbars (PCNN, background §4.3).

After pattern pruning (:mod:`xbcompiler.prune.pattern`) every kernel ``W[o, i]`` keeps the positions of one
pattern of a small set. A crossbar row ``(i, dy, dx)`` can leave a crossbar when no column of that
crossbar has a weight there, so the rows of input channel ``i`` drop from ``kh kw`` to ``n`` exactly when
the crossbar's columns share the pattern of channel ``i``. Per layer this pass

1. reads the patterns from the weights: ``n`` = the most non-zeros of a kernel, the table = the distinct
   kernel supports with ``n`` non-zeros, most frequent first;
2. groups the output channels into column tiles of ``C`` (logical columns per crossbar), greedily: a
   tile starts at the lowest free channel and adds the free channel that adds the fewest rows (the sum
   over input channels of the size of the union of the kernel supports), ties to the lower index;
3. per tile, gives each input channel the rows of the first pattern of the table that contains the union
   of its columns' supports (so a kernel with a weight rounded to zero still shares its pattern), else of
   that union, appended to the table; and packs whole input channels, ``R`` rows per crossbar, in
   channel order;
4. places each crossbar's matrix rows x columns as slices, one per (row run, column run): the crossbar
   holds its columns in any order, each output adds only the partial sums of its tile's crossbars
   (the routing tables of docs/netlist.md), so the output channels come out in their own order and
   the layer computes exactly what it did: only zero weights leave the crossbars.

A layer is rewritten only when this needs fewer crossbars than it has; the table goes into the
program's provenance (``group-pattern-columns.layers.<name>.patterns``), from which the emitter writes
the layer's ``patterns`` and each crossbar's ``spm`` (one pattern index per input channel it holds).
Grouped, non-convolutional, 1x1 and already pruned layers are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from xbcompiler.ir.matrix import LogicalMatrix
from xbcompiler.ir.program import Crossbar, MappingPlan, SliceAssignment, XbarProgram
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.prune.layout import _compacted_plan, _rewrite, _runs
from xbcompiler.prune.pattern import group_columns


@dataclass
class PatternLayout:
    """The pattern layout of one layer: the row-set table and, per crossbar, its columns and channels."""

    patterns: list[tuple[int, ...]]
    """Kernel positions ``dy * kw + dx`` of each row set (the inferred patterns first, then unions)."""
    tiles: list[list[int]] = field(default_factory=list)
    """Output channels (matrix columns) of each column tile, ascending."""
    crossbars: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)
    """Per crossbar: its tile and its ``(input channel, pattern index)`` entries in row order."""

    def rows(self, entries: list[tuple[int, int]], kk: int) -> list[int]:
        """The matrix rows a crossbar with these SPM entries holds, in crossbar-row order."""
        return [i * kk + p for i, k in entries for p in self.patterns[k]]


def kernel_supports(weight: np.ndarray, c_in: int, kk: int) -> np.ndarray:
    """``bool [N, C_in, kk]``: which positions of kernel ``(o, i)`` are non-zero (``weight`` is ``[K, N]``)."""
    return np.moveaxis(weight.reshape(c_in, kk, -1) != 0, -1, 0)


def infer_patterns(support: np.ndarray) -> list[tuple[int, ...]]:
    """The pattern table read from kernel supports ``bool [..., kk]``: the distinct supports with the most
    non-zeros, most frequent first (ties to the lower code ``sum 2**position``)."""
    kk = support.shape[-1]
    flat = support.reshape(-1, kk)
    counts = flat.sum(-1)
    n = int(counts.max(initial=0))
    if n == 0:
        return []
    codes = (flat[counts == n].astype(np.int64) << np.arange(kk, dtype=np.int64)).sum(-1)  # kk <= 62
    full, freq = np.unique(codes, return_counts=True)
    order = sorted(range(len(full)), key=lambda j: (-int(freq[j]), int(full[j])))
    return [tuple(p for p in range(kk) if int(full[j]) >> p & 1) for j in order]


def cover(union: np.ndarray, table: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The row set of positions ``union`` (``bool [kk]``): the first (most frequent) pattern containing it,
    else the union itself."""
    positions = tuple(np.flatnonzero(union).tolist())
    held = set(positions)
    return next((p for p in table if held <= set(p)), positions)


def pattern_layout(m: LogicalMatrix, rows: int, cols: int) -> PatternLayout | None:
    """The pattern layout of an ungrouped conv layer, or None when its kernels have no pattern to exploit."""
    groups, K, _ = m.weight.shape
    kh, kw = m.geometry.kernel
    kk = kh * kw
    if groups != 1 or m.kind not in ("conv1d", "conv2d") or kk <= 1 or kk > rows or kk > 62:
        return None
    support = kernel_supports(m.weight[0], K // kk, kk)  # [N, C_in, kk]
    patterns = infer_patterns(support)
    if not patterns or len(patterns[0]) >= kk:
        return None
    layout = PatternLayout(list(patterns), group_columns(support, cols))
    index = {p: k for k, p in enumerate(patterns)}
    for t, tile in enumerate(layout.tiles):
        union = support[tile].any(0)  # [C_in, kk]
        entries: list[tuple[int, int]] = []
        used = 0
        for i in np.flatnonzero(union.any(1)).tolist():
            positions = cover(union[i], patterns)
            if positions not in index:
                index[positions] = len(layout.patterns)
                layout.patterns.append(positions)
            if entries and used + len(positions) > rows:
                layout.crossbars.append((t, entries))
                entries, used = [], 0
            entries.append((i, index[positions]))
            used += len(positions)
        if entries:
            layout.crossbars.append((t, entries))
    return layout


def layout_records(layout: PatternLayout, name: str, kk: int, rows: int, cols: int,
                   first: int) -> tuple[list[Crossbar], list[SliceAssignment]]:
    """The crossbars and slices of a pattern layout (indices from ``first``)."""
    crossbars: list[Crossbar] = []
    slices: list[SliceAssignment] = []
    for t, entries in layout.crossbars:
        index = first + len(crossbars)
        crossbars.append(Crossbar(index, name, rows, cols))
        matrix_rows = layout.rows(entries, kk)
        for r_pos, r0, r1 in _runs(matrix_rows):
            for c_pos, c0, c1 in _runs(layout.tiles[t]):
                slices.append(SliceAssignment(name, index, 0, r0, r1, c0, c1, r_pos, c_pos))
    return crossbars, slices


def group_patterns(program: XbarProgram, target) -> tuple[XbarProgram, dict]:
    """``program`` with every fully-folded pattern layer laid out by :func:`pattern_layout` when that saves
    crossbars; and a per-layer report (with each layer's pattern table)."""
    R, C = target.crossbar.rows, target.logical_cols
    layouts: dict[str, PatternLayout] = {}

    def eligible(m: LogicalMatrix, plan: MappingPlan) -> bool:
        if plan.strategy != "fully-folded":
            return False
        layout = pattern_layout(m, R, C)
        if layout is None or len(layout.crossbars) >= plan.crossbars:
            return False
        layouts[m.name] = layout
        return True

    def rewrite(m: LogicalMatrix, plan: MappingPlan, rows: int, cols: int, first: int, m_c: int):
        kh, kw = m.geometry.kernel
        xs, ss = layout_records(layouts[m.name], m.name, kh * kw, rows, cols, first)
        return xs, ss, _compacted_plan(plan, m, ss, len(xs), rows, cols, m_c)

    program, report = _rewrite(program, target, eligible, rewrite)
    for name in report:
        report[name]["patterns"] = [list(p) for p in layouts[name].patterns]
    return program, report


@dataclass(frozen=True)
class GroupPatternColumnsPass(Pass):
    """Pattern-pruned fully-folded layers: output channels grouped by pattern, rows compacted per crossbar.

    Exact (only zero weights leave the crossbars); writes each rewritten layer's pattern table into the
    provenance, from which the netlist's ``patterns`` and per-crossbar ``spm`` follow (docs/netlist.md).
    """

    name: ClassVar[str] = "group-pattern-columns"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})
    establishes: ClassVar[frozenset[str]] = frozenset({"compacted"})
    invalidates: ClassVar[frozenset[str]] = frozenset({"placed"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        before = len(program.crossbars)
        program, layers = group_patterns(program, ctx.target)
        ctx.report[self.name] = {"crossbars_before": before, "crossbars": len(program.crossbars),
                                 "layers": {k: {f: v for f, v in r.items() if f != "patterns"} for k, r in layers.items()}}
        tables = {name: {"patterns": r["patterns"], "crossbars_before": r["crossbars_before"],
                         "crossbars": r["crossbars"]} for name, r in layers.items()}
        return program.replace(provenance={**program.provenance, self.name: {"layers": tables}})
