"""Netlist fields of the mapping family: plan, schedule, block-Toeplitz crossbars and their cells.

Block-Toeplitz crossbars (semi-folded, fully-unfolded) list their blocks; their cells come from the
placement function. Crossbars that differ only in ``out_row`` (the row copies of fully-unfolded) hold
the same cells and share one entry of the layer's cells array (``cells_index``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..ir.program import MappingPlan, XbarProgram
from ..ir.verify_toeplitz import TOEPLITZ
from ..mapping.placement import block_size, place
from ..mapping.shape import LayerShape, shape_of


def block_record(b, plan: MappingPlan, shape: LayerShape) -> dict:
    """What the emulator needs of one block (docs/netlist.md)."""
    lo = b.slice * plan.w_o
    first_col = lo * shape.stride[1] - shape.padding[1]
    return {"group": b.group, "channels": list(b.channels), "kernel_rows": list(b.kernel_rows),
            "out_channels": list(b.out_channels), "slice": b.slice, "out_row": b.out_row,
            "pixels": [lo, min(shape.out_hw[1], lo + plan.w_o)], "in_cols": [first_col, first_col + plan.w_i],
            "w_o": plan.w_o, "w_i": plan.w_i, "at": [b.xrow, b.xcol]}


class ToeplitzCells:
    """The cells arrays and crossbar records of a program's block-Toeplitz layers."""

    def __init__(self, program: XbarProgram, target):
        self.records: dict[int, dict] = {}
        self.arrays: dict[str, np.ndarray] = {}
        blocks_of = defaultdict(list)
        for b in program.blocks:
            blocks_of[b.crossbar].append(b)
        by_layer = defaultdict(list)
        for x in program.crossbars:
            by_layer[x.layer].append(x)
        for name, plan in program.plans.items():
            if plan.strategy in TOEPLITZ:
                self._layer(program.matrices[name], plan, by_layer[name], blocks_of, target)

    def _layer(self, m, plan: MappingPlan, xbars, blocks_of, target) -> None:
        shape = shape_of(m)
        content: dict[tuple, int] = {}
        first_of: list[int] = []
        for x in xbars:
            key = tuple((b.group, b.channels, b.kernel_rows, b.out_channels, b.slice, b.xrow, b.xcol)
                        for b in blocks_of[x.index])
            if key not in content:
                content[key] = len(first_of)
                first_of.append(x.index)
            sizes = [(b.xrow + h, b.xcol + w) for b in blocks_of[x.index] for h, w in [block_size(b, plan.w_o, plan.w_i)]]
            self.records[x.index] = {
                "cells_index": content[key], "rows_used": max(r for r, _ in sizes), "cols_used": max(c for _, c in sizes),
                "blocks": [block_record(b, plan, shape) for b in blocks_of[x.index]]}
        cells = np.zeros((len(first_of), target.crossbar.rows, target.logical_cols), dtype=np.float32)
        pattern: dict[tuple, int] = {}  # the slices of one block pattern hold identical cells
        for k, index in enumerate(first_of):
            key = tuple((b.group, b.channels, b.kernel_rows, b.out_channels, b.xrow, b.xcol) for b in blocks_of[index])
            if key in pattern:
                cells[k] = cells[pattern[key]]
                continue
            pattern[key] = k
            for b in blocks_of[index]:
                place(cells[k], b, m.weight, shape, plan.w_o, plan.w_i)
        self.arrays[m.name] = cells


def layer_fields(plan: MappingPlan, shape: LayerShape) -> dict:
    """The plan's keys of a ``layers`` entry, the search's runners-up and the layer's schedule."""
    return {
        "kin": plan.kin, "kout": plan.kout, "w_o": plan.w_o, "w_i": plan.w_i, "n_w": plan.n_w,
        "kernel_row_splits": plan.kernel_row_splits, "row_copies": plan.row_copies, "phases": plan.phases,
        "partial_sum_fanin": plan.partial_sum_fanin, "replicas": plan.replicas,
        "crossbars_with_replicas": plan.crossbars_with_replicas, "logical_crossbars": plan.logical_crossbars,
        "accumulation_crossbars": plan.accumulation_crossbars, "partial_sum_additions": plan.partial_sum_additions,
        "input_words": plan.input_words, "utilisation": round(plan.utilisation, 6), "cost": plan.cost,
        "tile_traffic_bits": plan.tile_traffic_bits,
        "alternatives": [a.to_dict() for a in plan.alternatives], "schedule": schedule(plan, shape),
    }


def schedule(plan: MappingPlan, shape: LayerShape) -> dict:
    """The streaming rule of one layer (docs/mapping.md, "Schedule").

    Phase ``t`` computes output row ``y = t`` (``order = "row"``), output pixel ``divmod(t, W')``
    (``"pixel"``, fully-folded) or every row at once (``"all"``, row copy ``r`` computes row ``r``).
    A crossbar holding kernel rows ``dy`` receives input rows ``y * stride - first + dy * dilation``
    (``rows``) and, for width slice ``s``, input columns ``s * step - pad + [0, width)`` (``cols``).
    """
    order = {"fully-folded": "pixel", "semi-folded": "row", "fully-unfolded": "all"}[plan.strategy]
    step = plan.w_o * shape.stride[1] if plan.strategy != "fully-folded" else shape.stride[1]
    return {
        "order": order, "phases": plan.phases, "period": plan.period,
        "rows": {"stride": shape.stride[0], "padding": shape.padding[0], "dilation": shape.dilation[0],
                 "kernel": shape.kernel[0]},
        "cols": {"step": step, "padding": shape.padding[1], "width": plan.w_i},
        "first_row_needs_input_rows": max(1, (shape.kernel[0] - 1) * shape.dilation[0] - shape.padding[0] + 1),
    }


def summary_fields(layers: list[dict]) -> dict:
    """Network totals of the mapping keys, and the inter-image pipeline period ``max_l ceil(phases / replicas)``."""
    period = max(layers, key=lambda layer: layer["schedule"]["period"], default=None)
    return {
        "crossbars_with_replicas": sum(layer["crossbars_with_replicas"] for layer in layers),
        "logical_crossbars": sum(layer["logical_crossbars"] for layer in layers),
        "accumulation_crossbars": sum(layer["accumulation_crossbars"] for layer in layers),
        "partial_sum_additions": sum(layer["partial_sum_additions"] for layer in layers),
        "tile_traffic_bits": sum(layer["tile_traffic_bits"] for layer in layers),
        "pipeline_period": period["schedule"]["period"] if period else 0,
        "pipeline_period_layer": period["name"] if period else None,
        "phases": sum(layer["phases"] for layer in layers),
    }
