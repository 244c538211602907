"""Execute a netlist: host ops with torch semantics, crossbar layers by the chosen mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ..diagnostics import CompileError, Location
from ..emit.netlist import Netlist
from ..frontend.ops import GETATTR_ALLOWED, HOST_OPS
from ..ir.values import check_encoded, decode
from .ideal import IdealLayer
from .routing import check_routing

#: Layer kernels by (emulator mode, mapping strategy), "*" matching any strategy; a kernel is built
#: from (layer entry, its crossbars, the netlist arrays, device) and called on the layer input.
KERNELS: dict[tuple[str, str], Callable] = {("ideal", "*"): IdealLayer}


def register_kernel(mode: str, strategy: str = "*"):
    """Class decorator registering a layer kernel for a mode (and optionally one strategy)."""
    def register(cls):
        KERNELS[(mode, strategy)] = cls
        return cls
    return register


def modes() -> list[str]:
    return sorted({mode for mode, _ in KERNELS})


def kernel_for(mode: str, strategy: str) -> Callable:
    return KERNELS.get((mode, strategy)) or KERNELS[(mode, "*")]


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
    specs = netlist.doc["inputs"]
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise CompileError("XB505", "emulator inputs must be a tensor or a tuple of tensors")
    if len(inputs) != len(specs):
        raise CompileError("XB505", f"the netlist takes {len(specs)} input(s), got {len(inputs)}")
    for t, spec in zip(inputs, specs):
        if list(t.shape[1:]) != spec["shape"]:
            raise CompileError("XB505", f"input '{spec['name']}' must have shape [batch, "
                                        f"{', '.join(map(str, spec['shape']))}], got {list(t.shape)}",
                               location=Location(node=spec["name"]))
    return tuple(inputs)


class Emulator:
    """A netlist prepared for one device and mode; call it like the model."""

    def __init__(self, netlist: Netlist, mode: str = "ideal", device: torch.device | str = "cpu"):
        if mode not in modes():
            raise CompileError("XB505", f"unknown emulator mode '{mode}' (known: {', '.join(modes())})")
        if mode == "ideal" and any("quant" in layer for layer in netlist.doc["layers"]):
            raise CompileError("XB520", "the netlist is quantised (integer cells): run it in mode 'integer'",
                               hint="ideal mode executes float netlists (compiled without calibration data)")
        self.netlist, self.mode, self.device = netlist, mode, torch.device(device)
        doc, arrays = netlist.doc, netlist.arrays
        self.constants = {c["name"]: torch.from_numpy(arrays[c["key"]]).to(self.device) for c in doc["constants"]}
        crossbars = doc["crossbars"]
        self.layers: dict[str, Callable] = {}
        for layer in doc["layers"]:
            first, n = layer["first_crossbar"], layer["crossbars"]
            kernel = kernel_for(mode, layer["strategy"])
            check_routing(layer, crossbars[first:first + n])
            self.layers[layer["name"]] = kernel(layer, crossbars[first:first + n], arrays, self.device)
        self.steps = [self._step(node) for node in doc["nodes"]]

    def _step(self, node: dict) -> Callable[[dict, tuple], object]:
        op, target = node["op"], node["target"]
        if op == "input":
            index = int(target)
            return lambda env, inputs: inputs[index]
        if op == "const":
            value = self.constants[target]
            return lambda env, inputs: value
        if op == "xbar":
            layer, arg = self.layers[target], node["args"][0]
            return lambda env, inputs: layer(decode(arg, env))
        if target not in HOST_OPS:
            raise CompileError("XB502", f"node '{node['name']}' names host op '{target}', which is not on the "
                                        "allow-list", hint="netlists are never executed beyond the allow-list")
        fn = HOST_OPS[target].fn
        args, kwargs = node["args"], node["kwargs"]
        try:
            check_encoded([args, *kwargs.values()])
        except ValueError as exc:
            raise CompileError("XB502", f"node '{node['name']}': {exc}") from None
        if target == "builtins.getattr" and (len(args) != 2 or args[1] not in GETATTR_ALLOWED):
            raise CompileError("XB502", f"node '{node['name']}' reads a forbidden attribute")
        return lambda env, inputs: fn(*decode(args, env), **{k: decode(v, env) for k, v in kwargs.items()})

    def run(self, inputs, record: bool = False):
        """Outputs in the model's structure; with ``record`` also every node's value by name."""
        inputs = tuple(t.to(self.device) for t in as_input_tuple(self.netlist, inputs))
        env: dict[str, object] = {}
        with torch.no_grad(), _exact_float():
            for node, step in zip(self.netlist.doc["nodes"], self.steps):
                env[node["name"]] = step(env, inputs)
            out = decode(self.netlist.doc["output"], env)
        return (out, env) if record else out

    __call__ = run
