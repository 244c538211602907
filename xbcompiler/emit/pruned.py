"""Netlist fields of pruned layers: routing tables and partial-sum fan-in (docs/netlist.md, "Pruned layers").

Only layers with ``plan.pruned_weights > 0`` get them, so dense netlists are unchanged:

- layer ``pruned_weights``: zero weights no crossbar holds;
- layer ``fanin``: per output channel, the partial sums added into each of its values (the pruned
  adder tree; 0 when every weight of the channel is pruned and the output is its bias);
- crossbar ``column_channels``: per logical column, the output channel (conv groups numbered
  globally) whose partial sum it produces, -1 for an unused column;
- crossbar ``row_inputs`` (fully-folded): per crossbar row, the im2col row of its conv group that
  drives it (the static input gather of row compaction), -1 for an unused row.

The emulator checks these tables against the placement (:mod:`xbcompiler.emulator.routing`).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..ir.program import XbarProgram


def crossbar_tables(layer: dict, crossbar: dict) -> dict:
    """``column_channels`` (and ``row_inputs`` for slices) of one netlist crossbar record."""
    n_g = layer["matrix_cols"] // layer["groups"]
    cols = np.full(crossbar["cols"], -1, dtype=np.int64)
    rows = np.full(crossbar["rows"], -1, dtype=np.int64)
    for b in crossbar.get("blocks", ()):
        lo, hi = b["out_channels"]
        xcol = b["at"][1]
        cols[xcol:xcol + (hi - lo) * b["w_o"]] = b["group"] * n_g + np.repeat(np.arange(lo, hi), b["w_o"])
    for s in crossbar.get("slices", ()):
        (r0, r1), (c0, c1), (xr, xc) = s["rows"], s["cols"], s["at"]
        cols[xc:xc + c1 - c0] = s["group"] * n_g + np.arange(c0, c1)
        rows[xr:xr + r1 - r0] = np.arange(r0, r1)
    out = {"column_channels": _trim(cols)}
    if crossbar.get("slices"):
        out["row_inputs"] = _trim(rows)
    return out


def _trim(table: np.ndarray) -> list[int]:
    used = np.flatnonzero(table >= 0)
    return table[:used[-1] + 1].tolist() if used.size else []


def layer_fanin(layer: dict, crossbars: list[dict]) -> list[int]:
    """Partial sums added into each output value, per output channel (one width slice / row copy)."""
    fanin = np.zeros(layer["matrix_cols"], dtype=np.int64)
    first_site = None
    for x in crossbars:
        for b in x.get("blocks", ()):
            site = (b["slice"], b["out_row"])
            first_site = site if first_site is None else first_site
            if site == first_site:
                lo, hi = b["out_channels"]
                fanin[b["group"] * (layer["matrix_cols"] // layer["groups"]) + np.arange(lo, hi)] += 1
        channels = {c for c in crossbar_tables(layer, x)["column_channels"] if c >= 0} if x.get("slices") else ()
        for c in channels:
            fanin[c] += 1
    return fanin.tolist()


def add_pruning_fields(doc: dict, program: XbarProgram) -> None:
    """Add the fields above to the pruned layers of an emitted netlist document (in place)."""
    crossbars_of = defaultdict(list)
    for x in doc["crossbars"]:
        crossbars_of[x["layer"]].append(x)
    for layer in doc["layers"]:
        plan = program.plans[layer["name"]]
        if not plan.pruned_weights:
            continue
        xs = crossbars_of[layer["name"]]
        layer["pruned_weights"] = plan.pruned_weights
        layer["fanin"] = layer_fanin(layer, xs)
        for x in xs:
            x.update(crossbar_tables(layer, x))
