"""``fold-pow2-scales``: power-of-two post-training quantisation; every rescale becomes a shift (background §3.2).

Runs after ``lower-im2col`` on the BN-folded im2col matrices the crossbars will hold, with the
calibration batches of the compile (``xbcompiler.compile(..., calibration=...)``; the driver inserts
this pass when calibration is given). Per crossbar layer it chooses

- the input exponent ``e_x`` from the calibrated range of the layer's input (``precision.input_bits``,
  two's complement when the input can be negative),
- weight exponents ``e_w`` per layer or per group of ``target.logical_cols`` output columns (one
  crossbar's column set) so that ``max |W| <= (2**(b_w-1) - 1) * 2**e_w``; ``Wq = round(W / 2**e_w)``,
- the output exponent ``e_y`` from the calibrated output range (``output_bits`` signed bits),
- the integer bias ``round(b / 2**(e_x + e_w))`` and the shift ``n = e_y - e_x - e_w`` per column,
  whose rounding constant ``2**(n-1)`` is folded into the accumulator.

Residual adds and concatenations get a ``requantize`` shift on the operands with the smaller
exponent. Host ops that must compute in float are listed in the report with the reason, and a check
proves that no floating-point multiply is left between a crossbar layer's quantised input and its
quantised output (XB221 otherwise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import fx

from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.matrix import Im2colLayer, LogicalMatrix
from xbcompiler.pipeline import Pass, PassContext
from xbcompiler.quant.calibrate import Range, observe
from xbcompiler.quant.check import check_layer
from xbcompiler.quant.graph import QType, propagate
from xbcompiler.quant.layer import QuantIm2colLayer
from xbcompiler.quant.scheme import LayerQuant, int_range, pow2_exponent, weight_range


@dataclass(frozen=True)
class FoldPow2ScalesPass(Pass):
    """Quantise every crossbar layer with power-of-two scales and fold all rescaling into shifts."""

    granularity: str = "layer"
    """Weight exponents per ``layer`` or per ``column-group`` (``group-cols`` output columns each)."""
    group_cols: int | None = None
    """Columns per group with ``granularity=column-group``; None: the target's logical columns per crossbar."""
    percentile: float = 100.0
    """Percentile of |activation| that sets each exponent (100: the maximum, no activation clipping)."""
    output_bits: int | None = None
    """Signed bits of a layer's output; None: ``precision.input_bits + 1`` (a ReLU then keeps every input bit)."""

    name: ClassVar[str] = "fold-pow2-scales"
    stage: ClassVar[str] = "graph"
    needs: ClassVar[frozenset[str]] = frozenset({"im2col", "bn-folded"})
    establishes: ClassVar[frozenset[str]] = frozenset({"quantized"})

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
        if not ctx.calibration:
            raise CompileError("XB220", "fold-pow2-scales needs calibration data",
                               hint="pass calibration=... to xbcompiler.compile (CLI: --calibrate FILE.npy or "
                                    "--calibrate-random N)")
        if self.granularity not in ("layer", "column-group"):
            raise CompileError("XB604", f"granularity must be 'layer' or 'column-group', got '{self.granularity}'")
        ranges = self._observe(gm, ctx)
        layers, types = {}, {}
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), Im2colLayer):
                continue
            matrix = self._quantize(gm.get_submodule(node.target).matrix, node, ranges, ctx.target)
            check_layer(matrix)
            gm.add_submodule(node.target, QuantIm2colLayer(matrix))
            types[node.name] = QType(matrix.quant.output_exponent, True)
            layers[node.name] = _summary(matrix)
        flow = propagate(gm, types)
        gm.graph.lint()
        gm.recompile()
        ctx.report[self.name] = {"layers": layers, "aligned": flow.aligned, "host_float": flow.floats,
                                 "integer_segments": {"checked": len(layers), "float_multiplies": 0}}
        return gm

    def _observe(self, gm: fx.GraphModule, ctx: PassContext) -> dict[str, Range]:
        try:
            return observe(gm, ctx.calibration, self.percentile, ctx.seed)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CompileError("XB222", f"the model does not run on the calibration data: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else ''}",
                               hint="calibration batches must have the example inputs' shapes (any batch size)"
                               ) from None

    def _quantize(self, m: LogicalMatrix, node: fx.Node, ranges: dict[str, Range], target) -> LogicalMatrix:
        p = target.precision
        x_range = ranges.get(node.args[0].name, Range(0.0, 0.0))
        y_range = ranges.get(node.name, Range(0.0, 0.0))
        signed = x_range.min < 0
        e_x = pow2_exponent(x_range.max_abs, int_range(p.input_bits, signed)[1])
        out_bits = self.output_bits or p.input_bits + 1
        e_y = pow2_exponent(y_range.max_abs, int_range(out_bits, True)[1])
        n = m.cols
        group = n if self.granularity == "layer" else (self.group_cols or target.logical_cols)
        lo, hi = weight_range(p.weight_bits)
        w = m.weight.astype(np.float64)  # [groups, K, N/groups]; global column = g * N/groups + j
        by_col = np.abs(w).max(axis=1).reshape(-1) if w.size else np.zeros(n)
        e_w = tuple(pow2_exponent(float(by_col[c:c + group].max(initial=0.0)), hi) for c in range(0, n, group))
        col_e = np.asarray(e_w, dtype=np.int64)[np.arange(n) // group]
        scale = np.exp2(col_e.astype(np.float64)).reshape(w.shape[0], 1, -1)
        wq = np.clip(np.round(w / scale), lo, hi)
        bias = None
        if m.bias is not None:
            bias = np.round(m.bias.astype(np.float64) / np.exp2(e_x + col_e.astype(np.float64))).astype(np.int64)
        quant = LayerQuant(e_x, p.input_bits, signed, p.weight_bits, e_w, group, e_y, out_bits, bias)
        return dataclasses.replace(m, weight=wq.astype(np.float32), bias=None, quant=quant)


def _summary(m: LogicalMatrix) -> dict:
    q = m.quant
    shifts = q.shifts(m.cols)
    return {"input_exponent": q.input_exponent, "input_signed": q.input_signed, "weight_exponents": list(q.weight_exponents),
            "output_exponent": q.output_exponent, "shift": [int(shifts.min()), int(shifts.max())],
            "folded": bool((shifts <= 0).all())}

