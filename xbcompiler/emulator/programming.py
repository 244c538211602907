"""Programming a chip: the device state of every physical cell, sampled once (background §0.4, docs/faults.md).

``xb.program(netlist, seed=0, overrides={"device.sa1_rate": 0.01})`` reads the device parameters of the
netlist's target (``[device]``, with dotted ``overrides``) and gives each physical cell of every crossbar
(those no record gives a weight too: they are programmed to ``G_min``, level 0, and device mode reads
every cell of a read's word lines and column)

- a fault: stuck at ``G_min`` (SA0, probability ``sa0_rate``), stuck at ``G_max`` (SA1, ``sa1_rate``) or
  free, from a uniform draw ``u``: SA0 when ``u < sa0_rate``, SA1 when ``u >= 1 - sa1_rate``; or, with
  ``device.fault_map``, the measured map instead;
- a programming variation ``theta ~ N(0, program_sigma^2)``: the cell's conductance is
  ``G_target * exp(theta)``.

Compensations (the target's ``[compensation]`` section, background §3.5), as the chip would run them:

- ``write_verify_pulses = n``: every cell is read back and re-programmed while its error
  ``|L_eff - L|`` (in levels) exceeds ``write_verify_tolerance``, at most ``n`` more pulses: each pulse
  draws the cell a new ``theta``. A stuck cell never passes and takes all ``n``; ``chip.write_pulses``
  counts the pulses given.
- ``residual_programming``: the cells of a weight's side (the planes of one sign) are programmed most
  significant slice first; each is read back and the rest of the side's value is re-sliced into the
  slices below it (:func:`residual_program`), so the lower cells absorb the upper ones' errors. The
  levels the cells were programmed to are kept in :attr:`CellState.levels`.
- ``column_gain``: measured on a calibration batch after programming (:mod:`.column_gain`).

Draws come from counter-based Philox streams keyed by the seed, two per crossbar (faults,
variation) starting at counters set by the sha256 of the crossbar id, each read row-major over the
crossbar's full physical shape: a cell's draws depend only on (seed, crossbar id, cell). Adding a layer does not
reshuffle the others, and the same seed with a higher rate only adds faults (the draws ``u`` stay).
Only rows up to the last one a record uses are drawn (a prefix of the stream); the rest are never
driven.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..diagnostics import CompileError, Location
from ..netlist import Netlist
from ..netlist.encoding import Encoding
from ..netlist.placement import physical_extent
from ..target import CompensationSpec, DeviceSpec, target_from_dict
from .column_gain import ColumnCorrection, calibrate_columns

FREE, SA0, SA1 = 0, 1, 2
"""Values of :attr:`CellState.stuck`."""


@dataclass(frozen=True)
class CellState:
    """The cells of one crossbar, rows ``[0, stuck.shape[0])`` by every physical column.

    ``stuck``: :data:`FREE`, :data:`SA0` or :data:`SA1` (uint8); ``theta``: the variation exponent
    (float32), None when ``program_sigma`` is 0; ``levels``: the levels the cells were programmed to
    when a compensation changed them from the netlist's (uint16), else None.
    """

    stuck: np.ndarray
    theta: np.ndarray | None
    levels: np.ndarray | None = None


class ProgrammedChip(Netlist):
    """A netlist programmed onto a chip: its records plus the sampled state of every cell.

    ``xb.emulate(chip, x)`` runs it in ``device`` mode; many batches run on the same cells.
    """

    def __init__(self, netlist: Netlist, spec: DeviceSpec, compensation: CompensationSpec, seed: int,
                 cells: dict[str, CellState], write_pulses: int = 0):
        super().__init__(netlist.doc, dict(netlist.arrays))
        self.spec, self.compensation, self.seed, self.cells = spec, compensation, seed, cells
        self.write_pulses = write_pulses
        #: per layer name, the measured correction of ``compensation.column_gain`` (:mod:`.column_gain`)
        self.column_corrections: dict[str, ColumnCorrection] = {}

    def fault_fractions(self) -> tuple[float, float]:
        """Measured (SA0, SA1) fractions over every sampled cell."""
        total = sum(c.stuck.size for c in self.cells.values())
        sa0 = sum(int((c.stuck == SA0).sum()) for c in self.cells.values())
        sa1 = sum(int((c.stuck == SA1).sum()) for c in self.cells.values())
        return sa0 / max(total, 1), sa1 / max(total, 1)


def chip_specs(netlist: Netlist, overrides: Mapping[str, Any] | None = None) -> tuple[DeviceSpec, CompensationSpec]:
    """The netlist target's ``[device]`` and ``[compensation]`` sections with dotted ``overrides`` applied."""
    bad = [k for k in (overrides or {}) if not str(k).startswith(("device.", "compensation."))]
    if bad:
        raise CompileError("XB407", f"programming overrides must be device or compensation keys, got {bad}",
                           hint="e.g. {'device.sa1_rate': 0.01}; other target keys need a recompile")
    target = target_from_dict(netlist.doc.target, file="netlist.json $.target")
    target = target.with_overrides(overrides) if overrides else target
    return target.device, target.compensation


class _Streams:
    """Philox streams keyed by the seed; each (crossbar id, purpose) starts at its own counter.

    The 256-bit counter of a stream is ``(0, purpose, h0, h1)`` with ``h0, h1`` the first 16 bytes of
    the sha256 of the crossbar id: draws advance the lowest word only, so streams never meet.
    """

    def __init__(self, seed: int):
        self.bits = np.random.Philox(key=seed)
        self.generator = np.random.Generator(self.bits)
        self.state = self.bits.state

    def at(self, crossbar_id: str, purpose: int) -> np.random.Generator:
        h0, h1 = np.frombuffer(hashlib.sha256(crossbar_id.encode()).digest()[:16], dtype=np.uint64)
        state = dict(self.state)
        state["state"] = {"counter": np.array([0, purpose, h0, h1], dtype=np.uint64),
                          "key": self.state["state"]["key"]}
        state.update(buffer_pos=4, has_uint32=0, uinteger=0)
        self.bits.state = state
        return self.generator


def program(netlist, seed: int = 0, overrides: Mapping[str, Any] | None = None, calibration=None) -> ProgrammedChip:
    """Sample the device state of every cell of ``netlist`` (a Netlist, CompiledModel or directory), then
    run the target's compensations; ``calibration`` (a batch of model inputs) is what
    ``compensation.column_gain`` measures the columns on."""
    from . import as_netlist

    netlist = as_netlist(netlist)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CompileError("XB505", f"the programming seed must be a non-negative integer, got {seed!r}")
    spec, compensation = chip_specs(netlist, overrides)
    measured = load_fault_map(netlist, spec.fault_map) if spec.fault_map else None
    cells = {}
    pulses = 0
    streams = _Streams(seed)
    for x in netlist.crossbars:
        layer = netlist.layer(x.layer)
        rows = physical_extent(layer, x)[0]
        shape = (rows, x.physical_cols)
        compensate = layer.quant is not None and (compensation.write_verify_pulses or compensation.residual_programming)
        levels = netlist.crossbar_cells(x.id)[:rows].astype(np.float64) if compensate else None
        for site in x.site_ids:  # the crossbar and each replica: cells of their own
            if measured is not None:
                stuck = measured[site][:rows]
            elif spec.sa0_rate or spec.sa1_rate:
                u = streams.at(site, 0).random(shape)
                stuck = np.where(u < spec.sa0_rate, SA0, np.where(u >= 1 - spec.sa1_rate, SA1, FREE)).astype(np.uint8)
            else:
                stuck = np.zeros(shape, dtype=np.uint8)
            variation = streams.at(site, 1)
            theta = (variation.standard_normal(shape, dtype=np.float32) * np.float32(spec.program_sigma)
                     if spec.program_sigma else None)
            programmed = None
            if compensate and compensation.residual_programming:
                programmed, theta, given = residual_program(levels, stuck, theta, variation, spec, compensation,
                                                            Encoding(layer.quant.encoding))
                pulses += given
            elif compensate:
                theta, given = write_verify(levels, stuck, theta, variation, spec, compensation,
                                            (1 << layer.quant.encoding.cell_bits) - 1)
                pulses += given
            cells[site] = CellState(stuck, theta, programmed)
    chip = ProgrammedChip(netlist, spec, compensation, seed, cells, pulses)
    if compensation.column_gain:
        chip.column_corrections = calibrate_columns(chip, calibration)
    return chip


def effective_levels(levels: np.ndarray, stuck: np.ndarray, theta: np.ndarray | None, spec: DeviceSpec,
                     top: int) -> np.ndarray:
    """What cells programmed to ``levels`` read as, in levels (docs/faults.md, "The device model")."""
    out = levels
    if theta is not None:
        g0 = top / (spec.on_off_ratio - 1) if spec.on_off_ratio else 0.0
        gain = np.exp(theta.astype(np.float64))
        out = levels * gain + g0 * (gain - 1)
    return np.where(stuck == SA0, 0.0, np.where(stuck == SA1, float(top), out))


def write_verify(levels: np.ndarray, stuck: np.ndarray, theta: np.ndarray | None, variation: np.random.Generator,
                 spec: DeviceSpec, compensation: CompensationSpec, top: int) -> tuple[np.ndarray | None, int]:
    """Re-program the cells whose read-back error exceeds the tolerance; the new ``theta`` and the pulses given."""
    tolerance = compensation.write_verify_tolerance
    bad = np.abs(effective_levels(levels, stuck, theta, spec, top) - levels) > tolerance
    given = 0
    for _ in range(compensation.write_verify_pulses):
        if not bad.any():
            break
        given += int(bad.sum())
        redo = bad & (stuck == FREE)
        if theta is not None and redo.any():
            theta = theta.copy()
            theta[redo] = variation.standard_normal(int(redo.sum()), dtype=np.float32) * np.float32(spec.program_sigma)
        bad = np.abs(effective_levels(levels, stuck, theta, spec, top) - levels) > tolerance
    return theta, given


def residual_program(levels: np.ndarray, stuck: np.ndarray, theta: np.ndarray | None,
                     variation: np.random.Generator, spec: DeviceSpec, compensation: CompensationSpec,
                     enc: Encoding) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Cross-slice residual programming of one crossbar's cells ``[rows, physical_cols]`` (background §3.5, item 1).

    Physical column ``c * P + p`` holds plane ``p`` of logical column ``c``. Per logical column and side
    (the planes of one sign), the side's value ``V = sum_s 2**(k*s) * L_s`` is programmed slice by slice,
    most significant first: slice ``s`` gets the digit ``s`` of ``R`` rounded and clipped to what slices
    ``s..0`` can hold, where ``R`` is ``V`` less what the slices above read back as. With write-verify
    on, each slice is verified before it is read back. Returns the programmed levels, ``theta`` and the
    write pulses given.
    """
    top = enc.max_level
    n_p = enc.planes
    rows, phys = levels.shape
    planes = levels.reshape(rows, phys // n_p, n_p)
    stuck_p = stuck.reshape(planes.shape)
    theta_p = None if theta is None else theta.reshape(planes.shape).copy()
    out = np.zeros(planes.shape, dtype=np.uint16)
    given = 0
    k = enc.spec.cell_bits
    for sign in sorted(set(enc.plane_signs)):
        side = sorted((i for i, g in enumerate(enc.plane_signs) if g == sign), key=lambda i: -enc.plane_shifts[i])
        residual = sum(planes[..., i] * 2.0 ** enc.plane_shifts[i] for i in side)
        for i in side:
            shift = enc.plane_shifts[i]
            capacity = 2.0 ** (shift + k) - 1  # the largest value slices ``shift / k .. 0`` can hold
            digit = np.floor(np.clip(np.rint(residual), 0, capacity) / 2.0 ** shift)
            t = None if theta_p is None else theta_p[..., i]
            if compensation.write_verify_pulses:
                t, pulses = write_verify(digit, stuck_p[..., i], t, variation, spec, compensation, top)
                given += pulses
                if t is not None:
                    theta_p[..., i] = t
            residual = residual - effective_levels(digit, stuck_p[..., i], t, spec, top) * 2.0 ** shift
            out[..., i] = digit
    return out.reshape(rows, phys), None if theta_p is None else theta_p.reshape(rows, phys), given


def load_fault_map(netlist: Netlist, path: str | Path) -> dict[str, np.ndarray]:
    """A measured fault map: ``.npz`` members ``sa0/<crossbar id>`` and ``sa1/<crossbar id>``, boolean
    ``[rows, physical_cols]`` arrays; a crossbar without members has no faults (XB530 on a bad map)."""
    path = Path(path)

    def bad(message: str) -> CompileError:
        return CompileError("XB530", f"fault map {path}: {message}", location=Location(file=str(path)),
                            hint="docs/faults.md describes the format")

    if not path.is_file():
        raise bad("no such file")
    wanted = {site: x for x in netlist.crossbars for site in x.site_ids}
    out = {i: np.zeros((x.rows, x.physical_cols), dtype=np.uint8) for i, x in wanted.items()}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for member in archive.files:
                kind, _, crossbar = member.partition("/")
                if kind not in ("sa0", "sa1") or crossbar not in wanted:
                    raise bad(f"member '{member}' is not sa0/<crossbar id> or sa1/<crossbar id> of this netlist")
                x = wanted[crossbar]
                array = archive[member]
                if array.dtype != np.bool_ or array.shape != (x.rows, x.physical_cols):
                    raise bad(f"member '{member}' must be a boolean array of shape {(x.rows, x.physical_cols)}, "
                              f"got {array.dtype} {array.shape}")
                state = out[crossbar]
                if (array & (state != FREE)).any():
                    raise bad(f"a cell of crossbar {crossbar} is stuck both at 0 and at 1")
                state[array] = SA0 if kind == "sa0" else SA1
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise bad(f"unreadable ({exc})") from None
    return out
