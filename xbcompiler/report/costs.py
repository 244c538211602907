"""The first-order cost report of a netlist: per layer and total (docs/mapping.md, "Cost report").

Counts per image, for a layer with ``P`` phases, ``T`` input-bit cycles and crossbars ``x`` using
``rows_x`` rows and ``cols_x`` logical columns (``m_c`` physical each):

* ADC conversions ``= P * T * sum_x cols_x * m_c`` (every used physical column, every read); a polarized
  layer reads each fragment of a column alone, ``P * T * m_c * sum_x (column reads)_x`` (:mod:`.fragments`);
* DAC row drives ``= P * T * sum_x rows_x``; cell reads ``= P * T * sum_x rows_x * cols_x * m_c``;
* shift-and-adds = ADC conversions; partial-sum additions and inter-tile bits from the netlist.

Energy sums each count times its per-event cost in ``target.costs`` (pJ). Time: a layer needs
``ceil(P / replicas)`` phases of ``T * phase_ns``; the pipeline period is the slowest layer's, and the
latency bound is the sum over layers (no intra-image overlap). Area: every compute and accumulation
crossbar (replicas included) with its ADC, plus the shared periphery of every used tile.

``adc_lossless_bits`` is the ADC width that loses nothing on the layer's largest read (a fragment of
``fragment_rows`` rows when polarized). Given ``inputs``, polarized layers also count the
fragment-cycles that FORMS zero-skipping saves on them (:func:`.fragments.zero_skip`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import msgspec

from ..netlist.placement import used_extent
from ..target import TargetSpec, target_from_dict
from .fragments import ZeroSkip, polarized, reads_per_column


@dataclass(frozen=True)
class LayerCost:
    name: str
    strategy: str
    crossbars: int
    crossbars_with_replicas: int
    accumulation_crossbars: int
    utilisation: float
    phases: int
    period: int
    adc_conversions: int
    dac_drives: int
    cell_reads: int
    partial_sum_additions: int
    tile_bits: int
    energy_pj: float
    latency_ns: float
    w_o: int
    kin: int
    kout: int
    n_w: int
    alternatives: list  # runners-up of the slice-width search
    adc_lossless_bits: int = 0  # ADC bits that lose nothing on the layer's largest read
    fragment_rows: int = 0  # polarized (FORMS): rows of a fragment, else 0
    zero_skipped_cycles: int | None = None  # polarized, with inputs: fragment-cycles whose input digits are all 0
    fragment_cycles: int | None = None  # ... out of these


@dataclass(frozen=True)
class CostReport:
    layers: list[LayerCost]
    totals: dict
    target: str
    device: dict  # the target's [device] section (docs/faults.md); what xb.program samples by default

    def to_dict(self) -> dict:
        return {"target": self.target, "device": self.device, "layers": [asdict(c) for c in self.layers],
                "totals": self.totals}


def _layer_cost(layer, crossbars, target: TargetSpec, skip: ZeroSkip | None = None) -> LayerCost:
    c, cycles, m_c = target.costs, target.input_cycles, target.m_c
    reads = layer.phases * cycles
    used = [used_extent(layer, x) for x in crossbars]
    rows = sum(r for r, _ in used)
    cols = sum(c for _, c in used) * m_c
    cells = sum(r * c for r, c in used) * m_c
    largest = max((r for r, _ in used), default=0)
    if polarized(layer):
        fragments = reads_per_column(layer, crossbars)
        cols = sum(n for n, _ in fragments) * m_c
        largest = max((r for _, r in fragments), default=0)
    lossless = max((x.adc.lossless_bits for x in crossbars if x.adc is not None),
                   default=target.lossless_adc_bits(largest))
    adc, dac, cell_reads = reads * cols, reads * rows, reads * cells
    psum, bits = layer.partial_sum_additions, layer.tile_traffic_bits
    energy = (adc * (c.adc_conversion_pj + c.shift_add_pj) + dac * c.dac_drive_pj + cell_reads * c.cell_read_pj
              + psum * c.partial_sum_add_pj + bits * c.tile_bit_moved_pj)
    period = layer.schedule.period
    return LayerCost(layer.name, layer.strategy, layer.crossbars, layer.crossbars_with_replicas,
                     layer.accumulation_crossbars, layer.utilisation, layer.phases, period, adc, dac,
                     cell_reads, psum, bits, energy, period * cycles * c.phase_ns, layer.w_o, layer.kin,
                     layer.kout, layer.n_w, [msgspec.to_builtins(a) for a in layer.alternatives], lossless,
                     polarized(layer), None if skip is None else skip.skipped, None if skip is None else skip.total)


def cost_report(netlist, inputs=None) -> CostReport:
    """Per-layer and total costs of a netlist (a :class:`~xbcompiler.netlist.Netlist`); with ``inputs`` (a
    batch for the netlist) also the zero-skipped fragment-cycles of its polarized layers on them."""
    doc = netlist.doc
    target = target_from_dict(doc.target)
    skips = _zero_skips(netlist, inputs) if inputs is not None else {}
    layers = [_layer_cost(layer, netlist.layer_crossbars(layer), target, skips.get(layer.name))
              for layer in netlist.layers]
    c = target.costs
    arrays = sum(lc.crossbars_with_replicas + lc.accumulation_crossbars for lc in layers)
    tiles = doc.summary.tiles
    period = max((lc.period for lc in layers), default=0)
    totals = {
        "crossbars": sum(lc.crossbars for lc in layers),
        "crossbars_with_replicas": sum(lc.crossbars_with_replicas for lc in layers),
        "accumulation_crossbars": sum(lc.accumulation_crossbars for lc in layers),
        "phases": sum(lc.phases for lc in layers),
        "pipeline_period": period,
        "adc_conversions": sum(lc.adc_conversions for lc in layers),
        "partial_sum_additions": sum(lc.partial_sum_additions for lc in layers),
        "tile_bits": sum(lc.tile_bits for lc in layers),
        "energy_pj": sum(lc.energy_pj for lc in layers),
        "latency_ns": sum(lc.latency_ns for lc in layers),
        "period_ns": period * target.input_cycles * c.phase_ns,
        "area_um2": arrays * (c.xbar_area_um2 + c.adc_area_um2) + tiles * c.tile_area_um2,
        "tiles": tiles,
        "chips": doc.summary.chips,
    }
    if skips:
        totals["zero_skipped_cycles"] = sum(s.skipped for s in skips.values())
        totals["fragment_cycles"] = sum(s.total for s in skips.values())
    return CostReport(layers, totals, target.name, asdict(target.device))


def _zero_skips(netlist, inputs) -> dict[str, ZeroSkip]:
    """Zero-skip counts of every polarized layer, on the inputs each receives in integer mode."""
    from ..emulator import emulator_for
    from .fragments import zero_skip

    todo = [layer.name for layer in netlist.layers if polarized(layer)]
    if not todo:
        return {}
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    emulator = emulator_for(netlist, "integer", inputs[0].device)
    _, env = emulator.run(tuple(inputs), record=True)
    feeds = {n.target: n.args[0]["ref"] for n in netlist.doc.nodes if n.op == "xbar"}
    return {name: zero_skip(emulator.layers[name], env[feeds[name]]) for name in todo}
