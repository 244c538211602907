"""Fixed-point types through the host graph: which host ops stay integer, alignment shifts, float ops.

After quantisation every crossbar layer's output is an integer tensor at a known exponent. Host ops
that only move, select or compare values keep the exponent; adds and concatenations need one
exponent for all operands, so a ``requantize`` shift is inserted on the operands with the smaller
exponent (background §3.2); averages over a power-of-two count are a shift; anything else computes in float
and is listed with the reason. The next crossbar layer quantises whatever it receives.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import fx

from ..frontend import ops
from .ops import requantize


@dataclass(frozen=True)
class QType:
    """An integer tensor at ``2**exponent`` (``signed`` when it can be negative)."""

    exponent: int
    signed: bool = True


#: Ops whose output is (a selection or rearrangement of) their first tensor argument: same exponent.
SAME = {f"{p}.{n}" for p, names in {
    "torch.nn.functional": "relu max_pool1d max_pool2d adaptive_max_pool1d adaptive_max_pool2d",
    "torch": "relu flatten reshape permute transpose unsqueeze squeeze chunk split index_select amax amin",
    "torch.Tensor": "relu view reshape permute transpose contiguous flatten unsqueeze squeeze chunk split "
                    "expand expand_as repeat index_select amax amin",
    "operator": "getitem",
    "xbcompiler.hostops": "max_unpool2d",
}.items() for n in names.split()}
NEG = {"operator.neg", "torch.neg", "torch.Tensor.neg"}
ADD = {"operator.add", "operator.sub", "torch.add", "torch.sub", "torch.Tensor.add", "torch.Tensor.sub"}
CAT = {"torch.cat", "torch.concat", "torch.stack"}
MUL = {"operator.mul", "torch.mul", "torch.Tensor.mul"}
MATMUL = {"operator.matmul", "torch.matmul", "torch.bmm", "torch.Tensor.matmul"}
DIV = {"operator.truediv", "torch.div", "torch.Tensor.div"}
SUM = {"torch.sum", "torch.Tensor.sum"}
MEAN = {"torch.mean", "torch.Tensor.mean"}
AVG_POOL = {"torch.nn.functional.avg_pool1d", "torch.nn.functional.avg_pool2d"}
ADAPTIVE_AVG = {"torch.nn.functional.adaptive_avg_pool1d", "torch.nn.functional.adaptive_avg_pool2d"}
CLAMP = {"torch.clamp", "torch.clip", "torch.Tensor.clamp", "torch.nn.functional.hardtanh",
         "torch.nn.functional.relu6"}
REQUANTIZE = "xbcompiler.quant.ops.requantize"
SHAPE_ONLY = {"torch.Tensor.size", "torch.Tensor.dim", "builtins.getattr", "torch.zeros", "torch.zeros_like",
              "torch.ones_like"}
#: Ops whose output is all zeros: on every grid, so they join any alignment as they are.
ZEROS = {"torch.zeros", "torch.zeros_like"}

#: Why an op keeps computing in float (the report lists every such node).
FLOAT_REASONS = {
    "sigmoid": "nonlinear (exponential and division): needs a lookup table or a float unit",
    "hardsigmoid": "division by 6: not a power of two",
    "tanh": "nonlinear (exponentials): needs a lookup table or a float unit",
    "softmax": "exponentials and a normalising division",
    "log_softmax": "exponentials and a logarithm",
    "gelu": "nonlinear (error function): needs a lookup table or a float unit",
    "silu": "x * sigmoid(x): nonlinear",
    "hardswish": "division by 6: not a power of two",
    "elu": "nonlinear (exponential)",
    "leaky_relu": "negative slope not a power of two",
    "prelu": "learned negative slopes, not powers of two",
    "layer_norm": "mean and variance normalisation (division, square root)",
    "group_norm": "mean and variance normalisation (division, square root)",
    "instance_norm": "mean and variance normalisation (division, square root)",
    "batch_norm": "BatchNorm not folded into a crossbar layer: per-channel float scale",
    "var": "variance (squares, a division)", "std": "standard deviation (squares, a division, a square root)",
    "exp": "exponential", "sqrt": "square root", "pow": "power", "abs": "absolute value of a float operand",
}


def _log2_exact(value) -> int | None:
    """``log2(value)`` when ``value`` is a positive power of two, else None."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
        return None
    mantissa, exp = math.frexp(float(value))
    return exp - 1 if mantissa == 0.5 else None


def _on_grid(value, q: QType) -> bool:
    return isinstance(value, numbers.Real) and float(value * 2.0 ** -q.exponent).is_integer()


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


@dataclass
class Propagation:
    """The result of :func:`propagate`: types, inserted alignments, float host ops."""

    types: dict[str, QType]
    aligned: list[dict]
    floats: list[dict]


def propagate(gm: fx.GraphModule, layer_types: dict[str, QType], insert: bool = True) -> Propagation:
    """Walk the graph once; with ``insert``, add ``requantize`` nodes that align add/cat operands."""
    types: dict[str, QType] = {}
    result = Propagation(types, [], [])
    for node in list(gm.graph.nodes):
        if node.name in layer_types:
            types[node.name] = layer_types[node.name]
            continue
        name = ops.node_name(node)
        if name is None or name in SHAPE_ONLY:
            continue
        q = _rule(gm, node, name, types, result, insert)
        if q is not None:
            types[node.name] = q
        elif any(isinstance(a, fx.Node) and a.name in types for a in node.all_input_nodes) or \
                name.rsplit(".", 1)[-1] in FLOAT_REASONS:
            short = name.rsplit(".", 1)[-1]
            result.floats.append({"node": node.name, "op": name,
                                  "reason": FLOAT_REASONS.get(short, _generic_reason(node, name, types))})
    return result


def _generic_reason(node: fx.Node, name: str, types: dict) -> str:
    if any(isinstance(a, fx.Node) and a.name not in types for a in node.all_input_nodes):
        return "an operand is already float (a model input or the output of a float op)"
    return f"{name} is not an integer or shift operation"


def _tensor_args(node: fx.Node) -> list:
    return [a for a in node.args if isinstance(a, fx.Node)]


def _rule(gm, node, name, types, result, insert) -> QType | None:
    """The output type of one host op, or None (float); may insert alignment shifts."""
    args = node.args
    first = args[0] if args else None
    q0 = types.get(first.name) if isinstance(first, fx.Node) else None
    if name in SAME:
        return q0
    if name == REQUANTIZE:
        return QType(args[1], q0.signed) if q0 else None
    if name == "xbcompiler.hostops.cast":  # a cast that keeps every integer on the grid exact
        return q0 if node.kwargs.get("dtype") in (None, torch.float32, torch.float64) else None
    if name in NEG:
        return QType(q0.exponent, True) if q0 else None
    if name in SUM:
        return q0
    if name in CLAMP:
        bounds = [a for a in list(args[1:]) + list(node.kwargs.values()) if a is not None]
        if name.endswith("relu6"):
            bounds = [0.0, 6.0]
        return q0 if q0 and all(_on_grid(b, q0) for b in bounds) else None
    if name == "torch.nn.functional.pad":
        value = node.kwargs.get("value", args[3] if len(args) > 3 else 0.0) or 0.0
        mode = node.kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        return q0 if q0 and mode == "constant" and _on_grid(value, q0) else None
    if name in ADD:
        q = _align(gm, node, [first, args[1] if len(args) > 1 else None], types, result, insert)
        return QType(q.exponent, True) if q and name.endswith("sub") else q
    if name in CAT:
        items = list(first) if isinstance(first, (list, tuple)) else []
        return _align(gm, node, items, types, result, insert)
    if name in MUL | MATMUL:
        return _product(args, types)
    if name in DIV:
        e = _log2_exact(args[1]) if len(args) > 1 else None
        return QType(q0.exponent - e, q0.signed) if q0 and e is not None else None
    if name in MEAN | AVG_POOL | ADAPTIVE_AVG:
        count = _divisor(node, name)
        e = _log2_exact(count) if count else None
        return QType(q0.exponent - e, q0.signed) if q0 and e is not None else None
    return None


def _product(args, types) -> QType | None:
    qs = [types.get(a.name) if isinstance(a, fx.Node) else a for a in args[:2]]
    if len(qs) < 2 or any(q is None for q in qs):
        return None
    exps = []
    for q in qs:
        if isinstance(q, QType):
            exps.append(q.exponent)
        elif isinstance(q, numbers.Integral) and not isinstance(q, bool):
            exps.append(0)
        elif (e := _log2_exact(q)) is not None:
            exps.append(e)
        else:
            return None
    return QType(sum(exps), True)


def _divisor(node: fx.Node, name: str) -> int | None:
    """The count an average divides by, when it is the same for every output value."""
    shape = _shape(node.args[0])
    if shape is None:
        return None
    args = list(node.args) + [None] * 8
    if name in MEAN:
        dims = node.kwargs.get("dim", args[1])
        dims = range(len(shape)) if dims is None else ([dims] if isinstance(dims, int) else dims)
        return math.prod(shape[d] for d in dims)
    if name in ADAPTIVE_AVG:
        size = node.kwargs.get("output_size", args[1])
        spatial = shape[2:]
        size = [size] * len(spatial) if isinstance(size, int) else list(size)
        if any(s is None or n % s for n, s in zip(spatial, size)):
            return None
        return math.prod(n // s for n, s in zip(spatial, size))
    kernel = node.kwargs.get("kernel_size", args[1])
    nd = 1 if name.endswith("1d") else 2
    kernel = [kernel] * nd if isinstance(kernel, int) else list(kernel)
    padding = node.kwargs.get("padding", args[3] if args[3] is not None else 0)
    include_pad = node.kwargs.get("count_include_pad", args[5] if args[5] is not None else True)
    override = node.kwargs.get("divisor_override", args[6]) if nd == 2 else None
    if override:
        return int(override)
    if any(padding if isinstance(padding, (list, tuple)) else [padding]) and not include_pad:
        return None
    return math.prod(kernel)


def _align(gm, node, operands, types, result, insert) -> QType | None:
    """Give every quantised operand the largest exponent among them by inserting ``requantize``."""
    nodes = [a for a in operands if isinstance(a, fx.Node) and ops.node_name(a) not in ZEROS]
    if not nodes or any(a.name not in types for a in nodes):
        return None
    scalars = [a for a in operands if not isinstance(a, fx.Node) and a is not None]
    qs = [types[a.name] for a in nodes]
    e = max(q.exponent for q in qs)
    target = QType(e, any(q.signed for q in qs))
    if not all(_on_grid(s, target) for s in scalars):
        return None
    for a, q in zip(nodes, qs):
        if q.exponent == e:
            continue
        result.aligned.append({"node": node.name, "operand": a.name, "shift": e - q.exponent})
        if insert:
            with gm.graph.inserting_before(node):
                shifted = gm.graph.call_function(requantize, (a, e))
            shifted.meta = {k: v for k, v in a.meta.items() if k in ("tensor_meta", "stack_trace")}
            node.replace_input_with(a, shifted)
            types[shifted.name] = QType(e, q.signed)
    return target


def is_float_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()
