"""The proof that a crossbar segment holds no floating-point multiply.

A segment runs from a crossbar layer's quantised input ``Xq`` to its quantised output ``Yq``: DAC
digits (bit selections of integers), reads (sums of integer products of digits and cell levels),
ADC codes (an integer shift with rounding and a clamp), shift-and-add, integer additions of bias
and corrections, one arithmetic shift and a clamp. The only places a multiplier could hide are the
weights, the biases and the scale factors, so the check requires integer weights in range, integer
biases, and integer exponents (every scale a power of two, every rescale a shift).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..diagnostics import CompileError, Location
from .scheme import weight_range


def _fail(name: str, what: str) -> CompileError:
    return CompileError("XB221", f"crossbar layer '{name}': {what}", location=Location(node=name),
                        hint="every scale must be a power of two and every weight and bias an integer")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_layer(matrix) -> None:
    """XB221 unless ``matrix`` (a quantised ``LogicalMatrix``) computes with integers and shifts only."""
    q, name = matrix.quant, matrix.name
    if q is None:
        raise _fail(name, "is not quantised (float weights)")
    exps = [q.input_exponent, q.output_exponent, *q.weight_exponents]
    if not all(_is_int(e) for e in exps):
        raise _fail(name, f"a scale is not a power of two (exponents {exps})")
    lo, hi = weight_range(q.weight_bits)
    w = np.asarray(matrix.weight)
    if not (np.isfinite(w).all() and (w == np.round(w)).all() and w.min(initial=0) >= lo and w.max(initial=0) <= hi):
        raise _fail(name, f"weights are not integers in [{lo}, {hi}]")
    if matrix.bias is not None:
        raise _fail(name, "a float bias is left")
    if q.bias is not None and (q.bias.dtype.kind != "i" or q.bias.shape != (matrix.cols,)):
        raise _fail(name, "the bias is not an integer vector")
    if len(q.weight_exponents) != -(-matrix.cols // q.group_cols):
        raise _fail(name, "one weight exponent per column group is required")
