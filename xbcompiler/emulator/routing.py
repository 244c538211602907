"""The routing tables of pruned layers, checked against the placement before a layer runs.

A pruned layer's netlist entry lists, per crossbar, which output channel each column feeds and
(fully-folded) which input row drives each crossbar row, and per output channel its partial-sum
fan-in (docs/netlist.md, "Pruned layers"). The kernels route by the placement; a netlist whose tables
say otherwise is refused (XB350), so what runs is exactly what the tables describe.
"""

from __future__ import annotations

from ..diagnostics import CompileError, Location
from ..emit.pruned import crossbar_tables, layer_fanin


def check_routing(layer: dict, crossbars: list[dict]) -> None:
    """XB350 unless the tables of a pruned layer match its blocks or slices (no-op for other layers)."""
    if not layer.get("pruned_weights"):
        return
    for x in crossbars:
        want = crossbar_tables(layer, x)
        for key, table in want.items():
            if x.get(key) != table:
                raise CompileError("XB350", f"layer '{layer['name']}': the {key} table of crossbar {x['id']} disagrees "
                                            "with its placement", location=Location(crossbar=x["id"]))
    if layer.get("fanin") != layer_fanin(layer, crossbars):
        raise CompileError("XB350", f"layer '{layer['name']}': the partial-sum fan-in disagrees with its crossbars",
                           location=Location(node=layer["name"]))
