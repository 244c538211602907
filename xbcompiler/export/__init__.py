"""Exporters: a saved netlist in the formats of other tools, to cross-check with them (docs/export.md).

- ``neurosim``: NeuroSim's network table (``NetWork_*.csv``) plus the ``Param.cpp`` values the target
  implies (:mod:`.neurosim`);
- ``crosssim``: a CrossSim parameter JSON of the core, crossbar, ADC and DAC (:mod:`.crosssim`);
- ``csv``: one row per crossbar site: layer, tile, chip, rows and columns used, utilisation, what it holds
  (:mod:`.crossbars`).

Every exporter reads only the netlist (``xb.load_netlist``) and returns an :class:`Export`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..diagnostics import CompileError
from . import crossbars, crosssim, neurosim
from .record import Companion, Export


@dataclass(frozen=True)
class Format:
    """An export format: its name, the file ``xbc export`` writes by default and the function that makes it."""

    name: str
    default_file: str
    make: Callable[..., Export]
    doc: str


#: The formats, by name, in the order ``xbc export --help`` lists them.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("neurosim", "NetWork.csv", neurosim.export,
           "NeuroSim's per-layer network table, and its Param.cpp values in NetWork.param.txt"),
    Format("crosssim", "crosssim.json", crosssim.export, "CrossSim parameters of the core, crossbar, ADC and DAC"),
    Format("csv", "crossbars.csv", crossbars.export, "one row per crossbar: layer, tile, chip, use, what it holds"),
)}


def export(netlist, format: str) -> Export:
    """``netlist`` (a :class:`~xbcompiler.netlist.Netlist`) in ``format``, one of :data:`FORMATS`."""
    if format not in FORMATS:
        raise CompileError("XB003", f"unknown export format '{format}'", hint="formats: " + ", ".join(FORMATS))
    return FORMATS[format].make(netlist)


__all__ = ["FORMATS", "Companion", "Export", "Format", "export"]
