"""NeuroSim's network table (``NetWork_*.csv``) and the ``Param.cpp`` values the netlist's target implies.

DNN_NeuroSim (V1.x) reads a table with no header and one row per layer,
``IFM_H,IFM_W,IFM_C,K_H,K_W,OFM_C,pool,stride``, and counts a layer's input vectors as
``(IFM_H - K_H + 1) / stride * (IFM_W - K_W + 1) / stride`` (a valid, undilated convolution with one
stride for both axes). Each crossbar layer becomes one row (a grouped convolution one row per group,
NeuroSim having no groups), with ``IFM`` chosen so that this count is the netlist's number of output
positions: ``IFM = out * stride + K - 1``, the padded input for the common layers (docs/export.md).
``pool`` is 1 when the layer's output reaches a max pooling through element-wise host operations only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from math import prod
from typing import Any

from ..netlist.types import Layer, Node
from ..target import TargetSpec, target_from_dict
from ..version import __version__
from .record import Companion, Export

#: The companion file: the main file's name with this suffix (``NetWork.csv`` -> ``NetWork.param.txt``).
PARAM_SUFFIX = ".param.txt"

#: Host operations that keep a layer's output map as it is (one value in, one value out).
ELEMENTWISE = frozenset(["relu", "relu_", "relu6", "leaky_relu", "prelu", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid",
                         "tanh", "hardtanh", "elu", "mish", "clamp", "clip", "dropout", "batch_norm", "contiguous"])
#: The activations NeuroSim models (``reLu`` true or false in ``Param.cpp``).
ACTIVATIONS = frozenset(["relu", "relu_", "relu6", "sigmoid"])
MAX_POOLS = frozenset(["max_pool1d", "max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"])
#: Shape-only host operations, left out of the list of host work NeuroSim does not model.
SHAPES = frozenset(["flatten", "view", "reshape", "permute", "transpose", "contiguous", "getattr", "size", "getitem",
                    "unsqueeze", "squeeze"])


@dataclass(frozen=True)
class NetworkRow:
    """One row of the network table and the crossbar layer (and conv group) it stands for."""

    layer: str
    group: int | None  # the conv group, for a grouped layer written one row per group
    ifm_h: int
    ifm_w: int
    ifm_c: int
    k_h: int
    k_w: int
    ofm_c: int
    pool: int
    stride: int

    @property
    def values(self) -> tuple[int, ...]:
        """The eight columns, in NeuroSim's order."""
        return (self.ifm_h, self.ifm_w, self.ifm_c, self.k_h, self.k_w, self.ofm_c, self.pool, self.stride)

    @property
    def input_vectors(self) -> int:
        """What NeuroSim counts as the layer's input vectors (``numInVector``)."""
        return ((self.ifm_h - self.k_h + 1) // self.stride) * ((self.ifm_w - self.k_w + 1) // self.stride)


@dataclass(frozen=True)
class ParamValue:
    """One ``Param.cpp`` knob: its NeuroSim name, the value and where the value comes from."""

    name: str
    value: str
    source: str


def export(netlist) -> Export:
    """The network table and, as companion ``.param.txt``, the ``Param.cpp`` values and the row legend."""
    doc = netlist.doc
    target = target_from_dict(doc.target)
    notes: list[str] = []
    pools = pooling(doc.nodes)
    rows: list[NetworkRow] = []
    for layer in netlist.layers:
        rows += layer_rows(layer, pools.get(layer.name, (0, "")), notes)
    notes += target_notes(netlist, target)
    table = "".join(",".join(str(v) for v in r.values) + "\n" for r in rows)
    params = param_values(netlist, target)
    text = param_text(target, params, wrapper_args(netlist, target), rows, notes)
    return Export("neurosim", table, (Companion(PARAM_SUFFIX, text),), tuple(notes))


# ------------------------------------------------------------------------------------------------ rows


def output_positions(layer: Layer) -> tuple[int, int]:
    """``(H_out, W_out)``: output rows and columns of a convolution, ``(1, T)`` for ``T`` output vectors of a
    linear layer (tokens; 1 for a plain vector)."""
    if layer.geometry.kind == "conv2d":
        return layer.output_shape[-2], layer.output_shape[-1]
    if layer.geometry.kind == "conv1d":
        return 1, layer.output_shape[-1]
    return 1, max(1, prod(layer.output_shape) // layer.matrix_cols)


def padded_input(layer: Layer) -> tuple[int, int]:
    """The layer's input map with its padding, ``(H, W)`` (``(1, T)`` for a linear layer)."""
    g = layer.geometry
    if g.kind == "conv2d":
        return layer.input_shape[-2] + 2 * g.padding[0], layer.input_shape[-1] + 2 * g.padding[1]
    if g.kind == "conv1d":
        return 1, layer.input_shape[-1] + 2 * g.padding[1]
    return output_positions(layer)


def layer_rows(layer: Layer, pool: tuple[int, str], notes: list[str]) -> list[NetworkRow]:
    """The rows of one crossbar layer (one per conv group), adding to ``notes`` what they do not express."""
    g = layer.geometry
    h_out, w_out = output_positions(layer)
    k_h, k_w = (1, 1) if g.kind == "linear" else g.kernel
    square = g.stride[0] == g.stride[1] or g.kind == "linear"
    stride = g.stride[0] if square else 1
    ifm_h, ifm_w = h_out * stride + k_h - 1, w_out * stride + k_w - 1
    groups = layer.groups
    if g.kind == "linear":
        ifm_c, ofm_c = layer.matrix_rows, layer.matrix_cols
    else:
        ifm_c, ofm_c = g.in_channels // groups, g.out_channels // groups
    flag, pool_note = pool
    name = f"{layer.name} ({layer.kind})"
    if pool_note:
        notes.append(f"{name}: {pool_note}")
    if groups > 1:
        notes.append(f"{name}: {groups} conv groups written as {groups} rows of {ifm_c} -> {ofm_c} channels "
                     "(NeuroSim has no grouped convolution; each row is mapped on tiles of its own)")
    if not square:
        notes.append(f"{name}: stride {g.stride[0]}x{g.stride[1]} is not one value: written with stride 1 on "
                     f"the map NeuroSim needs for the same {h_out}x{w_out} outputs")
    if g.dilation != (1, 1):
        notes.append(f"{name}: dilation {g.dilation[0]}x{g.dilation[1]} written as an undilated "
                     f"{k_h}x{k_w} kernel (same weights and outputs; NeuroSim has no dilation)")
    padded = padded_input(layer)
    if (ifm_h, ifm_w) != padded and square and g.dilation == (1, 1):
        notes.append(f"{name}: IFM written as {ifm_h}x{ifm_w} (the padded input is {padded[0]}x{padded[1]}): "
                     f"NeuroSim's (IFM - K + 1) / stride then counts the netlist's {h_out}x{w_out} outputs")
    return [NetworkRow(layer.name, group if groups > 1 else None, ifm_h, ifm_w, ifm_c, k_h, k_w, ofm_c, flag, stride)
            for group in range(groups)]


# ------------------------------------------------------------------------------------------------ pooling


def _refs(value: Any) -> Iterator[str]:
    """The node names an encoded argument refers to (docs/netlist.md, "Encoded values")."""
    if isinstance(value, dict):
        if set(value) == {"ref"}:
            yield value["ref"]
        else:
            for v in value.values():
                yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def _op(node: Node) -> str:
    """A host node's operator without its module: ``torch.nn.functional.relu`` -> ``relu``."""
    return node.target.rpartition(".")[2]


def _ints(value: Any) -> tuple[int, ...] | None:
    """An encoded int or pair as a tuple (None when absent)."""
    if isinstance(value, dict) and "tuple" in value:
        value = value["tuple"]
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _two_by_two(node: Node) -> bool:
    """Whether a max pooling node is NeuroSim's 2x2 window with stride 2."""
    if _op(node).startswith("adaptive"):
        return False
    args = list(node.args) + [None] * 3
    kernel = _ints(node.kwargs.get("kernel_size", args[1]))
    stride = _ints(node.kwargs.get("stride", args[2]))
    return kernel is not None and set(kernel) == {2} and (not stride or set(stride) == {2})


def pooling(nodes: list[Node]) -> dict[str, tuple[int, str]]:
    """Per crossbar layer, NeuroSim's ``pool`` flag and a note when the pooling is not what NeuroSim models.

    The flag is 1 when the layer's output reaches a max pooling through element-wise host operations
    alone, each the only user of the value before it.
    """
    users: dict[str, list[Node]] = {}
    for node in nodes:
        for ref in set(_refs([node.args, node.kwargs])):
            users.setdefault(ref, []).append(node)
    found: dict[str, tuple[int, str]] = {}
    for node in nodes:
        if node.op != "xbar":
            continue
        current = node
        while len(next_ := users.get(current.name, [])) == 1 and next_[0].op == "host":
            op = _op(next_[0])
            if op in MAX_POOLS:
                exact = op == "max_pool2d" and _two_by_two(next_[0])
                shape = "" if exact else f"followed by {op}, not NeuroSim's 2x2 max pooling of stride 2; pool = 1"
                found[node.target] = (1, shape)
                break
            if "pool" in op:
                found[node.target] = (0, (f"followed by {op}, which runs on the host: NeuroSim models max pooling "
                                         "only; pool = 0"))
                break
            if op not in ELEMENTWISE:
                break
            current = next_[0]
    return found


# ------------------------------------------------------------------------------------------------ Param.cpp


def adc_bits(netlist, target: TargetSpec) -> int:
    """The ADC resolution: the largest per-crossbar ``adc.bits`` of a quantised netlist, else the target's
    (``lossless``: the lossless width of a read of every row)."""
    found = [x.adc.bits for x in netlist.crossbars if x.adc is not None]
    if found:
        return max(found)
    if target.adc.mode == "lossless":
        return target.lossless_adc_bits(target.crossbar.rows)
    return target.precision.adc_bits


def param_values(netlist, target: TargetSpec) -> list[ParamValue]:
    """The ``Param.cpp`` knobs the target determines, named as NeuroSim names them."""
    xbar, bits = target.crossbar, adc_bits(netlist, target)
    values = [
        ParamValue("operationmode", "2", "conventionalParallel: the rows of a row block are driven together"),
        ParamValue("memcelltype", "2", "RRAM"),
        ParamValue("numRowSubArray", str(xbar.rows), "crossbar.rows"),
        ParamValue("numColSubArray", str(xbar.cols), "crossbar.cols (bit lines)"),
        ParamValue("cellBit", str(xbar.cell_bits), "crossbar.cell_bits"),
        ParamValue("levelOutput", str(2 ** bits), f"2**{bits} levels: {bits}-bit ADC ({_adc_source(netlist, target)})"),
        ParamValue("numColMuxed", str(xbar.cols), "one ADC per crossbar (the cost model's area): every bit line "
                                                  "shares it"),
        ParamValue("novelMapping", "false", "the conventional (im2col) mapping, which is map-fully-folded"),
        ParamValue("pipeline", "true", "layers stream images one pipeline period apart (summary.pipeline_period)"),
    ]
    relu = (ACTIVATIONS - {"sigmoid"}) & {_op(n) for n in netlist.doc.nodes if n.op == "host"}
    if not relu and "sigmoid" in {_op(n) for n in netlist.doc.nodes if n.op == "host"}:
        values.append(ParamValue("reLu", "false", "the model's activation is sigmoid"))
    ratio = target.device.on_off_ratio
    if ratio:
        values.append(ParamValue("resistanceOff", f"resistanceOn*{ratio:g}", "device.on_off_ratio"))
    return values


def wrapper_args(netlist, target: TargetSpec) -> list[ParamValue]:
    """The arguments of NeuroSim's Python wrapper (``inference.py``) the target determines."""
    p, d = target.precision, target.device
    args = [ParamValue("--wl_weight", str(p.weight_bits), "precision.weight_bits (main's synapseBit)"),
            ParamValue("--wl_activate", str(p.input_bits), "precision.input_bits (main's numBitInput)"),
            ParamValue("--subArray", str(target.crossbar.rows), "crossbar.rows (the wrapper's subarrays are square)"),
            ParamValue("--parallelRead", str(target.crossbar.rows), "every row read at once (wrappers that have it)"),
            ParamValue("--ADCprecision", str(adc_bits(netlist, target)), _adc_source(netlist, target)),
            ParamValue("--cellBit", str(target.crossbar.cell_bits), "crossbar.cell_bits")]
    if d.on_off_ratio:
        args.append(ParamValue("--onoffratio", f"{d.on_off_ratio:g}", "device.on_off_ratio"))
    if d.program_sigma:
        args.append(ParamValue("--vari", f"{d.program_sigma:g}", "device.program_sigma (NeuroSim's variation is "
                                                               "Gaussian, ours log-normal)"))
    return args


def _adc_source(netlist, target: TargetSpec) -> str:
    if any(x.adc is not None for x in netlist.crossbars):
        return "the largest crossbar adc.bits"
    if target.adc.mode == "lossless":
        return f"adc.mode = lossless on {target.crossbar.rows} rows"
    return "precision.adc_bits"


def param_text(target: TargetSpec, params: list[ParamValue], wrapper: list[ParamValue], rows: list[NetworkRow],
               notes: list[str]) -> str:
    """The companion file: ``Param.cpp`` assignments, the precision arguments of ``main`` and of the Python
    wrapper, the row legend, the notes."""
    p = target.precision
    width = max(len(f"{v.name} = {v.value};") for v in params)
    lines = [(f"// NeuroSim Param.cpp values implied by target '{target.name}' (xbcompiler {__version__}, "
             "xbc export --format neurosim)"),
             "// Paste into Param::Param() (Inference_pytorch/NeuroSIM/Param.cpp, DNN_NeuroSim V1.x); every knob",
             "// not listed (technode, clkFreq, accesstype, SARADC, resistanceOn, ...) is not in the target: keep",
             "// NeuroSim's.",
             *(f"{f'{v.name} = {v.value};':<{width}}  // {v.source}" for v in params),
             "",
             (f"// main's arguments: synapseBit = {p.weight_bits} (precision.weight_bits), "
             f"numBitInput = {p.input_bits} (precision.input_bits)"),
             "// the Python wrapper's arguments:",
             "//   python inference.py --inference 1 " + " ".join(f"{a.name} {a.value}" for a in wrapper),
             *(f"//   {a.name} {a.value}: {a.source}" for a in wrapper),
             "",
             "// rows of the network table (IFM_H,IFM_W,IFM_C,K_H,K_W,OFM_C,pool,stride):"]
    lines += [f"// {i}: {r.layer}{'' if r.group is None else f' group {r.group}'}: {','.join(map(str, r.values))}"
              for i, r in enumerate(rows, 1)]
    if notes:
        lines += ["", "// not expressed, or expressed approximately:"] + [f"// - {n}" for n in notes]
    return "\n".join(lines) + "\n"


def target_notes(netlist, target: TargetSpec) -> list[str]:
    """What of the netlist and its target NeuroSim's table and ``Param.cpp`` do not express."""
    notes = []
    layers = netlist.layers
    strategies = sorted({layer.strategy for layer in layers} - {"fully-folded"})
    if strategies:
        notes.append(f"strategy {', '.join(strategies)}: NeuroSim maps every layer conventionally (im2col, as "
                     "map-fully-folded does), so its subarray counts differ; compile with --pipeline fully-folded "
                     "to compare them")
    replicated = [layer.name for layer in layers if layer.replicas > 1]
    if replicated:
        notes.append(f"replicated layers ({', '.join(replicated)}): NeuroSim chooses its own duplication "
                     "(speedUpDegree)")
    cells = -(-target.precision.weight_bits // target.crossbar.cell_bits)
    if target.m_c != cells:
        notes.append(f"encoding.signed = {target.encoding.signed}: {target.m_c} bit lines per weight, NeuroSim "
                     f"stores one on ceil(synapseBit / cellBit) = {cells}")
    if target.precision.dac_bits > 1:
        notes.append(f"precision.dac_bits = {target.precision.dac_bits}: NeuroSim drives inputs one bit per cycle")
    if target.encoding.flip_columns:
        notes.append("encoding.flip_columns (ISAAC's saved ADC bit) is not modelled by NeuroSim")
    if target.adc.mode == "calibrated":
        notes.append("adc.mode = calibrated: NeuroSim has one ADC range; the per-read steps are not exported")
    if target.encoding.signed == "polarized":
        notes.append("encoding.signed = polarized: FORMS fragments and their sign table are not modelled by NeuroSim")
    if target.crossbar.rows != target.crossbar.cols:
        notes.append(f"{target.crossbar.rows}x{target.crossbar.cols} crossbars: the Python wrapper's --subArray is "
                     "square (Param.cpp's numRowSubArray and numColSubArray are set apart)")
    if target.adc.output_bits:
        notes.append(f"adc.output_bits = {target.adc.output_bits} (output truncation) is not modelled by NeuroSim")
    d = target.device
    if d.read_noise or d.sa0_rate or d.sa1_rate or d.fault_map:
        notes.append("[device] read noise, stuck cells and fault maps are not exported: of the device model only "
                     "on_off_ratio and program_sigma have NeuroSim counterparts (--onoffratio, --vari)")
    host = Counter(_op(n) for n in netlist.doc.nodes if n.op == "host")
    other = sorted(set(host) - ACTIVATIONS - MAX_POOLS - SHAPES)
    if other:
        notes.append(f"{sum(host[o] for o in other)} host operations ({', '.join(other[:8])}"
                     f"{', ...' if len(other) > 8 else ''}) are not in the table: NeuroSim models activations and max "
                     "pooling only")
    return notes
