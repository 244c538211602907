"""Where quantisation goes in a pipeline when ``compile`` is given calibration data."""

from __future__ import annotations

from ..diagnostics import CompileError
from ..pipeline import Pass, parse_pipeline

QUANTIZE = "fold-pow2-scales"


def with_quantization(passes: list[Pass]) -> list[Pass]:
    """``passes`` with ``fold-pow2-scales`` right after ``lower-im2col`` unless it is already there.

    It quantises the im2col matrices the crossbars will hold, after BatchNorm folding and before the
    lowering to the crossbar program (docs/quantization.md).
    """
    names = [p.name for p in passes]
    if QUANTIZE in names:
        return passes
    if "lower-im2col" not in names:
        raise CompileError("XB603", "calibration needs a pipeline with 'lower-im2col' to insert 'fold-pow2-scales' after",
                           details=["pipeline: " + ",".join(names)])
    at = names.index("lower-im2col") + 1
    return [*passes[:at], *parse_pipeline(QUANTIZE), *passes[at:]]
