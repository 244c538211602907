"""One CSV row per crossbar site: where it is, how much of it is used and what it holds.

A replicated layer's crossbar has one row per site (``site`` 0 is the crossbar itself, 1.. its
``replica_sites``), so the rows number ``summary.crossbars_with_replicas``. docs/export.md documents
the columns.
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields

from ..netlist.placement import permuted, physical_extent
from ..netlist.types import Block, Crossbar, Layer, Slice
from ..report.plots import occupancy
from .record import Export


@dataclass(frozen=True)
class CrossbarRow:
    """The columns of one row, in order."""

    index: int  # position in the netlist's crossbar list
    id: str  # t<tile>.x<slot> of this site
    site: int  # 0: the crossbar itself, k: its k-th replica site
    layer: str
    kind: str
    strategy: str
    tile: int
    slot: int
    chip: int
    rows: int
    cols: int  # logical columns (one weight each)
    physical_cols: int
    rows_used: int  # word lines up to the last one holding a weight (after remap-faults: physical)
    cols_used: int  # logical columns likewise
    weights: int  # cells holding a weight (logical; every copy counted)
    utilisation: float  # weights / (rows * cols), rounded to 6 digits
    adc_bits: int | str  # the crossbar's ADC resolution (quantised netlists), else empty
    remapped: int  # 1 when remap-faults permuted its rows or columns
    holds: str  # the placement records, ';'-separated (see describe)


def describe(record: Slice | Block) -> str:
    """A placement record in one token: ``g0:k0-16,n0-4@0,0`` for a slice (matrix rows ``k`` and columns ``n``
    of group ``g``), ``g0:c0-1,dy0-3,o0-4,s0@0,0`` for a block (channels, kernel rows, output channels,
    width slice; ``,r<row>`` for a fully-unfolded output row); ``@`` gives the top-left cell."""
    at = f"@{record.at[0]},{record.at[1]}"
    if isinstance(record, Slice):
        return f"g{record.group}:k{record.rows[0]}-{record.rows[1]},n{record.cols[0]}-{record.cols[1]}{at}"
    row = "" if record.out_row < 0 else f",r{record.out_row}"
    return (f"g{record.group}:c{record.channels[0]}-{record.channels[1]},dy{record.kernel_rows[0]}-"
            f"{record.kernel_rows[1]},o{record.out_channels[0]}-{record.out_channels[1]},s{record.slice}{row}{at}")


def crossbar_rows(netlist) -> list[CrossbarRow]:
    """Every crossbar site of the netlist, crossbars in index order and each one's sites in order."""
    layers = {layer.name: layer for layer in netlist.layers}
    out = []
    for index, x in enumerate(netlist.crossbars):
        layer = layers[x.layer]
        out += [_row(index, x, layer, site, tile, slot, chip)
                for site, (tile, slot, chip) in enumerate([(x.tile, x.slot, x.chip), *x.replica_sites])]
    return out


def _row(index: int, x: Crossbar, layer: Layer, site: int, tile: int, slot: int, chip: int) -> CrossbarRow:
    rows_used, cols_used = physical_extent(layer, x)
    share = occupancy(x, layer)
    return CrossbarRow(index, f"t{tile}.x{slot}", site, layer.name, layer.kind, layer.strategy, tile, slot, chip,
                       x.rows, x.cols, x.physical_cols, rows_used, cols_used, round(share * x.rows * x.cols),
                       round(share, 6), "" if x.adc is None else x.adc.bits, int(permuted(x)),
                       ";".join(describe(r) for r in [*x.slices, *x.blocks]))


COLUMNS = tuple(f.name for f in fields(CrossbarRow))


def export(netlist) -> Export:
    """The CSV text: a header of :data:`COLUMNS`, then one row per crossbar site."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(astuple(r) for r in crossbar_rows(netlist))
    return Export("csv", buffer.getvalue())
