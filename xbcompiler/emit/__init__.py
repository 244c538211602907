"""Emission: the typed netlist of a placed crossbar program, built once (a pure function, not a pass)."""

from __future__ import annotations

import numpy as np
from msgspec.structs import replace

from ..diagnostics import CompileError
from ..ir.program import XbarProgram
from ..netlist import Netlist
from ..netlist import types as nt
from ..netlist.placement import used_extent
from ..version import __version__
from .quant import QuantisedLayer
from .records import crossbar_records, layer_record, with_patterns, with_routing


def emit_netlist(program: XbarProgram, target, pipeline: str) -> Netlist:
    """The netlist of a placed program: ids in topological order, no timestamps, every weight stored once."""
    if not program.placed:
        raise CompileError("XB303", "the crossbar program is not placed; the pipeline needs place-tiles")
    arrays: dict[str, np.ndarray] = {}
    constants = []
    for name, value in sorted(program.constants.items()):
        key = f"constants/{name}"
        arrays[key] = value
        constants.append(nt.Constant(name=name, key=key, shape=list(value.shape), dtype=str(value.dtype)))
    by_layer = crossbar_records(program, target)
    layers, crossbars = [], []
    for name in (n.target for n in program.nodes if n.op == "xbar"):
        m = program.matrices[name]
        xbars = by_layer[name]
        first = len(crossbars)
        if m.quant is None:
            own = {f"layers/{name}/weight": np.ascontiguousarray(m.weight, dtype=np.float32)}
            if m.bias is not None:
                own[f"layers/{name}/bias"] = m.bias.astype(np.float32)
            layer = layer_record(program, name, first, _refs(name, own))
        else:
            draft = layer_record(program, name, first, _refs(name, {f"layers/{name}/weight": m.weight}))
            quantised = QuantisedLayer(draft, xbars, m, program.periphery.get(name), target)
            own, xbars = quantised.arrays, quantised.crossbars
            layer = replace(draft, arrays=quantised.refs(name), quant=quantised.quant)
        layer, xbars = with_routing(layer, xbars)
        layer, xbars = with_patterns(layer, xbars, program.provenance)
        arrays.update(own)
        layers.append(layer)
        crossbars.extend(xbars)
    doc = nt.Document(
        format=nt.FORMAT, version=nt.VERSION, compiler=f"xbcompiler {__version__}", pipeline=pipeline,
        target=target.to_dict(), target_fingerprint=target.fingerprint(),
        inputs=[nt.InputSpec(name=i.name, shape=list(i.shape), dtype=i.dtype) for i in program.inputs],
        nodes=[nt.Node(name=n.name, op=n.op, target=n.target, args=list(n.args), kwargs=dict(n.kwargs))
               for n in program.nodes],
        output=program.output, constants=constants, layers=layers, crossbars=crossbars,
        summary=_summary(program, layers, crossbars), provenance=dict(program.provenance))
    return Netlist(doc, arrays)


def _refs(name: str, arrays: dict[str, np.ndarray]) -> nt.LayerArrays:
    prefix = f"layers/{name}/"
    return nt.LayerArrays(**{key[len(prefix):]: nt.ArrayRef(key=key, shape=list(a.shape), dtype=str(a.dtype))
                             for key, a in arrays.items()})


def _summary(program: XbarProgram, layers: list[nt.Layer], crossbars: list[nt.Crossbar]) -> nt.Summary:
    sites = [site for x in crossbars for site in [(x.tile, x.slot, x.chip), *x.replica_sites]]
    used = sum(r * c for layer in layers
               for x in crossbars[layer.first_crossbar:layer.first_crossbar + layer.crossbars]
               for r, c in [used_extent(layer, x)])
    period = max(layers, key=lambda layer: layer.schedule.period, default=None)
    return nt.Summary(
        crossbars=sum(layer.crossbars for layer in layers), tiles=len({t for t, _, _ in sites}),
        chips=max((c for _, _, c in sites), default=-1) + 1, host_ops=len(program.host_nodes), layers=len(layers),
        weights=int(sum(m.weight.size for m in program.matrices.values())),
        cell_utilisation=round(used / max(1, sum(x.rows * x.cols for x in crossbars)), 6),
        crossbars_with_replicas=sum(layer.crossbars_with_replicas for layer in layers),
        logical_crossbars=sum(layer.logical_crossbars for layer in layers),
        accumulation_crossbars=sum(layer.accumulation_crossbars for layer in layers),
        partial_sum_additions=sum(layer.partial_sum_additions for layer in layers),
        tile_traffic_bits=sum(layer.tile_traffic_bits for layer in layers),
        phases=sum(layer.phases for layer in layers),
        pipeline_period=period.schedule.period if period else 0,
        pipeline_period_layer=period.name if period else None)
