"""The functional emulator: executes a netlist and checks it against the model."""

from __future__ import annotations

import os

from ..emit.netlist import Netlist, load_netlist
from . import integer, toeplitz  # noqa: F401  (register the integer kernel, block-Toeplitz kernels and reader)
from .runtime import Emulator, as_input_tuple, modes, register_kernel


def as_netlist(netlist) -> Netlist:
    """A Netlist from a Netlist, a CompiledModel or a saved directory."""
    if isinstance(netlist, Netlist):
        return netlist
    if isinstance(netlist, (str, os.PathLike)):
        return load_netlist(netlist)
    return netlist.netlist


def emulator_for(netlist, mode: str, device) -> Emulator:
    """The prepared emulator for (mode, device), cached on the netlist object."""
    netlist = as_netlist(netlist)
    cache = netlist.__dict__.setdefault("_emulators", {})
    key = (mode, str(device))
    if key not in cache:
        cache[key] = Emulator(netlist, mode, device)
    return cache[key]


def emulate(netlist, inputs, mode: str | None = None):
    """Run a netlist on ``inputs`` (a tensor or tuple of tensors) on their device; returns the model's outputs.

    ``mode`` None is ``integer`` for a quantised netlist and ``ideal`` otherwise.
    """
    netlist = as_netlist(netlist)
    inputs = as_input_tuple(netlist, inputs)
    mode = mode or ("integer" if any("quant" in layer for layer in netlist.layers) else "ideal")
    return emulator_for(netlist, mode, inputs[0].device)(inputs)


__all__ = ["Emulator", "as_netlist", "emulate", "emulator_for", "modes", "register_kernel"]
