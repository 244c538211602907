"""Build the netlist document and arrays from a placed crossbar program."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .. import __version__
from ..diagnostics import CompileError
from ..ir.program import XbarProgram
from ..mapping.shape import shape_of
from .mapping import ToeplitzCells, layer_fields, summary_fields
from .netlist import FORMAT, VERSION, Netlist
from .pruned import add_pruning_fields


def _array(arrays: dict, key: str, value: np.ndarray) -> dict:
    arrays[key] = value
    return {"key": key, "shape": list(value.shape), "dtype": str(value.dtype)}


def build_netlist(program: XbarProgram, target, pipeline: str) -> Netlist:
    if not program.placed:
        raise CompileError("XB303", "the crossbar program is not placed; the pipeline needs place-tiles")
    arrays: dict[str, np.ndarray] = {}
    constants = [{"name": name, **_array(arrays, f"constants/{name}", value)}
                 for name, value in sorted(program.constants.items())]
    by_layer = defaultdict(list)
    for x in program.crossbars:
        by_layer[x.layer].append(x)
    slices_of = defaultdict(list)
    for s in program.slices:
        slices_of[s.crossbar].append(s)
    toeplitz = ToeplitzCells(program, target)
    layers = [_layer(program, name, by_layer[name], slices_of, arrays, target, toeplitz)
              for name in (n.target for n in program.nodes if n.op == "xbar")]
    crossbars = [{**_crossbar(x, slices_of[x.index], target), **toeplitz.records.get(x.index, {})}
                 for x in program.crossbars]
    used = sum(c["rows_used"] * c["cols_used"] for c in crossbars)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "compiler": f"xbcompiler {__version__}",
        "pipeline": pipeline,
        "target": target.to_dict(),
        "target_fingerprint": target.fingerprint(),
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in program.inputs],
        "nodes": [{"name": n.name, "op": n.op, "target": n.target, "args": list(n.args),
                   "kwargs": {k: v for k, v in n.kwargs}} for n in program.nodes],
        "output": program.output,
        "constants": constants,
        "layers": layers,
        "crossbars": crossbars,
        "summary": {
            "crossbars": sum(layer["crossbars"] for layer in layers),
            "tiles": len({t for x in program.crossbars for t, _, _ in _sites(x)}),
            "chips": (max(c for x in program.crossbars for _, _, c in _sites(x)) + 1) if program.crossbars else 0,
            "host_ops": len(program.host_nodes),
            "layers": len(layers),
            "weights": int(sum(m.weight.size for m in program.matrices.values())),
            "cell_utilisation": round(used / max(1, sum(x.rows * x.cols for x in program.crossbars)), 6),
            **summary_fields(layers),
        },
        "provenance": dict(program.provenance),
        "blobs": {},
    }
    add_pruning_fields(doc, program)
    return Netlist(doc, arrays)


def _layer(program: XbarProgram, name: str, xbars, slices_of, arrays, target, toeplitz) -> dict:
    m, plan = program.matrices[name], program.plans[name]
    first = xbars[0].index if xbars else 0
    cells = toeplitz.arrays.get(name)
    if cells is None:
        cells = np.zeros((len(xbars), target.crossbar.rows, target.logical_cols), dtype=np.float32)
    for x in xbars:
        for s in slices_of[x.index]:
            cells[x.index - first, s.xrow:s.xrow + s.row_hi - s.row_lo, s.xcol:s.xcol + s.col_hi - s.col_lo] = \
                m.weight[s.group, s.row_lo:s.row_hi, s.col_lo:s.col_hi]
    entry_arrays = {"cells": _array(arrays, f"layers/{name}/cells", cells)}
    if m.bias is not None:
        entry_arrays["bias"] = _array(arrays, f"layers/{name}/bias", m.bias.astype(np.float32))
    g = m.geometry
    return {
        "name": name, "source": m.source, "reference": m.reference, "kind": m.kind, "strategy": plan.strategy,
        "matrix_rows": m.rows, "matrix_cols": m.cols, "groups": g.groups, "crossbars": plan.crossbars,
        "cycles": plan.cycles, "row_tiles": plan.row_tiles, "col_tiles": plan.col_tiles,
        "groups_per_crossbar": plan.groups_per_crossbar, "copies": plan.copies,
        "geometry": {"kind": g.kind, "in_channels": g.in_channels, "out_channels": g.out_channels,
                     "kernel": list(g.kernel), "stride": list(g.stride), "padding": list(g.padding),
                     "dilation": list(g.dilation)},
        "input_shape": list(m.input_shape), "output_shape": list(m.output_shape),
        "first_crossbar": first, "arrays": entry_arrays, **layer_fields(plan, shape_of(m)),
    }


def _sites(x) -> list[tuple[int, int, int]]:
    """(tile, slot, chip) of every copy of a crossbar (replicas after the first)."""
    return [(x.tile, x.slot, x.chip), *x.replica_sites]


def _crossbar(x, slices, target) -> dict:
    rows_used = max((s.xrow + s.row_hi - s.row_lo for s in slices), default=0)
    cols_used = max((s.xcol + s.col_hi - s.col_lo for s in slices), default=0)
    return {
        "id": x.id, "index": x.index, "layer": x.layer, "tile": x.tile, "slot": x.slot, "chip": x.chip,
        "rows": x.rows, "cols": x.cols, "physical_cols": x.cols * target.m_c,
        "rows_used": rows_used, "cols_used": cols_used,
        "slices": [{"group": s.group, "rows": [s.row_lo, s.row_hi], "cols": [s.col_lo, s.col_hi],
                    "at": [s.xrow, s.xcol]} for s in slices],
        **({"replica_sites": [list(site) for site in x.replica_sites]} if x.replica_sites else {}),
    }
