"""The typed netlist records (format version 2): frozen ``msgspec`` structs, decoded and range-checked in one pass.

Every record mirrors one JSON object of ``netlist.json`` field for field (docs/netlist.md); the JSON
Schema shipped with the package is generated from these types (:func:`xbcompiler.netlist.schema`).
Bounds on integers are part of the types, so a decoded netlist has every count non-negative and
every shape within :data:`MAX_DIM`; the cross-record checks (indices within the layer, no overlap,
coverage) are in :mod:`xbcompiler.netlist.check`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

FORMAT = "xbcompiler-netlist"
VERSION = 2

#: The largest count or dimension a netlist may declare (2**31 - 1): nothing larger is ever allocated.
MAX_DIM = (1 << 31) - 1

Count = Annotated[int, Meta(ge=0, le=MAX_DIM)]
Positive = Annotated[int, Meta(ge=1, le=MAX_DIM)]
Signed = Annotated[int, Meta(ge=-MAX_DIM, le=MAX_DIM)]
Small = Annotated[int, Meta(ge=-64, le=64)]  # exponents, shifts, bit counts
Bits = Annotated[int, Meta(ge=0, le=64)]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", max_length=512)]
Range = tuple[Count, Count]
Pair = tuple[Count, Count]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
DType = Literal["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool"]
Strategy = Literal["fully-folded", "semi-folded", "fully-unfolded"]


class Record(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Base of every netlist record: immutable, unknown fields refused, fields at their default left out of
    the JSON (a block's ``group`` 0, ``slice`` 0, ``out_row`` -1 and ``at`` [0, 0] are the common case).

    Records are acyclic trees, so they are kept out of the cyclic garbage collector (``gc=False``): a
    ResNet-50 netlist has a quarter of a million of them, and tracking them made the collector's passes
    during emission and loading cost more than building the records.
    """


class ArrayRef(Record):
    """An array of ``weights.npz``: its member name (without ``.npy``), shape and dtype."""

    key: Annotated[str, Meta(max_length=600)]
    shape: Annotated[list[Count], Meta(max_length=8)]
    dtype: DType


class InputSpec(Record):
    """A model input: name, shape without the batch dimension, torch dtype name."""

    name: Name
    shape: Annotated[list[Count], Meta(max_length=8)]
    dtype: str


class Node(Record):
    """One program step (``input``, ``const``, ``host`` or ``xbar``) with encoded arguments."""

    name: Name
    op: Literal["input", "const", "host", "xbar"]
    target: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class Constant(Record):
    """A tensor host operations read, stored as ``constants/<name>``."""

    name: str
    key: str
    shape: Annotated[list[Count], Meta(max_length=8)]
    dtype: DType


class Geometry(Record):
    """The layer as a convolution: ``kind``, channels and the ``[h, w]`` kernel, stride, padding, dilation."""

    kind: Literal["conv1d", "conv2d", "linear"]
    in_channels: Positive
    out_channels: Positive
    kernel: tuple[Positive, Positive]
    stride: tuple[Positive, Positive]
    padding: Pair
    dilation: tuple[Positive, Positive]


class ScheduleRows(Record):
    stride: Positive
    padding: Count
    dilation: Positive
    kernel: Positive


class ScheduleCols(Record):
    step: Positive
    padding: Count
    width: Positive


class Schedule(Record):
    """The streaming rule of one layer (docs/mapping.md, "The schedule")."""

    order: Literal["pixel", "row", "all"]
    phases: Count
    period: Count
    rows: ScheduleRows
    cols: ScheduleCols
    first_row_needs_input_rows: Count


class Alternative(Record):
    """A runner-up of the slice-width search."""

    w_o: Positive
    crossbars: Count
    kin: Count
    kout: Count
    n_w: Count
    partial_sum_fanin: Count
    cost: float


class EncodingSpec(Record):
    """How a quantised layer's integers are put on cells and DACs (docs/quantization.md)."""

    signed: Literal["differential", "differential-zero-high", "offset", "polarized"]
    weight_bits: Annotated[int, Meta(ge=2, le=32)]
    cell_bits: Annotated[int, Meta(ge=1, le=16)]
    input_bits: Annotated[int, Meta(ge=1, le=32)]
    dac_bits: Annotated[int, Meta(ge=1, le=16)]
    input_signed: bool
    input_scheme: Literal["twos-complement", "offset"] = "twos-complement"
    flip_columns: bool = False
    fragment_rows: Count = 0  # polarized: rows of a FORMS fragment (row blocks are cut along this grid)


class Plane(Record):
    """One weight plane (physical column of a logical column): its sign and shift ``k * slice``."""

    sign: Literal[-1, 1]
    shift: Bits


class Cycle(Record):
    """One DAC cycle: its weight and the digit's position ``lo`` and width ``bits`` in the input pattern."""

    weight: Annotated[int, Meta(ge=-(1 << 40), le=1 << 40)]
    lo: Bits
    bits: Annotated[int, Meta(ge=1, le=32)]


class AdcSpec(Record):
    mode: Literal["fixed", "lossless", "calibrated"]
    rounding: Literal["nearest-even", "floor"]
    compensate_bias: bool


class RowBlockRef(Record):
    """A row block of a quantised layer: its conv group and matrix rows as half-open ranges."""

    group: Count
    rows: list[Range]


class AdcError(Record):
    source: Literal["model", "calibration"]
    mean: float
    mean_output_lsb: float
    std: float
    std_output_lsb: float


class Quant(Record):
    """The integer datapath of a quantised layer (docs/netlist.md, "Quantised layers")."""

    input_exponent: Small
    input_bits: Annotated[int, Meta(ge=1, le=32)]
    input_signed: bool
    weight_bits: Annotated[int, Meta(ge=2, le=32)]
    weight_exponents: list[Small]
    group_cols: Positive
    output_exponent: Small
    output_bits: Annotated[int, Meta(ge=1, le=48)]
    shifts: list[Small]
    encoding: EncodingSpec
    planes: list[Plane]
    cycles: list[Cycle]
    adc: AdcSpec
    truncate_bits: Bits
    row_blocks: list[RowBlockRef]
    adc_error: AdcError


class LayerArrays(Record):
    """The arrays of a layer: ``weight`` always, the others when the layer has them."""

    weight: ArrayRef
    bias: ArrayRef | None = None
    input_correction: ArrayRef | None = None
    adc_compensation: ArrayRef | None = None
    adc_step: ArrayRef | None = None
    adc_bits: ArrayRef | None = None
    flips: ArrayRef | None = None
    signs: ArrayRef | None = None  # polarized: int8 [row blocks, N_g], each fragment read's sign


class Layer(Record):
    """One crossbar layer: its matrix (stored once), plan, schedule and, when quantised, datapath."""

    name: Name
    source: str
    reference: str
    kind: Literal["conv1d", "conv2d", "linear", "matmul"]
    strategy: Strategy
    matrix_rows: Positive
    matrix_cols: Positive
    groups: Positive
    crossbars: Count
    cycles: Count
    row_tiles: Count
    col_tiles: Count
    groups_per_crossbar: Positive
    copies: Positive
    geometry: Geometry
    input_shape: Annotated[list[Count], Meta(max_length=8)]
    output_shape: Annotated[list[Count], Meta(max_length=8)]
    first_crossbar: Count
    arrays: LayerArrays
    kin: Count
    kout: Count
    w_o: Positive
    w_i: Positive
    n_w: Positive
    kernel_row_splits: Positive
    row_copies: Positive
    phases: Count
    partial_sum_fanin: Count
    replicas: Positive
    crossbars_with_replicas: Count
    logical_crossbars: Count
    accumulation_crossbars: Count
    partial_sum_additions: Count
    input_words: Count
    utilisation: float
    cost: float
    tile_traffic_bits: Count
    schedule: Schedule
    alternatives: list[Alternative] = []
    pruned_weights: Count = 0
    fanin: list[Count] | None = None
    quant: Quant | None = None
    patterns: list[Annotated[list[Count], Meta(min_length=1, max_length=4096)]] | None = None
    """Pattern layers (``group-pattern-columns``): the kernel positions ``dy * kw + dx`` of each row set its
    crossbars' ``spm`` entries name, ascending (docs/netlist.md, "Pattern layers")."""

    @property
    def n_g(self) -> int:
        """Output columns per conv group."""
        return self.matrix_cols // self.groups


class Slice(Record):
    """A rectangle of group ``group``'s matrix (rows ``rows``, columns ``cols``) with its top-left at cell ``at``."""

    rows: Range
    cols: Range
    group: Count = 0
    at: Pair = (0, 0)


class Block(Record):
    """A block-Toeplitz block: ``W[o, c, dy, :]`` of one group, ``w_o`` copies along width slice ``slice``."""

    channels: Range
    kernel_rows: Range
    out_channels: Range
    group: Count = 0
    slice: Count = 0
    out_row: Annotated[int, Meta(ge=-1, le=MAX_DIM)] = -1
    at: Pair = (0, 0)


class CrossbarAdc(Record):
    lossless_bits: Bits
    bits: Bits
    step_bits: Bits


class Crossbar(Record):
    """One physical crossbar: where it sits and the placement records of what it holds.

    Its position in the netlist's crossbar list is its index; its id is ``t<tile>.x<slot>``.
    """

    layer: Name
    tile: Count
    slot: Count
    chip: Count
    rows: Positive
    cols: Positive
    physical_cols: Positive
    slices: list[Slice] = []
    blocks: list[Block] = []
    replica_sites: list[tuple[Count, Count, Count]] = []
    column_channels: list[Annotated[int, Meta(ge=-1, le=MAX_DIM)]] | None = None
    row_inputs: list[Annotated[int, Meta(ge=-1, le=MAX_DIM)]] | None = None
    spm: list[tuple[Count, Count]] | None = None
    """Pattern layers: the Sparsity Pattern Mask, ``[input channel, pattern index]`` per input channel the
    crossbar holds, in row order; its rows follow from it (docs/netlist.md, "Pattern layers")."""
    adc: CrossbarAdc | None = None
    row_permutation: list[Count] | None = None
    """``remap-faults``: the word line of each placement row (absent: the identity)."""
    column_permutation: list[Count] | None = None
    """``remap-faults``: the logical column position of each placement column, its ``m_c`` bit lines
    moving together (absent: the identity)."""

    @property
    def id(self) -> str:
        """``t<tile>.x<slot>``: the name diagnostics, reports and ``xbc inspect`` use."""
        return f"t{self.tile}.x{self.slot}"

    @property
    def site_ids(self) -> list[str]:
        """The ids of every copy of this crossbar: its own, then its ``replica_sites``' (each its own cells)."""
        return [self.id, *(f"t{tile}.x{slot}" for tile, slot, _ in self.replica_sites)]


class Summary(Record):
    """Totals over the netlist (docs/netlist.md, "Summary")."""

    crossbars: Count
    tiles: Count
    chips: Count
    host_ops: Count
    layers: Count
    weights: Count
    cell_utilisation: float
    crossbars_with_replicas: Count
    logical_crossbars: Count
    accumulation_crossbars: Count
    partial_sum_additions: Count
    tile_traffic_bits: Count
    phases: Count
    pipeline_period: Count
    pipeline_period_layer: str | None = None


class Blob(Record):
    """The checksum and size of a companion file."""

    sha256: Sha256
    bytes: Count


class Document(Record):
    """The whole of ``netlist.json``."""

    format: Literal["xbcompiler-netlist"]
    version: Literal[2]
    compiler: str
    pipeline: str
    target: dict[str, Any]
    target_fingerprint: Sha256
    inputs: Annotated[list[InputSpec], Meta(min_length=1)]
    nodes: list[Node]
    output: Any
    constants: list[Constant]
    layers: list[Layer]
    crossbars: list[Crossbar]
    summary: Summary
    provenance: dict[str, Any] = {}
    blobs: dict[str, Blob] = {}
