"""The functional emulator: executes a netlist, reading nothing but the netlist (docs/netlist.md).

It imports the netlist package, the host allow-list and its own datapath code, never the compiler's
mapping, quantisation, pruning, front end or passes (an import-linter contract), so a compiler bug
cannot hide by being shared.
"""

from __future__ import annotations

import os

from ..diagnostics import CompileError
from ..netlist import Netlist, load_netlist
from . import device_mode  # noqa: F401  (registers the "device" kernel)
from .programming import ProgrammedChip, program
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


def emulate(netlist, inputs, mode: str | None = None, *, literal: bool = False, seed: int | None = None,
            overrides=None, calibration=None):
    """Run a netlist on ``inputs`` (a tensor or tuple of tensors) on their device; returns the model's outputs.

    ``mode`` None is ``device`` for a programmed chip (:func:`program`), ``integer`` for a quantised
    netlist and ``ideal`` otherwise. ``literal`` executes the crossbars one by one from their derived
    cells, phase by phase (slow; the oracle of the fast path). ``mode="device"`` on a netlist programs
    it first with ``seed`` (default 0), the ``device.*`` / ``compensation.*`` ``overrides`` and the
    ``calibration`` batch of ``compensation.column_gain`` (the chip is kept on the netlist for the next
    call with the same seed, overrides and calibration tensor).
    """
    netlist = as_netlist(netlist)
    inputs = as_input_tuple(netlist, inputs)
    chip = isinstance(netlist, ProgrammedChip)
    mode = mode or ("device" if chip else "integer" if netlist.quantised else "ideal")
    if (seed is not None or overrides or calibration is not None) and (chip or mode != "device"):
        raise CompileError("XB505", "seed, overrides and calibration program a netlist: they need mode='device' "
                                    "and a netlist, "
                                    "not " + ("a programmed chip (program it again instead)" if chip else f"mode '{mode}'"))
    if mode == "device" and not chip:
        chips = netlist.__dict__.setdefault("_chips", {})
        key = (seed or 0, tuple(sorted((overrides or {}).items())), id(calibration))
        if key not in chips:
            chips.clear()  # one programmed chip kept per netlist
            chips[key] = program(netlist, seed or 0, overrides, calibration)
        netlist = chips[key]
    return emulator_for(netlist, mode, inputs[0].device, literal)(inputs)


__all__ = ["Emulator", "ProgrammedChip", "as_netlist", "emulate", "emulator_for", "modes", "program",
           "register_kernel"]
