"""Equivalence: the model and the emulated netlist on the same seeded inputs, layer by layer.

This sits above the emulator (it traces the model with the front end); the emulator itself never
reads the model or the compiler's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from ..diagnostics import CompileError
from ..emulator import as_input_tuple, as_netlist, emulator_for
from ..frontend.capture import capture, recorded_frontend
from ..netlist.placement import permutations


@dataclass(frozen=True)
class LayerCheck:
    """One crossbar layer: errors against the model's value at ``reference``."""

    name: str
    reference: str
    max_abs: float
    rel: float
    ok: bool
    first_mismatch: str | None = None  # crossbar id holding the first mismatching output channel
    mismatches: int = 0  # integer mode: output integers that differ from the integer reference
    first_mismatch_column: int | None = None  # that crossbar's logical column holding the channel (physical place)


@dataclass
class VerifyReport:
    """``ok`` when every layer and the outputs agree within ``tolerance`` (relative to max |reference|)."""

    mode: str
    tolerance: float
    layers: list[LayerCheck] = field(default_factory=list)
    output_max_abs: float = 0.0
    output_rel: float = 0.0
    float_rel: float | None = None  # integer mode: end-to-end relative error against the float model
    float_tolerance: float | None = None  # integer mode: the largest float_rel accepted (None: not checked)

    @property
    def exact(self) -> bool:
        """Every layer and the outputs agree with the reference within ``tolerance``."""
        return self.output_rel <= self.tolerance and all(c.ok for c in self.layers)

    @property
    def float_ok(self) -> bool:
        """Integer mode: the quantised network stays within ``float_tolerance`` of the float model."""
        return self.float_rel is None or self.float_tolerance is None or self.float_rel <= self.float_tolerance

    @property
    def ok(self) -> bool:
        return self.exact and self.float_ok

    @property
    def max_rel(self) -> float:
        return max([self.output_rel] + [c.rel for c in self.layers])

    @property
    def first_mismatch(self) -> LayerCheck | None:
        return next((c for c in self.layers if not c.ok), None)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "exact": self.exact, "float_ok": self.float_ok, "mode": self.mode,
                "tolerance": self.tolerance, "float_rel": self.float_rel, "float_tolerance": self.float_tolerance,
                "output_max_abs": self.output_max_abs,
                "output_rel": self.output_rel, "layers": [c.__dict__ for c in self.layers]}


def _errors(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    ref, got = ref.detach().double().cpu(), got.detach().double().cpu()
    if ref.shape != got.shape:
        return float("inf"), float("inf")
    diff = float((ref - got).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return diff, diff / scale if scale > 0 else diff


def output_tensors(value) -> list[torch.Tensor]:
    """The tensors of a nested output structure, in order (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in output_tensors(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in output_tensors(value[k])]
    return []


class Recorder(fx.Interpreter):
    """Runs a traced model and keeps every node's value (``values``) and the output (``output``)."""

    def run_all(self, inputs: tuple) -> Recorder:
        self.values: dict = {}
        with torch.no_grad():
            self.output = self.run(*inputs)
        return self

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def bad_channels(layer, bad: torch.Tensor) -> set[int]:
    """Output channels (conv groups numbered globally) with a True anywhere in ``bad`` (layer-shaped)."""
    dim = -1 if layer.geometry.kind == "linear" else 1
    return set(bad.movedim(dim, 0).reshape(bad.shape[dim], -1).any(1).nonzero().flatten().tolist())


@dataclass(frozen=True)
class Site:
    """Where a mismatching output channel sits: a crossbar id and its logical column (physical place)."""

    crossbar: str
    column: int


def first_site(netlist, layer, channels: set[int]) -> Site | None:
    """The first crossbar of ``layer`` that feeds one of ``channels``, and its lowest column holding one.

    Columns are logical columns at their physical place (after a ``remap-faults`` permutation); a
    quantised column ``j`` is bit lines ``j * m_c .. j * m_c + m_c - 1``. A block-Toeplitz channel
    spans ``w_o`` columns: the first is named.
    """
    for x in netlist.layer_crossbars(layer):
        cols = [s.at[1] + c - s.cols[0] for s in x.slices for c in range(*s.cols)
                if s.group * layer.n_g + c in channels]
        cols += [b.at[1] + (o - b.out_channels[0]) * layer.w_o for b in x.blocks for o in range(*b.out_channels)
                 if b.group * layer.n_g + o in channels]
        if cols:
            return Site(x.id, int(permutations(x)[1][cols].min()))
    return None


def _first_site(netlist, layer, ref: torch.Tensor, got: torch.Tensor, tol: float) -> Site | None:
    err = (ref.double() - got.double()).abs()
    return first_site(netlist, layer, bad_channels(layer, err > tol * float(ref.abs().max())))


#: The smallest default float tolerance: 5 % of the output range, whatever the widths.
FLOAT_TOLERANCE_FLOOR = 0.05


def default_float_tolerance(netlist) -> float | None:
    """``max(2 ** (4 - b), 0.05)`` for the narrowest weight or input width ``b`` (None for a float netlist).

    One quantisation step of a ``b``-bit value is ``2 ** (1 - b)`` of its range; the default accepts eight
    such steps of end-to-end error, for the steps that add up through the layers, and never less than 5 %
    (power-of-two scales, requantised intermediate results and recurrences cost more than the last bit):
    1.0 at 4 bits, 0.25 at 6, 0.0625 at 8, 0.05 from 9 bits (docs/quantization.md, "End-to-end error").
    """
    widths = [min(layer.quant.weight_bits, layer.quant.input_bits) for layer in netlist.layers
              if layer.quant is not None]
    return max(2.0 ** (4 - min(widths)), FLOAT_TOLERANCE_FLOOR) if widths else None


AUTO = "auto"


def verify(netlist, model, inputs=None, *, mode: str | None = None, tolerance: float = 1e-4, seed: int = 0,
           batch: int = 2, float_tolerance: float | str | None = AUTO) -> VerifyReport:
    """Run ``model`` and the netlist on the same inputs (seeded random ones when None) and compare.

    ``mode`` None is ``integer`` for a quantised netlist (layers against the integer reference,
    docs/quantization.md) and ``ideal`` otherwise. In integer mode the report also carries the
    end-to-end relative error against the float model, and fails when it exceeds ``float_tolerance``
    (``"auto"``: :func:`default_float_tolerance` when ``inputs`` are given, since only inputs like the
    calibration data say how well the quantised network follows the model; reported only on seeded
    random inputs. None: reported only).
    """
    netlist = as_netlist(netlist)
    if float_tolerance == AUTO:
        float_tolerance = None if inputs is None else default_float_tolerance(netlist)
    if inputs is None:
        gen = torch.Generator().manual_seed(seed)
        inputs = tuple(torch.randn((batch, *spec.shape), generator=gen) for spec in netlist.doc.inputs)
    inputs = as_input_tuple(netlist, inputs)
    if mode is None:
        mode = "integer" if netlist.quantised else "ideal"
    if mode == "integer":
        from .integer import verify_integer

        report = verify_integer(netlist, model, inputs, tolerance)
        report.float_tolerance = None if float_tolerance is None else float(float_tolerance)
        return report
    gm = capture(model, inputs, recorded_frontend(netlist.doc.provenance)).gm  # the graph the netlist names
    recorder = Recorder(gm).run_all(inputs)
    expected = recorder.output
    got, env = emulator_for(netlist, mode, inputs[0].device).run(inputs, record=True)
    report = VerifyReport(mode, tolerance)
    missing = [layer.reference for layer in netlist.layers if layer.reference not in recorder.values]
    if missing:
        raise CompileError("XB506", f"the model has no node(s) {', '.join(missing[:5])} that the netlist's layers "
                                    "reference", hint="verify against the model the netlist was compiled from")
    for layer in netlist.layers:
        ref, out = recorder.values[layer.reference], env[layer.name]
        max_abs, rel = _errors(ref, out)
        ok = rel <= tolerance
        comparable = isinstance(ref, torch.Tensor) and ref.shape == out.shape
        site = None if ok or not comparable else _first_site(netlist, layer, ref.cpu(), out.cpu(), tolerance)
        report.layers.append(LayerCheck(layer.name, layer.reference, max_abs, rel, ok, site and site.crossbar,
                                        first_mismatch_column=site and site.column))
    pairs = list(zip(output_tensors(expected), output_tensors(got)))
    errs = [_errors(a, b) for a, b in pairs] or [(0.0, 0.0)]
    report.output_max_abs = max(e[0] for e in errs)
    report.output_rel = max(e[1] for e in errs)
    return report
