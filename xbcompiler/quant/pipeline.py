"""Where quantisation goes in a pipeline when ``compile`` is given calibration data."""

from __future__ import annotations

from ..diagnostics import CompileError
from ..pipeline import Pass, parse_pipeline

QUANTIZE = "fold-pow2-scales"
#: The periphery passes, appended after placement (their order in the pipeline text).
PERIPHERY = ("assign-adc", "calibrate-adc")


def with_quantization(passes: list[Pass]) -> list[Pass]:
    """``passes`` with ``fold-pow2-scales`` right after ``lower-im2col`` and ``assign-adc,calibrate-adc`` at the end.

    ``fold-pow2-scales`` quantises the im2col matrices the crossbars will hold, after BatchNorm folding
    and before the lowering to the crossbar program; the periphery passes decide the ADCs of the
    placed program (docs/quantization.md), before the first pass that needs them (``remap-faults``) or at the
    end. Passes already in the pipeline are not added again.
    """
    names = [p.name for p in passes]
    if QUANTIZE not in names:
        if "lower-im2col" not in names:
            raise CompileError("XB603", "calibration needs a pipeline with 'lower-im2col' to insert "
                                        "'fold-pow2-scales' after", details=["pipeline: " + ",".join(names)])
        at = names.index("lower-im2col") + 1
        passes = [*passes[:at], *parse_pipeline(QUANTIZE), *passes[at:]]
    missing = [name for name in PERIPHERY if name not in names]
    if not missing:
        return passes
    at = next((i for i, p in enumerate(passes) if "periphery" in p.needs), len(passes))
    return [*passes[:at], *parse_pipeline(",".join(missing)), *passes[at:]]
