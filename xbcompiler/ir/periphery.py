"""The digital periphery of a quantised crossbar layer, decided by passes before emission.

``assign-adc`` writes one :class:`LayerPeriphery` per quantised layer into
``XbarProgram.periphery`` (the ADC resolution and step of every read, the ISAAC flag table, the
modelled bias compensation, each crossbar's ADC); ``calibrate-adc`` replaces it with what the
calibration data shows. Emission copies it into the netlist unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdcErrorInfo:
    """What the ADCs still lose after compensation: the systematic part and the random spread."""

    source: str  # "model" or "calibration"
    mean: float
    mean_output_lsb: float
    std: float
    std_output_lsb: float


@dataclass(frozen=True, eq=False)
class LayerPeriphery:
    """The periphery of one layer; array rows follow ``row_blocks`` (reading order: group, then first row)."""

    row_blocks: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # (conv group, matrix row ranges)
    adc_step: np.ndarray  # int8 [blocks, N_g]: LSBs each read drops
    adc_bits: np.ndarray  # int8 [blocks, N_g]: the ADC's output bits
    flips: np.ndarray | None  # uint8 [blocks, planes, N_g]: ISAAC flags, None without column flipping
    compensation: np.ndarray  # int64 [N]: added back for the mean of what the ADCs drop
    adc_error: AdcErrorInfo
    crossbar_adc: tuple[tuple[int, int, int], ...]  # per crossbar of the layer: (lossless, bits, step) bits
    truncate_bits: int = 0  # LSBs PRIME-style output truncation drops (``adc.output_bits``)
    signs: np.ndarray | None = None  # int8 [blocks, N_g]: each polarized fragment read's sign (FORMS), else None
