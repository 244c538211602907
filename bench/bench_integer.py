"""Integer-mode benchmarks: emulator time / plain float torch time on ResNet-20 at batch 64.

(a) ``adc.mode = "lossless"`` (goal at most 3.0): every read fits its ADC, so every layer runs as one
    exact product; reported for ``isaac-like`` as it is (16-bit operands) and with 8-bit operands.
(b) ``isaac-like`` with 8-bit weights and inputs, ``encoding.flip_columns = false`` and
    ``precision.adc_bits = 7``, so reads really lose bits (goal at most 40, stretch 12).

Run: ``python bench/bench_integer.py [--device cuda] [--repeat N] [--pipeline NAME]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from common import emulator_over_torch, report

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.emulator import emulator_for

BITS8 = {"precision.weight_bits": 8, "precision.input_bits": 8}
CASES = {
    "a_lossless_isaac16": ({"adc.mode": "lossless"}, 3.0),
    "a_lossless_isaac8": ({**BITS8, "adc.mode": "lossless"}, 3.0),
    "b_isaac8_noflip_adc7": ({**BITS8, "encoding.flip_columns": False, "precision.adc_bits": 7}, 40.0),
}


def bench(case: str, device: str, repeat: int, pipeline: str) -> None:
    overrides, goal = CASES[case]
    model = MODELS["resnet20"].factory()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=gen)
    calibration = torch.randn(32, 3, 32, 32, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model, (x[:1],), "isaac-like", pipeline, overrides=overrides, calibration=calibration)
    model, x = model.to(device), x.to(device)
    emulator = emulator_for(compiled.netlist, "integer", torch.device(device))
    ratio, t_emu, t_torch = emulator_over_torch(emulator, model, x, device, repeat)
    lossy = sum(int((compiled.netlist.array(layer, "adc_step") > 0).any())
                for layer in compiled.netlist.layers)
    report(f"integer_over_torch_resnet20_b64_{case}_{device}", ratio=ratio, goal=goal, emulator_s=t_emu,
           torch_s=t_torch, lossy_layers=lossy, layers=len(compiled.netlist.layers), pipeline=pipeline,
           threads=torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pipeline", default="fully-folded")
    parser.add_argument("--case", action="append", choices=list(CASES), help="run only these cases")
    args = parser.parse_args()
    for case in args.case or CASES:
        bench(case, args.device, args.repeat, args.pipeline)


if __name__ == "__main__":
    main()
