"""Execute a netlist: host ops with torch semantics, crossbar layers by the chosen mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ..diagnostics import CompileError, Location
from ..hostops import GETATTR_ALLOWED, HOST_OPS
from ..ir.values import check_encoded, decode
from ..netlist import Netlist
from ..netlist.types import Layer, Node
from .dense import DenseLayer
from .integer import IntegerLayer
from .literal import literal_ideal


def _ideal(netlist: Netlist, layer: Layer, device: torch.device, literal: bool):
    if layer.quant is not None:
        raise CompileError("XB520", "the netlist is quantised (integer cells): run it in mode 'integer'",
                           hint="ideal mode executes float netlists (compiled without calibration data)")
    return literal_ideal(netlist, layer, device) if literal else DenseLayer(netlist, layer, device)


def _integer(netlist: Netlist, layer: Layer, device: torch.device, literal: bool):
    return IntegerLayer(netlist, layer, device, path="per-read" if literal else "fast", literal=literal)


#: Layer kernels by emulator mode: ``(netlist, layer, device, literal) -> callable on the layer input``.
KERNELS: dict[str, Callable] = {"ideal": _ideal, "integer": _integer}


def register_kernel(mode: str):
    """Register the kernel factory of an emulator mode (``(netlist, layer, device, literal) -> kernel``)."""
    def register(factory):
        KERNELS[mode] = factory
        return factory
    return register


def modes() -> list[str]:
    return sorted(KERNELS)


@contextlib.contextmanager
def _exact_float():
    """TF32 off while emulating on CUDA (ideal mode is compared against float32 torch)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def as_input_tuple(netlist: Netlist, inputs) -> tuple[torch.Tensor, ...]:
    """Inputs as a tuple matching the netlist's input list (count and non-batch shape), or XB505."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    specs = netlist.doc.inputs
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise CompileError("XB505", "emulator inputs must be a tensor or a tuple of tensors")
    if len(inputs) != len(specs):
        raise CompileError("XB505", f"the netlist takes {len(specs)} input(s), got {len(inputs)}")
    for t, spec in zip(inputs, specs):
        if list(t.shape[1:]) != spec.shape:
            raise CompileError("XB505", f"input '{spec.name}' must have shape [batch, "
                                        f"{', '.join(map(str, spec.shape))}], got {list(t.shape)}",
                               location=Location(node=spec.name))
    return tuple(inputs)


class Emulator:
    """A netlist prepared for one device and mode; call it like the model."""

    def __init__(self, netlist: Netlist, mode: str = "ideal", device: torch.device | str = "cpu",
                 literal: bool = False):
        if mode not in KERNELS:
            raise CompileError("XB505", f"unknown emulator mode '{mode}' (known: {', '.join(modes())})")
        self.netlist, self.mode, self.device, self.literal = netlist, mode, torch.device(device), literal
        self.constants = {c.name: torch.from_numpy(netlist.arrays[c.key].copy()).to(self.device)
                          for c in netlist.doc.constants}
        self.layers: dict[str, Callable] = {layer.name: KERNELS[mode](netlist, layer, self.device, literal)
                                            for layer in netlist.layers}
        self.steps = [self._step(node) for node in netlist.doc.nodes]

    def _step(self, node: Node) -> Callable[[dict, tuple], object]:
        op, target = node.op, node.target
        if op == "input":
            index = int(target)
            return lambda env, inputs: inputs[index]
        if op == "const":
            value = self.constants[target]
            return lambda env, inputs: value
        if op == "xbar":
            return self._xbar_step(self.netlist.layer(target), self.layers[target], node.args[0])
        if target not in HOST_OPS:
            raise CompileError("XB502", f"node '{node.name}' names host op '{target}', which is not on the "
                                        "allow-list", hint="netlists are never executed beyond the allow-list")
        fn = HOST_OPS[target].fn
        args, kwargs = node.args, node.kwargs
        try:
            check_encoded([args, *kwargs.values()])
        except ValueError as exc:
            raise CompileError("XB502", f"node '{node.name}': {exc}") from None
        if target == "builtins.getattr" and (len(args) != 2 or args[1] not in GETATTR_ALLOWED):
            raise CompileError("XB502", f"node '{node.name}' reads a forbidden attribute")
        name = node.name

        def run(env, inputs):
            try:
                return fn(*decode(args, env), **{k: decode(v, env) for k, v in kwargs.items()})
            except (RuntimeError, ValueError, TypeError, IndexError, OverflowError) as exc:
                raise CompileError("XB508", f"host operation '{name}' ({target}) failed: {exc}",
                                   location=Location(node=name),
                                   hint="the netlist's arguments do not fit the tensors it computes; recompile") from None
        return run

    @staticmethod
    def _xbar_step(layer: Layer, kernel: Callable, arg) -> Callable[[dict, tuple], object]:
        def run(env, inputs):
            x = decode(arg, env)
            if not isinstance(x, torch.Tensor) or list(x.shape[1:]) != layer.input_shape:
                got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise CompileError("XB508", f"layer '{layer.name}' receives {got}, its record declares "
                                            f"[batch, {', '.join(map(str, layer.input_shape))}]",
                                   location=Location(node=layer.name), hint="the netlist was edited; recompile")
            return kernel(x)
        return run

    def run(self, inputs, record: bool = False):
        """Outputs in the model's structure; with ``record`` also every node's value by name."""
        inputs = tuple(t.to(self.device) for t in as_input_tuple(self.netlist, inputs))
        env: dict[str, object] = {}
        with torch.no_grad(), _exact_float():
            for node, step in zip(self.netlist.doc.nodes, self.steps):
                env[node.name] = step(env, inputs)
            out = decode(self.netlist.doc.output, env)
        return (out, env) if record else out

    __call__ = run
