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
    placed: bool = False

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
