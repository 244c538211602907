"""The functional emulator: executes a netlist, reading nothing but the netlist (docs/netlist.md).

It imports the netlist package, the host allow-list and its own datapath code, never the compiler's
mapping, quantisation, pruning, front end or passes (an import-linter contract), so a compiler bug
cannot hide by being shared.
"""

from __future__ import annotations

import os

from ..netlist import Netlist, load_netlist
from .runtime import Emulator, as_input_tuple, modes, register_kernel


def as_netlist(netlist) -> Netlist:
    """A Netlist from a Netlist, a CompiledModel or a saved directory."""
    if isinstance(netlist, Netlist):
        return netlist
    if isinstance(netlist, (str, os.PathLike)):
        return load_netlist(netlist)
    return netlist.netlist


def emulator_for(netlist, mode: str, device, literal: bool = False) -> Emulator:
    """The prepared emulator for (mode, device, literal), cached on the netlist object."""
    netlist = as_netlist(netlist)
    cache = netlist.__dict__.setdefault("_emulators", {})
    key = (mode, str(device), literal)
    if key not in cache:
        cache[key] = Emulator(netlist, mode, device, literal)
    return cache[key]


def emulate(netlist, inputs, mode: str | None = None, *, literal: bool = False):
    """Run a netlist on ``inputs`` (a tensor or tuple of tensors) on their device; returns the model's outputs.

    ``mode`` None is ``integer`` for a quantised netlist and ``ideal`` otherwise. ``literal`` executes the
    crossbars one by one from their derived cells, phase by phase (slow; the oracle of the fast path).
    """
    netlist = as_netlist(netlist)
    inputs = as_input_tuple(netlist, inputs)
    mode = mode or ("integer" if netlist.quantised else "ideal")
    return emulator_for(netlist, mode, inputs[0].device, literal)(inputs)


__all__ = ["Emulator", "as_netlist", "emulate", "emulator_for", "modes", "register_kernel"]
