"""A chip's stuck cells as a fault-map file (docs/faults.md, "Fault maps"): sample or measure once, compile
against it (``remap-faults``), program with it (``device.fault_map``).

``chip_faults(chip)`` gives every crossbar's stuck state over its *whole* physical shape: the measured map
the chip was programmed from, or the draws of its seed and rates. Programming draws only the rows up to
the last one a record uses; the rows below come from the same stream (a cell's draw depends only on
seed, crossbar id and cell), so the map agrees with the chip where the chip has cells, and says what a
permutation onto a spare row would meet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .programming import FREE, SA0, SA1, ProgrammedChip, _Streams, load_fault_map


def chip_faults(chip: ProgrammedChip) -> dict[str, np.ndarray]:
    """``{crossbar id: uint8 [rows, physical_cols]}`` (FREE / SA0 / SA1) of every crossbar (and replica site)."""
    spec = chip.spec
    if spec.fault_map:
        return load_fault_map(chip, spec.fault_map)
    streams = _Streams(chip.seed)
    out = {}
    for x in chip.crossbars:
        shape = (x.rows, x.physical_cols)
        for site in x.site_ids:  # the crossbar and each replica: cells of their own
            if spec.sa0_rate or spec.sa1_rate:
                u = streams.at(site, 0).random(shape)
                out[site] = np.where(u < spec.sa0_rate, SA0, np.where(u >= 1 - spec.sa1_rate, SA1, FREE)).astype(np.uint8)
            else:
                out[site] = np.zeros(shape, dtype=np.uint8)
    return out


def save_fault_map(chip: ProgrammedChip | Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a chip's faults (or ``{crossbar id: stuck states}``) as a fault map ``.npz``: members ``sa0/<id>``
    and ``sa1/<id>`` for the crossbars with faults, written to a temporary file and renamed into place."""
    faults = chip_faults(chip) if isinstance(chip, ProgrammedChip) else chip
    members = {}
    for crossbar, stuck in faults.items():
        stuck = np.asarray(stuck)
        for name, value in (("sa0", SA0), ("sa1", SA1)):
            if (stuck == value).any():
                members[f"{name}/{crossbar}"] = stuck == value
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **members)
    os.replace(tmp, path)
    return path
