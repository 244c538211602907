"""Power-of-two quantisation on real data: a CNN trained on scikit-learn's digits, run through the
emulator's integer mode on the held-out split, against its float accuracy.

Rows: 8-bit weights and activations on ``isaac-like`` with its 8-bit ADC (lossless for 128 rows
thanks to column flipping); 6- and 4-bit weights; and a 6-bit ADC that drops two LSBs per read,
rounded to nearest-even, floored with the bias compensation, and floored without it.

Run: ``python examples/quantize_digits.py [--epochs N] [--seed S]``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from tests.models import MODELS

TARGET = "isaac-like"
BITS8 = {"precision.weight_bits": 8, "precision.input_bits": 8}
LOSSY_ADC = {**BITS8, "precision.adc_bits": 7}
CONFIGS = {  # name -> target overrides
    "8-bit weights, 8-bit activations": BITS8,
    "6-bit weights, 8-bit activations": {**BITS8, "precision.weight_bits": 6},
    "4-bit weights, 8-bit activations": {**BITS8, "precision.weight_bits": 4},
    "8-bit, 7-bit ADC, nearest-even": LOSSY_ADC,
    "8-bit, 7-bit ADC, floor + bias compensation": {**LOSSY_ADC, "adc.rounding": "floor"},
    "8-bit, 7-bit ADC, floor, no compensation": {**LOSSY_ADC, "adc.rounding": "floor", "adc.compensate_bias": False},
}


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits scaled to [0, 1], split 80/20 (seeded, stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=data.target)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def train(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """DigitsCNN from the model zoo, trained with Adam (a few seconds on a CPU)."""
    torch.manual_seed(seed)
    model = MODELS["digits_cnn"].factory(seed=seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return model.eval()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = digits(args.seed)
    model = train(x_train, y_train, args.epochs, args.seed)
    with torch.no_grad():
        float_acc = accuracy(model(x_test), y_test)
    calibration = x_train[:256]
    rows = []
    for name, overrides in CONFIGS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", xb.XBWarning)
            compiled = xb.compile(model, (x_test[:1],), TARGET, overrides=overrides, calibration=calibration)
        acc = accuracy(xb.emulate(compiled.netlist, x_test, mode="integer"), y_test)
        lossy = sum(int((compiled.netlist.array(layer, "adc_step") > 0).any())
                    for layer in compiled.netlist.layers)
        rows.append({"config": name, "accuracy": round(acc, 2), "drop_pp": round(float_acc - acc, 2),
                     "lossy_layers": lossy, "crossbars": compiled.summary["crossbars"]})
    width = max(len(r["config"]) for r in rows)
    print(f"digits: {len(y_train)} training / {len(y_test)} held-out images; target {TARGET}, "
          f"integer-mode emulation; float accuracy {float_acc:.2f}%")
    print(f"{'configuration':<{width}}  accuracy  drop (pp)  lossy layers  crossbars")
    for r in rows:
        print(f"{r['config']:<{width}}  {r['accuracy']:7.2f}%  {r['drop_pp']:9.2f}  {r['lossy_layers']:12d}  "
              f"{r['crossbars']:9d}")
    result = {"float_accuracy": round(float_acc, 2), "test_images": len(y_test), "target": TARGET, "rows": rows,
              "eight_bit_drop_pp": rows[0]["drop_pp"], "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
