"""Channel spaces of a canonical fx graph: which tensors must share one channel order (background §1.6).

A *space* is an equivalence class of channel axes (dim 1) that one permutation reorders together:
a crossbar layer starts one with its output channels; channel-wise ops (activations, pooling,
BatchNorm, padding, reductions over other dims) keep their input's; residual additions (any
elementwise op of two tensors) merge their operands'; a concatenation along channels is a sequence
of *segments*, one per operand, permuted each by its own space; a flatten turns every channel into a
run of ``H*W`` features (the segment's ``expand``). Depthwise convolutions with one output per
channel pass the permutation through (their weight and bias are permuted like a BatchNorm's); other
grouped layers constrain the space to permutations within their groups.

Reordering a space permutes the output channels (weight, bias) of its producers, the parameters of
its BatchNorms and depthwise layers, and the input channels of its consumers, so the graph computes
the same function. Spaces that reach the graph's inputs or outputs, or an op this table does not
know, are *pinned* (kept in their order), with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd, prod

import numpy as np
import torch
from torch import fx, nn

from ..diagnostics import CompileError
from ..frontend import ops
from ..frontend.trace import check_inputs, is_crossbar_module, trace

#: Ops whose output keeps the channel order of their first argument.
CHANNELWISE = frozenset(
    [f"torch.nn.functional.{n}" for n in ("relu", "relu6", "leaky_relu", "gelu", "silu", "hardswish",
                                          "hardsigmoid", "sigmoid", "tanh", "hardtanh", "elu", "max_pool1d",
                                          "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
                                          "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d")]
    + [f"torch.{n}" for n in ("relu", "sigmoid", "tanh", "clamp", "clip", "neg", "sqrt", "exp", "abs")]
    + [f"torch.Tensor.{n}" for n in ("relu", "sigmoid", "tanh", "clamp", "contiguous", "neg", "exp", "sqrt", "abs")]
    + ["operator.neg", "math.sqrt"])
#: Elementwise ops of two operands: tensor operands share one order.
ELEMENTWISE = frozenset(["operator.add", "operator.sub", "operator.mul", "operator.truediv", "operator.pow",
                         "torch.add", "torch.sub", "torch.mul", "torch.div", "torch.pow", "torch.maximum",
                         "torch.minimum", "torch.Tensor.add", "torch.Tensor.sub", "torch.Tensor.mul",
                         "torch.Tensor.div", "torch.Tensor.pow"])
REDUCTIONS = frozenset(["torch.mean", "torch.sum", "torch.amax", "torch.Tensor.mean", "torch.Tensor.sum",
                        "torch.Tensor.amax"])
RESHAPES = frozenset(["torch.flatten", "torch.reshape", "torch.Tensor.flatten", "torch.Tensor.view",
                      "torch.Tensor.reshape"])
CONCATS = frozenset(["torch.cat", "torch.concat"])


@dataclass(frozen=True)
class Segment:
    """``size`` channels of space ``space``, each expanded into ``expand`` consecutive features."""

    space: int
    size: int
    expand: int = 1


@dataclass
class Space:
    """One equivalence class (after merging, the root's record holds everything)."""

    size: int
    block: int
    """Permutations map each block of ``block`` consecutive channels onto itself (grouped layers)."""
    pinned: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    """Crossbar modules whose output channels are this space."""
    channelwise: list[tuple[str, int]] = field(default_factory=list)
    """(attribute or module path, offset): per-channel tensors (BatchNorm, depthwise) whose entries from
    ``offset`` are this space's channels, permuted with it."""


@dataclass(frozen=True)
class Consumer:
    """A crossbar module reading a tensor whose channels are ``segments``."""

    node: str
    module: str
    segments: tuple[Segment, ...]


class ChannelSpaces:
    """The spaces of a graph; build with :func:`channel_spaces`."""

    def __init__(self):
        self.parent: list[int] = []
        self.spaces: list[Space] = []
        self.consumers: list[Consumer] = []
        self.depthwise_inputs: dict[str, tuple[str, ...]] = {}
        """Depthwise module path -> the producers of its input space when the analysis met it: every
        crossbar layer upstream of its input (a space merged later, e.g. by a squeeze-and-excitation gate
        multiplying its output, adds none)."""

    # --- union-find ------------------------------------------------------------------------------
    def new(self, size: int, pinned: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(Space(size, size, [pinned] if pinned else []))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        self.parent[b] = a
        sa, sb = self.spaces[a], self.spaces[b]
        sa.block = gcd(sa.block, sb.block)
        sa.pinned += sb.pinned
        sa.producers += sb.producers
        sa.channelwise += sb.channelwise
        return a

    def space(self, s: int) -> Space:
        return self.spaces[self.find(s)]

    def pin(self, segments, reason: str) -> None:
        for seg in segments or ():
            self.space(seg.space).pinned.append(reason)

    def roots(self) -> list[int]:
        return sorted({self.find(s) for s in range(len(self.parent))})

    def consumers_of(self, root: int) -> list[Consumer]:
        return [c for c in self.consumers if any(self.find(seg.space) == root for seg in c.segments)]

    # --- permutations ----------------------------------------------------------------------------
    def axis_perm(self, segments, perms: dict[int, np.ndarray]) -> np.ndarray:
        """The permutation of a channel axis made of ``segments`` (new position -> old index)."""
        parts, offset = [], 0
        for seg in segments:
            p = perms.get(self.find(seg.space))
            p = np.arange(seg.size) if p is None else p
            feats = (p[:, None] * seg.expand + np.arange(seg.expand)[None, :]).reshape(-1)
            parts.append(offset + feats)
            offset += seg.size * seg.expand
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if _shape(a) is not None]


def model_spaces(model: nn.Module, example_inputs) -> ChannelSpaces | None:
    """The spaces of ``model`` traced with torch.fx on ``example_inputs``; None when it does not trace."""
    try:
        return channel_spaces(trace(model, check_inputs(example_inputs)))
    except CompileError:
        return None


def channel_spaces(gm: fx.GraphModule) -> ChannelSpaces:
    """Analyse a canonical graph (from :func:`xbcompiler.frontend.trace.trace`, before ``lower-im2col``)."""
    cs = ChannelSpaces()
    seg: dict[fx.Node, tuple[Segment, ...]] = {}
    users_of_attr: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            users_of_attr[n.target] = users_of_attr.get(n.target, 0) + len(n.users)

    def fresh(node: fx.Node, reason: str | None) -> None:
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            seg[node] = (Segment(cs.new(shape[1], reason), shape[1]),)

    for node in gm.graph.nodes:
        ins = _tensor_args(node)
        if node.op == "placeholder":
            fresh(node, "a graph input")
        elif node.op == "get_attr":
            continue
        elif node.op == "output":
            for a in ins:
                cs.pin(seg.get(a), "a graph output")
        elif node.op == "call_module":
            _module(gm, node, seg, cs, fresh)
        else:
            _function(node, ops.node_name(node), ins, seg, cs, fresh, users_of_attr)
    return cs


def _module(gm, node, seg, cs: ChannelSpaces, fresh) -> None:
    mod = gm.get_submodule(node.target)
    x = node.args[0] if node.args else None
    segs = seg.get(x)
    if not is_crossbar_module(mod) or segs is None:
        cs.pin(segs, f"read by module {node.target}")
        fresh(node, f"output of module {node.target}")
        return
    in_shape, out_shape = _shape(x), _shape(node)
    if isinstance(mod, nn.Linear) and len(in_shape) != 2:
        cs.pin(segs, f"read by {node.name} along its last dimension")
        fresh(node, f"output of {node.name} along its last dimension")
        return
    groups = getattr(mod, "groups", 1)
    c_in, c_out = in_shape[1], out_shape[1]
    if groups > 1 and groups == c_in == c_out and len(segs) == 1 and segs[0].expand == 1:
        # depthwise, one output per channel: the permutation passes through (weight and bias follow it)
        cs.space(segs[0].space).channelwise.append((node.target, 0))
        cs.depthwise_inputs[node.target] = tuple(cs.space(segs[0].space).producers)
        seg[node] = segs
        return
    if groups > 1:
        if len(segs) != 1 or segs[0].expand != 1:
            cs.pin(segs, f"read by grouped layer {node.name} through a concatenation or flatten")
        else:
            s = cs.space(segs[0].space)
            s.block = gcd(s.block, c_in // groups)
    cs.consumers.append(Consumer(node.name, node.target, segs))
    space = cs.new(c_out, f"output of grouped layer {node.name}" if groups > 1 else None)
    cs.space(space).producers.append(node.target)
    seg[node] = (Segment(space, c_out),)


def _function(node, name, ins, seg, cs: ChannelSpaces, fresh, users_of_attr) -> None:
    first = node.args[0] if node.args else None
    if name in CHANNELWISE or name == "torch.nn.functional.pad" and _spatial_pad(node):
        if first in seg:
            seg[node] = seg[first]
            cs.pin([s for a in ins if a is not first for s in seg.get(a, ())], f"an extra operand of {node.name}")
            return
    elif name == "torch.nn.functional.batch_norm" and first in seg:
        attrs = [a for a in node.args[1:5] if isinstance(a, fx.Node)]
        if all(a.op == "get_attr" and users_of_attr.get(a.target) == 1 for a in attrs) \
                and all(s.expand == 1 for s in seg[first]):
            offset = 0
            for s in seg[first]:  # a BatchNorm after a concatenation: each segment's slice of the parameters
                cs.space(s.space).channelwise += [(a.target, offset) for a in attrs]
                offset += s.size
            seg[node] = seg[first]
            return
    elif name in ELEMENTWISE:
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        spaced = [a for a in tensors if a in seg and _channels(a) == _channels(node)]
        scalar_like = all(a in spaced or _numel(a) == 1 or _channels(a) == 1 for a in tensors)
        if spaced and scalar_like and _same_structure([seg[a] for a in spaced]):
            for a in spaced[1:]:
                for s0, s1 in zip(seg[spaced[0]], seg[a]):
                    cs.union(s0.space, s1.space)
            seg[node] = seg[spaced[0]]
            return
    elif name in REDUCTIONS and first in seg and _keeps_channels(node):
        seg[node] = seg[first]
        return
    elif name in RESHAPES and first in seg and _is_flatten(first, node):
        expand = prod(_shape(first)[2:])
        seg[node] = tuple(Segment(s.space, s.size, s.expand * expand) for s in seg[first])
        return
    elif name in CONCATS and isinstance(first, (list, tuple)) and all(a in seg for a in first) \
            and _cat_dim(node, first) == 1:
        seg[node] = tuple(s for a in first for s in seg[a])
        return
    elif name == "builtins.getattr" or name in ("torch.Tensor.size", "torch.Tensor.dim"):
        return
    for a in ins:
        cs.pin(seg.get(a), f"read by {name or node.target} ({node.name})")
    fresh(node, f"output of {name or node.target} ({node.name})")


def _channels(node) -> int | None:
    """Size of dim 1 (``None`` for scalars and vectors)."""
    shape = _shape(node)
    return shape[1] if shape is not None and len(shape) >= 2 else None


def _numel(node) -> int:
    shape = _shape(node)
    return 1 if shape is None else prod(shape)


def _same_structure(structures) -> bool:
    first = [(s.size, s.expand) for s in structures[0]]
    return all([(s.size, s.expand) for s in st] == first for st in structures[1:])


def _spatial_pad(node) -> bool:
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    shape = _shape(node.args[0])
    return isinstance(pad, (tuple, list)) and shape is not None and len(pad) <= 2 * (len(shape) - 2)


def _keeps_channels(node) -> bool:
    """A reduction over dims that exclude the batch and channel dims."""
    shape = _shape(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if shape is None or dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [d % len(shape) for d in dims]
    return 0 not in dims and 1 not in dims


def _is_flatten(src, node) -> bool:
    """Reshape ``[N, C, *S] -> [N, C * prod(S)]``, i.e. ``flatten(1)``."""
    a, b = _shape(src), _shape(node)
    return a is not None and b is not None and len(a) >= 2 and len(b) == 2 and b[0] == a[0] and b[1] == prod(a[1:])


def _cat_dim(node, tensors) -> int | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    shape = _shape(tensors[0])
    return dim % len(shape) if isinstance(dim, int) and shape is not None else None


# --- applying permutations ---------------------------------------------------------------------------

def attribute(gm: nn.Module, path: str) -> torch.Tensor | nn.Module:
    """The tensor or module at a dotted attribute path (AttributeError if there is none)."""
    value = gm
    for part in path.split("."):
        value = getattr(value, part)
    return value


def apply_permutations(gm: fx.GraphModule, cs: ChannelSpaces, perms: dict[int, np.ndarray]) -> None:
    """Permute producers, per-channel tensors and consumers in place; ``perms`` maps space roots to
    permutations (new position -> old channel); other spaces keep their order."""
    from .reorder import permute_inputs, permute_outputs

    with torch.no_grad():
        for root, perm in perms.items():
            space = cs.space(root)
            for path in space.producers:
                mod = gm.get_submodule(path)
                mod.weight.copy_(permute_outputs(mod.weight, perm))
                if mod.bias is not None:
                    mod.bias.copy_(permute_outputs(mod.bias, perm))
            for path, offset in space.channelwise:
                target = attribute(gm, path)
                if isinstance(target, nn.Module):  # depthwise layer
                    target.weight.copy_(permute_outputs(target.weight, perm))
                    if target.bias is not None:
                        target.bias.copy_(permute_outputs(target.bias, perm))
                else:
                    part = target[offset:offset + len(perm)]
                    part.copy_(permute_outputs(part, perm))
        for c in cs.consumers:
            if not any(cs.find(s.space) in perms for s in c.segments):
                continue
            mod = gm.get_submodule(c.module)
            perm = cs.axis_perm(c.segments, perms)
            mod.weight.copy_(permute_inputs(mod.weight, perm, getattr(mod, "groups", 1)))

