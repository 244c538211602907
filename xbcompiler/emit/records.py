"""Typed netlist records of a placed crossbar program: layers, crossbars and their placement records."""

from __future__ import annotations

from collections import defaultdict

from msgspec.structs import replace

from ..diagnostics import CompileError, Location
from ..ir.program import MappingPlan, XbarProgram
from ..mapping.shape import LayerShape, shape_of
from ..netlist import types as nt
from ..netlist.routing import crossbar_tables, layer_fanin, spm_of


def schedule(plan: MappingPlan, shape: LayerShape) -> nt.Schedule:
    """The streaming rule of one layer (docs/mapping.md, "Schedule").

    Phase ``t`` computes output row ``y = t`` (``order = "row"``), output pixel ``divmod(t, W')``
    (``"pixel"``, fully-folded) or every row at once (``"all"``, row copy ``r`` computes row ``r``).
    A crossbar holding kernel rows ``dy`` receives input rows ``y * stride - first + dy * dilation``
    (``rows``) and, for width slice ``s``, input columns ``s * step - pad + [0, width)`` (``cols``).
    """
    order = {"fully-folded": "pixel", "semi-folded": "row", "fully-unfolded": "all"}[plan.strategy]
    step = plan.w_o * shape.stride[1] if plan.strategy != "fully-folded" else shape.stride[1]
    return nt.Schedule(
        order=order, phases=plan.phases, period=plan.period,
        rows=nt.ScheduleRows(stride=shape.stride[0], padding=shape.padding[0], dilation=shape.dilation[0],
                             kernel=shape.kernel[0]),
        cols=nt.ScheduleCols(step=step, padding=shape.padding[1], width=plan.w_i),
        first_row_needs_input_rows=max(1, (shape.kernel[0] - 1) * shape.dilation[0] - shape.padding[0] + 1))


def layer_record(program: XbarProgram, name: str, first: int, arrays: nt.LayerArrays) -> nt.Layer:
    """The plan, geometry and schedule of one layer (quantisation added by :mod:`.quant`)."""
    m, plan = program.matrices[name], program.plans[name]
    shape, g = shape_of(m), m.geometry
    return nt.Layer(
        name=name, source=m.source, reference=m.reference, kind=m.kind, strategy=plan.strategy,
        matrix_rows=m.rows, matrix_cols=m.cols, groups=g.groups, crossbars=plan.crossbars, cycles=plan.cycles,
        row_tiles=plan.row_tiles, col_tiles=plan.col_tiles, groups_per_crossbar=plan.groups_per_crossbar,
        copies=plan.copies,
        geometry=nt.Geometry(kind=g.kind, in_channels=g.in_channels, out_channels=g.out_channels,
                             kernel=tuple(g.kernel), stride=tuple(g.stride), padding=tuple(g.padding),
                             dilation=tuple(g.dilation)),
        input_shape=list(m.input_shape), output_shape=list(m.output_shape), first_crossbar=first, arrays=arrays,
        kin=plan.kin, kout=plan.kout, w_o=plan.w_o, w_i=plan.w_i, n_w=plan.n_w,
        kernel_row_splits=plan.kernel_row_splits, row_copies=plan.row_copies, phases=plan.phases,
        partial_sum_fanin=plan.partial_sum_fanin, replicas=plan.replicas,
        crossbars_with_replicas=plan.crossbars_with_replicas, logical_crossbars=plan.logical_crossbars,
        accumulation_crossbars=plan.accumulation_crossbars, partial_sum_additions=plan.partial_sum_additions,
        input_words=plan.input_words, utilisation=round(plan.utilisation, 6), cost=float(plan.cost),
        tile_traffic_bits=plan.tile_traffic_bits, schedule=schedule(plan, shape),
        alternatives=[nt.Alternative(**a.to_dict()) for a in plan.alternatives],
        pruned_weights=plan.pruned_weights)


def crossbar_records(program: XbarProgram, target) -> dict[str, list[nt.Crossbar]]:
    """Every layer's crossbars with their placement records, by layer name."""
    slices_of, blocks_of = defaultdict(list), defaultdict(list)
    for s in program.slices:
        slices_of[s.crossbar].append(nt.Slice(group=s.group, rows=(s.row_lo, s.row_hi), cols=(s.col_lo, s.col_hi),
                                              at=(s.xrow, s.xcol)))
    for b in program.blocks:
        blocks_of[b.crossbar].append(nt.Block(group=b.group, channels=tuple(b.channels),
                                              kernel_rows=tuple(b.kernel_rows), out_channels=tuple(b.out_channels),
                                              slice=b.slice, out_row=b.out_row, at=(b.xrow, b.xcol)))
    out = defaultdict(list)
    m_c = target.m_c
    for x in program.crossbars:
        slices, blocks = slices_of[x.index], blocks_of[x.index]
        out[x.layer].append(nt.Crossbar(
            layer=x.layer, tile=x.tile, slot=x.slot, chip=x.chip, rows=x.rows, cols=x.cols,
            physical_cols=x.cols * m_c, slices=slices, blocks=blocks,
            replica_sites=[tuple(site) for site in x.replica_sites],
            row_permutation=None if x.row_permutation is None else list(x.row_permutation),
            column_permutation=None if x.column_permutation is None else list(x.column_permutation)))
    return out


def with_routing(layer: nt.Layer, crossbars: list[nt.Crossbar]) -> tuple[nt.Layer, list[nt.Crossbar]]:
    """A pruned layer and its crossbars with their routing tables (docs/netlist.md, "Pruned layers")."""
    if not layer.pruned_weights:
        return layer, crossbars
    crossbars = [replace(x, **crossbar_tables(layer, x)) for x in crossbars]
    return replace(layer, fanin=layer_fanin(layer, crossbars)), crossbars


#: The provenance entry of ``group-pattern-columns``: ``{"layers": {name: {"patterns": [[positions]], ...}}}``.
PATTERN_PASS = "group-pattern-columns"


def with_patterns(layer: nt.Layer, crossbars: list[nt.Crossbar],
                  provenance) -> tuple[nt.Layer, list[nt.Crossbar]]:
    """A pattern layer with its table and its crossbars with their ``spm`` (docs/netlist.md, "Pattern layers");
    other layers unchanged."""
    entry = (provenance.get(PATTERN_PASS) or {}).get("layers", {}).get(layer.name)
    if entry is None:
        return layer, crossbars
    patterns = [list(p) for p in entry["patterns"]]
    out = []
    for x in crossbars:
        spm = spm_of(layer, x, patterns)
        if spm is None:
            raise CompileError("XB303", f"pattern layer '{layer.name}': crossbar {x.id} does not hold whole row sets "
                                        "of its pattern table", location=Location(crossbar=x.id, node=layer.name))
        out.append(replace(x, spm=spm))
    return replace(layer, patterns=patterns), out
