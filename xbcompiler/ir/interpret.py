"""An interpreter of the crossbar program, beside the IR: host ops from the allow-list, layers by a callback.

Placement is not executed (the emulator does that, from the netlist): a crossbar layer runs whatever
``layer(name, x)`` computes, by default its float matrix as unfold + matmul. Passes that need values
(``calibrate-adc``) and the numeric-check instrument use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..hostops import HOST_OPS
from .matrix import conv_via_im2col
from .program import XbarProgram
from .values import decode


def float_layer(program: XbarProgram) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """The layer callback that applies each layer's float matrix and bias."""
    def run(name: str, x: torch.Tensor) -> torch.Tensor:
        m = program.matrices[name]
        bias = None if m.bias is None else torch.from_numpy(m.bias).to(x.dtype)
        return conv_via_im2col(x, torch.from_numpy(m.weight).to(x.dtype), bias, m.geometry)
    return run


def run_program(program: XbarProgram, inputs: tuple, layer: Callable | None = None, record: bool = False):
    """The program's outputs for ``inputs`` (and with ``record`` every node's value by name)."""
    layer = layer or float_layer(program)
    env: dict = {}
    with torch.no_grad():
        for node in program.nodes:
            if node.op == "input":
                env[node.name] = inputs[int(node.target)]
            elif node.op == "const":
                env[node.name] = torch.from_numpy(program.constants[node.target])
            elif node.op == "host":
                args = decode(list(node.args), env)
                kwargs = {k: decode(v, env) for k, v in node.kwargs}
                env[node.name] = HOST_OPS[node.target].fn(*args, **kwargs)
            else:  # xbar
                env[node.name] = layer(node.target, env[node.args[0]["ref"]])
        out = decode(program.output, env)
    return (out, env) if record else out
