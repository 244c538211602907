"""``lower-to-xbar``: the boundary from the fx graph to the immutable crossbar program."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from xbcompiler.diagnostics import CompileError, Location, source_of
from xbcompiler.frontend import ops
from xbcompiler.ir.matrix import Im2colLayer
from xbcompiler.ir.program import InputSpec, ProgramNode, XbarProgram
from xbcompiler.ir.values import encode
from xbcompiler.pipeline import Pass, PassContext


@dataclass(frozen=True)
class LowerToXbarPass(Pass):
    """Every :class:`Im2colLayer` becomes a crossbar layer, every other op a host op, every attribute a constant."""

    name: ClassVar[str] = "lower-to-xbar"
    stage: ClassVar[str] = "lower"
    needs: ClassVar[frozenset[str]] = frozenset({"im2col"})
    establishes: ClassVar[frozenset[str]] = frozenset({"xbar"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> XbarProgram:
        inputs, nodes, matrices, constants = [], [], {}, {}
        output = None
        for node in gm.graph.nodes:
            args = encode(tuple(node.args))["tuple"]
            kwargs = tuple(sorted((k, encode(v)) for k, v in node.kwargs.items()))
            if node.op == "placeholder":
                meta = node.meta.get("tensor_meta")
                shape = tuple(meta.shape[1:]) if meta is not None else ()
                dtype = str(meta.dtype).removeprefix("torch.") if meta is not None else "float32"
                nodes.append(ProgramNode(node.name, "input", str(len(inputs))))
                inputs.append(InputSpec(node.name, shape, dtype))
            elif node.op == "get_attr":
                constants[node.target] = _constant(gm, node)
                nodes.append(ProgramNode(node.name, "const", node.target))
            elif node.op == "call_module":
                layer = gm.get_submodule(node.target)
                if not isinstance(layer, Im2colLayer):
                    raise _unsupported(node, f"module '{node.target}' was not lowered")
                matrices[layer.matrix.name] = layer.matrix
                nodes.append(ProgramNode(node.name, "xbar", layer.matrix.name, tuple(args[:1])))
            elif node.op in ("call_function", "call_method"):
                target = ops.node_name(node)
                if target is None:
                    raise _unsupported(node, f"operator {node.target} is not supported")
                nodes.append(ProgramNode(node.name, "host", target, tuple(args), kwargs))
            elif node.op == "output":
                output = encode(node.args[0])
        return XbarProgram(inputs=tuple(inputs), nodes=tuple(nodes), output=output, matrices=matrices,
                           constants=constants)


def _constant(gm: fx.GraphModule, node: fx.Node) -> np.ndarray:
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    if not isinstance(value, torch.Tensor):
        raise _unsupported(node, f"attribute '{node.target}' is not a tensor")
    value = value.detach().cpu()
    if value.dtype in (torch.bfloat16, torch.float16):
        value = value.float()
    return np.ascontiguousarray(value.numpy())


def _unsupported(node: fx.Node, message: str) -> CompileError:
    return CompileError("XB103", message, location=Location(node=node.name, source=source_of(node)))
