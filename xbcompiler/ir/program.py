"""The mapping-stage IR: an immutable crossbar program (passes return new objects)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..diagnostics import CompileError, Location
from .matrix import LogicalMatrix


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, shape without the batch dimension, dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ProgramNode:
    """One step of the program, in topological order.

    ``op`` is ``input`` (target = input index), ``const`` (target = constant key), ``host`` (target =
    allow-listed operator name, ``args``/``kwargs`` encoded by :mod:`xbcompiler.ir.values`) or
    ``xbar`` (target = layer name, one argument: the layer input).
    """

    name: str
    op: str
    target: str
    args: tuple = ()
    kwargs: tuple = ()  # sorted (key, value) pairs


@dataclass(frozen=True)
class MappingPlan:
    """How one layer is mapped: strategy and the counts it implies (compute crossbars, one copy)."""

    layer: str
    strategy: str
    crossbars: int
    cycles: int
    row_tiles: int
    col_tiles: int
    groups_per_crossbar: int
    copies: int = 1  # how many times each weight is placed (w_o * n_w for semi-folded)
    # the parametric family of docs/mapping.md (SPEC 2.2); the defaults describe a plain tiling
    kin: int = 0  # input channels per crossbar (per input group)
    kout: int = 0  # output channels per crossbar (per output group)
    w_o: int = 1  # output columns per slice
    w_i: int = 1  # input columns per slice, halo included
    n_w: int = 1  # slices per output row
    kernel_row_splits: int = 1  # crossbars one channel's kernel rows are split over
    kernel_rows_per_split: int = 0  # kernel rows per split (0: all)
    row_copies: int = 1  # crossbar sets computing different output rows at once (H' for fully-unfolded)
    phases: int = 0  # crossbar reads per image (each x T input-bit cycles)
    partial_sum_fanin: int = 1  # partial sums added into each output value
    replicas: int = 1  # identical copies sharing the phases (replicate-layers)
    logical_crossbars: int = 0  # the count with one physical column per weight (m_c = 1)
    accumulation_crossbars: int = 0  # crossbars in add mode reducing the partial sums of one phase
    partial_sum_additions: int = 0  # additions of partial sums per image
    input_words: int = 0  # input values driven onto crossbar rows per image
    utilisation: float = 0.0  # weight cells / cells of the layer's crossbars
    cost: float = 0.0  # objective value of the w_o search
    tile_traffic_bits: int = 0  # bits per image reaching this layer's crossbars from other tiles (place-tiles)
    pruned_weights: int = 0  # zero weights no crossbar holds (recombine-pruned-columns, compact-pruned-rows)
    alternatives: tuple = ()  # runner-up plans of the w_o search (mapping.search.Alternative)

    @property
    def crossbars_with_replicas(self) -> int:
        return self.crossbars * self.replicas

    @property
    def period(self) -> int:
        """Phases between two images entering this layer: ``ceil(phases / replicas)``."""
        return -(-self.phases // self.replicas)


@dataclass(frozen=True)
class Crossbar:
    """One physical crossbar; ``cols`` counts logical weight columns (``m_c`` physical columns each)."""

    index: int
    layer: str
    rows: int
    cols: int
    tile: int | None = None
    slot: int | None = None
    chip: int | None = None
    replica_sites: tuple[tuple[int, int, int], ...] = ()  # (tile, slot, chip) of copies 2..replicas

    @property
    def id(self) -> str:
        return f"t{self.tile}.x{self.slot}" if self.tile is not None else f"u{self.index}"


@dataclass(frozen=True)
class SliceAssignment:
    """Matrix block ``weight[group][row_lo:row_hi, col_lo:col_hi]`` at offset (xrow, xcol) of a crossbar."""

    layer: str
    crossbar: int
    group: int
    row_lo: int
    row_hi: int
    col_lo: int
    col_hi: int
    xrow: int
    xcol: int


@dataclass(frozen=True)
class ToeplitzBlock:
    """A block-Toeplitz block at offset (xrow, xcol) of a crossbar (semi-folded and fully-unfolded).

    It holds ``W[o, c, dy, :]`` of one conv ``group`` for input channels ``channels``, kernel rows
    ``kernel_rows`` and output channels ``out_channels`` (half-open, local to the group), duplicated
    along the ``w_o`` output columns of width slice ``slice``; ``out_row`` is the one output row it
    computes (fully-unfolded) or -1 (one output row per phase). The placement function is
    :func:`xbcompiler.mapping.placement.block_cells`.
    """

    layer: str
    crossbar: int
    group: int
    channels: tuple[int, int]
    kernel_rows: tuple[int, int]
    out_channels: tuple[int, int]
    slice: int
    out_row: int = -1
    xrow: int = 0
    xcol: int = 0


@dataclass(frozen=True)
class XbarProgram:
    """Host ops, crossbar layers, their mapping and placement; built by ``lower-to-xbar``."""

    inputs: tuple[InputSpec, ...]
    nodes: tuple[ProgramNode, ...]
    output: object  # encoded output structure
    matrices: Mapping[str, LogicalMatrix]
    constants: Mapping[str, np.ndarray]
    plans: Mapping[str, MappingPlan] = field(default_factory=dict)
    crossbars: tuple[Crossbar, ...] = ()
    slices: tuple[SliceAssignment, ...] = ()
    blocks: tuple[ToeplitzBlock, ...] = ()
    placed: bool = False
    provenance: Mapping[str, object] = field(default_factory=dict)  # solver statuses, by pass name

    def replace(self, **changes) -> XbarProgram:
        return dataclasses.replace(self, **changes)

    @property
    def host_nodes(self) -> list[ProgramNode]:
        return [n for n in self.nodes if n.op == "host"]

    def layer_crossbars(self, layer: str) -> list[Crossbar]:
        return [x for x in self.crossbars if x.layer == layer]

    def verify(self, target=None) -> None:
        """Check the invariants of DESIGN.md section 3; raise XB303 on the first violation."""
        from .verify import verify_program

        verify_program(self, target)


def fail(message: str, crossbar: str | None = None, node: str | None = None) -> CompileError:
    return CompileError("XB303", message, location=Location(crossbar=crossbar, node=node))
