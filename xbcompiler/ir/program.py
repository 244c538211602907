"""The mapping-stage IR: an immutable crossbar program (passes return new objects), and its verifier.

:meth:`XbarProgram.verify` checks ids, capacity, overlap, exact weight coverage and node references
here; the blocks of block-Toeplitz layers are checked through the hook of :mod:`.verify_toeplitz`,
which the mapping layer fills (the IR does not import the mapping layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..diagnostics import CompileError, Location
from ..frontend.ops import HOST_OPS
from .matrix import LogicalMatrix
from .periphery import LayerPeriphery
from .tables import crossbar_table
from .values import refs
from .verify_toeplitz import TOEPLITZ, verify_blocks


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
    # the parametric family of docs/mapping.md (background §2.2); the defaults describe a plain tiling
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


class Crossbar(NamedTuple):
    """One physical crossbar; ``cols`` counts logical weight columns (``m_c`` physical columns each).

    Crossbars and their placement records (:class:`SliceAssignment`, :class:`ToeplitzBlock`) are named
    tuples: immutable like the rest of the IR, and built several times faster than frozen dataclasses,
    which counts at a ResNet-50's 130,000 crossbars. Change one with ``x._replace(field=value)``.
    """

    index: int
    layer: str
    rows: int
    cols: int
    tile: int | None = None
    slot: int | None = None
    chip: int | None = None
    replica_sites: tuple[tuple[int, int, int], ...] = ()  # (tile, slot, chip) of copies 2..replicas
    row_permutation: tuple[int, ...] | None = None  # remap-faults: word line of each placement row
    column_permutation: tuple[int, ...] | None = None  # remap-faults: logical column of each placement column

    @property
    def id(self) -> str:
        return f"t{self.tile}.x{self.slot}" if self.tile is not None else f"u{self.index}"


class SliceAssignment(NamedTuple):
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


class ToeplitzBlock(NamedTuple):
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
    periphery: Mapping[str, LayerPeriphery] = field(default_factory=dict)  # quantised layers: assign-adc

    def replace(self, **changes) -> XbarProgram:
        return dataclasses.replace(self, **changes)

    @property
    def host_nodes(self) -> list[ProgramNode]:
        return [n for n in self.nodes if n.op == "host"]

    def layer_crossbars(self, layer: str) -> list[Crossbar]:
        return [x for x in self.crossbars if x.layer == layer]

    def verify(self, target=None) -> None:
        """Check the crossbar IR's invariants (docs/passes.md); raise XB303 on the first violation."""
        verify_program(self, target)


def fail(message: str, crossbar: str | None = None, node: str | None = None) -> CompileError:
    return CompileError("XB303", message, location=Location(crossbar=crossbar, node=node))


# --- the verifier ----------------------------------------------------------------------------------

def verify_program(program: XbarProgram, target=None) -> None:
    """The verifier behind :meth:`XbarProgram.verify` (``target`` None: skip the size and capacity checks)."""
    _verify_nodes(program)
    if not program.crossbars and not program.slices:
        return
    _verify_crossbars(program, target)
    _verify_slices(program)
    _verify_coverage(program)
    verify_blocks(program)


def _verify_nodes(program: XbarProgram) -> None:
    seen: set[str] = set()
    for node in program.nodes:
        if node.name in seen:
            raise fail(f"duplicate node name '{node.name}'", node=node.name)
        missing = [r for r in refs((node.args, node.kwargs)) if r not in seen]
        if missing:
            raise fail(f"node '{node.name}' uses {missing} before they are defined", node=node.name)
        if node.op == "host" and node.target not in HOST_OPS:
            raise fail(f"host op '{node.target}' is not in the allow-list", node=node.name)
        if node.op == "xbar" and node.target not in program.matrices:
            raise fail(f"crossbar node '{node.name}' names unknown layer '{node.target}'", node=node.name)
        if node.op == "const" and node.target not in program.constants:
            raise fail(f"constant '{node.target}' missing", node=node.name)
        seen.add(node.name)
    missing = [r for r in refs(program.output) if r not in seen]
    if missing:
        raise fail(f"output uses undefined nodes {missing}")


def _verify_crossbars(program: XbarProgram, target) -> None:
    t = crossbar_table(program.crossbars)
    if not np.array_equal(t.index, np.arange(len(program.crossbars))):
        raise fail("crossbar indices must be 0..n-1 in order")
    on_tile = t.tile >= 0  # ids t<tile>.x<slot>; the others are u<index>, unique by index
    if _repeats(t.tile[on_tile], t.slot[on_tile]):
        raise fail("crossbar ids are not unique")
    if target is not None:
        rows, cols, per_tile = target.crossbar.rows, target.logical_cols, target.hierarchy.crossbars_per_tile
        for k in np.flatnonzero((t.rows > rows) | (t.cols > cols))[:1]:
            x = program.crossbars[k]
            raise fail(f"crossbar {x.id} is {x.rows}x{x.cols}, larger than the target allows", crossbar=x.id)
        if program.placed:
            for k in np.flatnonzero(t.slot >= per_tile)[:1]:
                raise fail(f"crossbar {program.crossbars[k].id} exceeds the tile capacity",
                           crossbar=program.crossbars[k].id)
    if not program.placed:
        return
    for k in np.flatnonzero(t.tile < 0)[:1]:
        x = program.crossbars[k]
        raise fail(f"crossbar {x.id} of a placed program has no tile", crossbar=x.id)
    replicas = np.array([(tile, slot) for x in program.crossbars if x.replica_sites
                         for tile, slot, _ in x.replica_sites], dtype=np.int64).reshape(-1, 2)
    if _repeats(np.concatenate([t.tile, replicas[:, 0]]), np.concatenate([t.slot, replicas[:, 1]])):
        raise fail("two crossbars (or replicas) share a tile slot")
    if target is not None and (replicas[:, 1] >= target.hierarchy.crossbars_per_tile).any():
        raise fail("a replica exceeds the tile capacity")
    for x in program.crossbars:
        for perm, size in ((x.row_permutation, x.rows), (x.column_permutation, x.cols)):
            if perm is not None and sorted(perm) != list(range(size)):
                raise fail(f"crossbar {x.id}: a row or column permutation that does not permute its {size}",
                           crossbar=x.id)


def _repeats(tile: np.ndarray, slot: np.ndarray) -> bool:
    """Whether two ``(tile, slot)`` pairs (non-negative) are equal."""
    key = tile * (int(slot.max(initial=0)) + 1) + slot
    return np.unique(key).size != key.size


def _verify_slices(program: XbarProgram) -> None:
    used: dict[int, np.ndarray] = {}  # occupied cells of the crossbars that hold slices
    for s in program.slices:
        x = program.crossbars[s.crossbar]
        h, w = s.row_hi - s.row_lo, s.col_hi - s.col_lo
        if s.layer != x.layer:
            raise fail(f"slice of layer {s.layer} placed on crossbar of {x.layer}", crossbar=x.id)
        if h <= 0 or w <= 0 or s.xrow < 0 or s.xcol < 0 or s.xrow + h > x.rows or s.xcol + w > x.cols:
            raise fail(f"slice {s} does not fit crossbar {x.id}", crossbar=x.id)
        if x.index not in used:
            used[x.index] = np.zeros((x.rows, x.cols), dtype=bool)
        cells = used[x.index][s.xrow:s.xrow + h, s.xcol:s.xcol + w]
        if cells.any():
            raise fail(f"slices overlap on crossbar {x.id}", crossbar=x.id)
        cells[...] = True


def _verify_coverage(program: XbarProgram) -> None:
    counts = {name: np.zeros(m.weight.shape, dtype=np.int64) for name, m in program.matrices.items()}
    for s in program.slices:
        if not (0 <= s.group < counts[s.layer].shape[0]):
            raise fail(f"slice names group {s.group} of layer {s.layer}", node=s.layer)
        block = counts[s.layer][s.group, s.row_lo:s.row_hi, s.col_lo:s.col_hi]
        if block.shape != (s.row_hi - s.row_lo, s.col_hi - s.col_lo):
            raise fail(f"slice {s} lies outside the matrix of {s.layer}", node=s.layer)
        block += 1
    for name, c in counts.items():
        if name in program.plans and program.plans[name].strategy in TOEPLITZ:
            continue  # verify_blocks checks these
        copies = program.plans[name].copies if name in program.plans else 1
        pruned = program.plans[name].pruned_weights if name in program.plans else 0
        absent = (c == 0) & (program.matrices[name].weight == 0) & (pruned > 0)  # compact-pruned-rows
        if int(absent.sum()) != pruned:
            raise fail(f"{int(absent.sum())} zero weights of layer {name} are placed nowhere, the plan says "
                       f"{pruned} are pruned", node=name)
        ok = (c == copies) | absent
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            raise fail(f"weight (group {bad[0]}, row {bad[1]}, col {bad[2]}) of layer {name} is placed "
                       f"{c[tuple(bad)]} times, expected {copies}", node=name)
